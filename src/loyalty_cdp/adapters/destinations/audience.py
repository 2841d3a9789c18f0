"""Retail-media audiences: a segment's members as SHA-256-hashed emails and phones, in full and delta CSV files.

Normalisation before hashing follows the ad networks' matching rules: emails trimmed and
lower-cased; phones in E.164 (``+14155550123``, Google Customer Match and The Trade Desk's
UID2) or, for the ``meta`` convention, E.164 without the ``+`` (Meta's "digits with country
code"). Each value is hashed with SHA-256 and written as lower-case hex, one identifier a
row, under the column names of the convention's upload template (``Email``/``Phone`` or
``email``/``phone``). Rows are sorted and unique, so an export depends only on its inputs.

Members in ``opted_out`` (opted out of sale/sharing) are never written; a member who opts
out after an earlier export shows up in the next delta's *remove* file, which is how the
networks are told to drop them. Each export writes, under ``<segment>/``:
``<stamp>-full.csv``, ``<stamp>-add.csv`` and ``<stamp>-remove.csv`` (the delta against
the previous export), ``latest.csv`` (the full list, the base of the next delta) and
``manifest.json``. Files go through an :class:`AudienceTarget`; :class:`DirectoryTarget`
writes to a local directory, and an SFTP or S3 target needs only the same two methods.
Parquet output would need pyarrow, which is not a dependency: CSV only.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import msgspec

from loyalty_cdp.core.identifiers import EMAIL, normalise_identifier, normalise_phone
from loyalty_cdp.errors import InvalidInput

Convention = Literal["google", "meta"]
COLUMNS: dict[str, tuple[str, str]] = {"google": ("Email", "Phone"), "meta": ("email", "phone")}
_SEGMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_encode_json = msgspec.json.Encoder().encode


class AudienceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``settings:`` of an ``audience`` destination."""

    directory: str
    convention: Convention = "google"
    default_region: str | None = None


class AudienceMember(msgspec.Struct, frozen=True):
    """A segment member's contact identifiers, as stored (normalised here)."""

    user_id: str
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()


class AudienceExport(msgspec.Struct, frozen=True):
    """What an export wrote: file names relative to the target, and row counts."""

    full: str
    added: str
    removed: str
    rows: int
    added_rows: int
    removed_rows: int


class AudienceTarget(Protocol):
    """Where audience files go (a directory now; SFTP or S3 by implementing the same methods)."""

    def read(self, name: str) -> bytes | None:
        """The file's content, or None when it does not exist."""
        ...

    def write(self, name: str, data: bytes) -> None:
        """Store the file whole (readers never see part of it), replacing any earlier one."""
        ...


class DirectoryTarget:
    """Audience files in a local directory, written to a temporary file and renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise InvalidInput("name", f"{name!r} leaves the audience directory")
        return path

    def read(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalised_phone(raw: str, convention: Convention, default_region: str | None = None) -> str | None:
    """A phone as the convention hashes it: E.164, without ``+`` for Meta; None when not a valid number."""
    e164 = normalise_phone(raw.strip(), default_region)
    if e164 is None:
        return None
    return e164.removeprefix("+") if convention == "meta" else e164


def audience_rows(
    members: Iterable[AudienceMember], opted_out: Collection[str], *, convention: Convention = "google",
    default_region: str | None = None,
) -> list[tuple[str, str]]:
    """Sorted unique ``(email hash, phone hash)`` rows, one identifier each, without opted-out members."""
    rows: set[tuple[str, str]] = set()
    for member in members:
        if member.user_id in opted_out:
            continue
        for raw_email in member.emails:
            email = normalise_identifier(EMAIL, raw_email)
            if email is not None:
                rows.add((sha256_hex(email), ""))
        for raw_phone in member.phones:
            phone = normalised_phone(raw_phone, convention, default_region)
            if phone is not None:
                rows.add(("", sha256_hex(phone)))
    return sorted(rows)


def _csv(header: tuple[str, str], rows: Iterable[tuple[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _read_rows(data: bytes | None, header: tuple[str, str]) -> set[tuple[str, str]]:
    if not data:
        return set()
    lines = list(csv.reader(io.StringIO(data.decode())))
    if not lines or tuple(lines[0]) != header:
        return set()  # another convention: nothing comparable, the delta adds everything
    return {(line[0], line[1]) for line in lines[1:] if len(line) == 2}


def export_audience(
    segment: str, members: Iterable[AudienceMember], opted_out: Collection[str], target: AudienceTarget,
    at_ms: int, *, convention: Convention = "google", default_region: str | None = None,
) -> AudienceExport:
    """Write the segment's full list and its delta against the previous export (see the module docs)."""
    if not _SEGMENT_NAME.fullmatch(segment):
        raise InvalidInput("segment", "must be 1-64 characters of A-Z a-z 0-9 _ . - (it names a folder)")
    if convention not in COLUMNS:
        raise InvalidInput("convention", f"must be one of {', '.join(COLUMNS)}")
    header = COLUMNS[convention]
    current = audience_rows(members, opted_out, convention=convention, default_region=default_region)
    previous = _read_rows(target.read(f"{segment}/latest.csv"), header)
    present = set(current)
    added = [row for row in current if row not in previous]
    removed = sorted(previous - present)
    stamp = datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y%m%dT%H%M%S%fZ")
    export = AudienceExport(
        full=f"{segment}/{stamp}-full.csv", added=f"{segment}/{stamp}-add.csv",
        removed=f"{segment}/{stamp}-remove.csv", rows=len(current), added_rows=len(added),
        removed_rows=len(removed),
    )
    full = _csv(header, current)
    target.write(export.full, full)
    target.write(export.added, _csv(header, added))
    target.write(export.removed, _csv(header, removed))
    target.write(f"{segment}/latest.csv", full)  # last: a failed export leaves the previous base intact
    manifest = {"segment": segment, "exported_at": at_ms, "convention": convention, **msgspec.to_builtins(export)}
    target.write(f"{segment}/manifest.json", _encode_json(manifest))
    return export


class AudienceDestination:
    """A configured audience export: where its files go and how identifiers are normalised."""

    def __init__(
        self, name: str, target: AudienceTarget, *, convention: Convention = "google",
        default_region: str | None = None,
    ) -> None:
        self.name = name
        self.target = target
        self.convention = convention
        self.default_region = default_region

    def export(
        self, segment: str, members: Iterable[AudienceMember], opted_out: Collection[str], at_ms: int
    ) -> AudienceExport:
        return export_audience(
            segment, members, opted_out, self.target, at_ms, convention=self.convention,
            default_region=self.default_region,
        )

    # -- data-subject requests ------------------------------------------------------------------

    @staticmethod
    def person_hashes(emails: Iterable[str], phones: Iterable[str], default_region: str | None = None) -> set[str]:
        """Every hash under which a person's emails and phones can appear in any convention's files."""
        hashes = set()
        for raw in emails:
            email = normalise_identifier(EMAIL, raw)
            if email is not None:
                hashes.add(sha256_hex(email))
        for raw in phones:
            for convention in COLUMNS:
                phone = normalised_phone(raw, convention, default_region)  # type: ignore[arg-type]
                if phone is not None:
                    hashes.add(sha256_hex(phone))
        return hashes

    def holds(self, segment: str, hashes: Collection[str]) -> tuple[int, int | None]:
        """How many rows of the segment's last full export are the person's, and when it was exported."""
        if not _SEGMENT_NAME.fullmatch(segment):
            return 0, None
        data = self.target.read(f"{segment}/latest.csv")
        rows = 0
        for line in csv.reader(io.StringIO(data.decode())) if data else ():
            if any(cell in hashes for cell in line):
                rows += 1
        manifest = self.target.read(f"{segment}/manifest.json")
        exported_at = msgspec.json.decode(manifest).get("exported_at") if manifest else None
        return rows, exported_at if isinstance(exported_at, int) else None

    def _segment_files(self, segment: str) -> list[str]:
        """The files of a segment's exports: all of them in a directory; elsewhere the base and the last export's."""
        if isinstance(self.target, DirectoryTarget):
            folder = self.target.root / segment
            if not folder.is_dir():
                return []
            return sorted(f"{segment}/{path.name}" for path in folder.iterdir()
                          if path.is_file() and path.suffix == ".csv")
        names = [f"{segment}/latest.csv"]
        manifest = self.target.read(f"{segment}/manifest.json")
        if manifest:
            listed = msgspec.json.decode(manifest)
            names += [listed[key] for key in ("full", "added", "removed") if isinstance(listed.get(key), str)]
        return names

    def erase(self, segments: Iterable[str], hashes: Collection[str], at_ms: int) -> int:
        """Delete the person's rows (``hashes``) from every export file of ``segments``; returns rows removed.

        Files are rewritten whole (readers never see part of one). A segment that lost rows gets
        a ``manifest.json`` saying ``"replace": true``: the list at the network must be replaced
        by the full file (Customer Match and Meta both can), since no delta names the person any
        more, and ``erased_at``.
        """
        removed = 0
        for segment in sorted(set(segments)):
            if not _SEGMENT_NAME.fullmatch(segment):
                continue
            here = 0
            for name in self._segment_files(segment):
                data = self.target.read(name)
                if not data:
                    continue
                lines = list(csv.reader(io.StringIO(data.decode())))
                kept = [line for index, line in enumerate(lines)
                        if index == 0 or not any(cell in hashes for cell in line)]
                if len(kept) != len(lines):
                    here += len(lines) - len(kept)
                    buffer = io.StringIO()
                    csv.writer(buffer, lineterminator="\n").writerows(kept)
                    self.target.write(name, buffer.getvalue().encode())
            if here:
                manifest = self.target.read(f"{segment}/manifest.json")
                listed = msgspec.json.decode(manifest) if manifest else {"segment": segment}
                for key, count in (("full", "rows"), ("added", "added_rows"), ("removed", "removed_rows")):
                    named = listed.get(key)
                    content = self.target.read(named) if isinstance(named, str) else None
                    if content is not None:
                        listed[count] = max(0, len(content.decode().splitlines()) - 1)
                listed |= {"replace": True, "erased_at": at_ms}
                self.target.write(f"{segment}/manifest.json", _encode_json(listed))
                removed += here
        return removed
