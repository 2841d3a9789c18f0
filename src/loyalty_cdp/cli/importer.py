"""``loyalty-cdp import``: load JSON Lines of Segment calls or POS CSV into the log or a server.

Every call is validated with :func:`loyalty_cdp.core.events.normalise` before it goes
anywhere. Rejected lines are listed on stderr (the first few) and in ``FILE.errors.jsonl``
(all of them) with line number, field and reason; the valid ones are imported anyway and
the exit code is 2. A JSON line without a ``messageId`` gets ``import-<sha256 of the
line>``, a CSV order ``pos-<hash of store and order id>``, so re-importing changes nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import typer

from loyalty_cdp.adapters.pos_csv import LineError, ParsedOrder, read_orders
from loyalty_cdp.cli.simulate import PROGRESS_EVERY, progress_bar
from loyalty_cdp.core.events import Event, normalise
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.settings import Settings

if TYPE_CHECKING:
    from loyalty_cdp.adapters.eventlog.base import EventLog
    from loyalty_cdp.simulator.streaming import BatchSender

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
APPEND_CHUNK = 5000
ERRORS_SHOWN = 20

Record = ParsedOrder  # one input unit: a JSON line, or the lines of one CSV order


def message_id_for_line(line: bytes) -> str:
    return "import-" + hashlib.sha256(line).hexdigest()


def jsonl_records(path: Path) -> Iterator[Record]:
    """One record per non-blank line; a missing ``messageId`` is derived from the line."""
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                call = msgspec.json.decode(line)
            except msgspec.DecodeError as exc:
                yield Record([number], errors=[LineError(number, "", f"invalid JSON: {exc}")])
                continue
            if not isinstance(call, dict):
                yield Record([number], errors=[LineError(number, "", "must be a JSON object")])
                continue
            if not call.get("messageId"):
                call["messageId"] = message_id_for_line(line)
            yield Record([number], call=call)


def csv_records(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
        yield from read_orders(stream)


class Sink(Protocol):
    def write(self, batch: list[tuple[Event, dict[str, Any]]]) -> None: ...
    def finish(self) -> None:
        """Deliver whatever is still buffered."""
    def summary(self) -> str: ...
    def rejected(self) -> list[str]:
        """Events the destination refused although they passed local validation."""
    def close(self) -> None:
        """Release resources (without delivering: after an error nothing more is sent)."""


class EventLogSink:
    """Appends straight to the data directory's event log (dedup by messageId happens there)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.appended = self.duplicates = self.conflicts = 0

    def write(self, batch: list[tuple[Event, dict[str, Any]]]) -> None:
        if batch:
            result = self.log.append([event for event, _ in batch])
            self.appended += result.appended
            self.duplicates += result.duplicates
            self.conflicts += result.conflicts

    def finish(self) -> None:
        """Nothing to do: every write is already durable."""

    def summary(self) -> str:
        text = f"appended {self.appended:,}, duplicates {self.duplicates:,}"
        if self.conflicts:
            text += (f" (of which {self.conflicts:,} reused a messageId with different "
                     "content: the first version is kept)")
        return text

    def rejected(self) -> list[str]:
        return []

    def close(self) -> None:
        self.log.close()


class TargetSink:
    """Posts the calls to a server's ``/v1/batch`` (the server deduplicates)."""

    def __init__(self, sender: BatchSender) -> None:
        self.sender = sender

    def write(self, batch: list[tuple[Event, dict[str, Any]]]) -> None:
        for _, call in batch:
            self.sender.add(call)

    def finish(self) -> None:
        self.sender.flush()

    def summary(self) -> str:
        text = f"sent {self.sender.sent:,} to {self.sender.url}"
        if self.sender.rejected:
            text += f", {len(self.sender.rejected):,} rejected by the server"
        return text

    def rejected(self) -> list[str]:
        return [
            f"messageId {error.get('messageId')}: {error.get('field')}: {error.get('reason')}"
            for error in self.sender.rejected
        ]

    def close(self) -> None:
        self.sender.close()


class ErrorReport:
    """Collects rejected lines; shows the first few on stderr, writes all beside the input."""

    def __init__(self, source: Path) -> None:
        self.path = source.with_name(source.name + ".errors.jsonl")
        self.errors: list[LineError] = []
        self.lines: set[int] = set()

    def add(self, errors: list[LineError]) -> None:
        for error in errors:
            if len(self.errors) < ERRORS_SHOWN:
                field = f"{error.field}: " if error.field else ""
                typer.echo(f"line {error.line}: {field}{error.reason}", err=True)
            self.errors.append(error)
            self.lines.add(error.line)

    def finish(self) -> str | None:
        """Write (or, after a clean run, remove a stale) error file; the note to print."""
        if not self.errors:
            self.path.unlink(missing_ok=True)
            return None
        encoder = msgspec.json.Encoder()
        try:
            self.path.write_bytes(b"".join(
                encoder.encode({"line": e.line, "field": e.field, "reason": e.reason}) + b"\n"
                for e in sorted(self.errors, key=lambda error: error.line)
            ))
        except OSError as exc:
            return f"(could not write {self.path}: {exc.strerror})"
        if len(self.errors) > ERRORS_SHOWN:
            return f"{ERRORS_SHOWN} of {len(self.errors):,} errors shown; all are in {self.path}"
        return f"errors written to {self.path}"


def _format(path: Path, given: str | None) -> str:
    if given is not None:
        if given not in ("jsonl", "csv"):
            raise InvalidInput("format", f"must be jsonl or csv, got {given!r}")
        return given
    inferred = FORMATS.get(path.suffix.lower())
    if inferred is None:
        raise InvalidInput("format", f"cannot tell the format of {path.name} from its extension; "
                                     "pass --format jsonl or --format csv")
    return inferred


def _count_lines(path: Path) -> int:
    with path.open("rb") as stream:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: stream.read(1 << 20), b""))


def _open_sink(data_dir: Path | None, target: str | None, write_key: str | None) -> Sink:
    """The destination; its modules are imported here, so the other one is never loaded."""
    if target is not None:
        if data_dir is not None:
            raise InvalidInput("target", "give either --data-dir or --target, not both")
        if not write_key:
            raise InvalidInput("write-key", "--target needs --write-key KEY")
        from loyalty_cdp.simulator.streaming import BatchSender

        return TargetSink(BatchSender(target, write_key))
    from loyalty_cdp.bootstrap import open_event_log

    return EventLogSink(open_event_log(Settings.from_env(data_dir=data_dir)))


def _deliver(
    records: Iterator[Record], sink: Sink, report: ErrorReport, progress: Callable[[int], None]
) -> int:
    """Validate every record and hand the valid ones to ``sink``; returns the lines read."""
    lines = 0
    batch: list[tuple[Event, dict[str, Any]]] = []
    for record in records:
        lines += len(record.lines)
        if lines % PROGRESS_EVERY < len(record.lines):
            progress(lines)
        if record.call is None:
            report.add(record.errors)
            continue
        try:
            event = normalise(record.call, call_type=None, received_at=int(time.time() * 1000),
                              default_message_id=record.call["messageId"])
        except InvalidInput as exc:
            report.add([LineError(number, exc.field, exc.reason) for number in record.lines])
            continue
        batch.append((event, record.call))
        if len(batch) >= APPEND_CHUNK:
            sink.write(batch)
            batch = []
    sink.write(batch)
    sink.finish()
    return lines


def import_file(
    file: Path = typer.Argument(..., help="JSON Lines of Segment calls, or a POS CSV."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Data directory (default ./data or $LOYALTY_CDP_DATA_DIR)."
    ),
    target: str | None = typer.Option(
        None, "--target", help="Post to this server's /v1/batch, e.g. http://127.0.0.1:8080."
    ),
    write_key: str | None = typer.Option(
        None, "--write-key", envvar="LOYALTY_CDP_WRITE_KEY", help="Key with the ingest scope."
    ),
    file_format: str | None = typer.Option(
        None, "--format", help="jsonl or csv (default: from the file extension)."
    ),
) -> None:
    """Import a file of events; importing it again changes nothing.

    The exit code is 2 if any line was rejected (the valid ones are imported anyway).
    """
    if not file.is_file():
        raise InvalidInput("FILE", f"{file} does not exist or is not a file")
    kind = _format(file, file_format)
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise InvalidInput("FILE", f"cannot read {file}: {exc.strerror}") from None

    records = jsonl_records(file) if kind == "jsonl" else csv_records(file)
    report = ErrorReport(file)
    sink = _open_sink(data_dir, target, write_key)
    try:
        with progress_bar(None, f"importing {file.name}") as progress:
            task = progress.task_ids[0]
            if not progress.disable:
                progress.update(task, total=_count_lines(file))
            lines = _deliver(records, sink, report, lambda n: progress.update(task, completed=n))
    finally:
        sink.close()
    note = report.finish()
    rejected = len(report.lines)
    typer.echo(f"{file}: {lines:,} lines read, {sink.summary()}, {rejected:,} lines rejected")
    if note:
        typer.echo(note, err=True)
    refused = sink.rejected()
    for message in refused[:ERRORS_SHOWN]:
        typer.echo(f"server: {message}", err=True)
    if rejected or refused:
        typer.echo(f"error: {rejected + len(refused):,} events were rejected; the valid ones "
                   "were imported", err=True)
        raise typer.Exit(2)
