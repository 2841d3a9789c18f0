"""Retail-media audience files in a real directory: hashing conventions, full and delta files, opted-out members."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.adapters.destinations.audience import (
    AudienceMember,
    DirectoryTarget,
    audience_rows,
    export_audience,
    normalised_phone,
)
from loyalty_cdp.errors import InvalidInput

DAY_1 = 1_767_225_600_000
DAY_2 = DAY_1 + 86_400_000


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


def test_identifiers_are_normalised_then_hashed_as_the_networks_expect() -> None:
    # Google's documented example: sha256("test@example.com").
    assert sha("test@example.com") == "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
    member = AudienceMember("m-1", emails=("  Test@Example.COM ",), phones=("(415) 555-0123",))
    assert audience_rows([member], set(), default_region="US") == sorted(
        [(sha("test@example.com"), ""), ("", sha("+14155550123"))]
    )
    meta = audience_rows([member], set(), convention="meta", default_region="US")
    assert ("", sha("14155550123")) in meta  # Meta: digits with the country code, no "+"
    assert normalised_phone("+44 20 7946 0958", "google") == "+442079460958"
    assert normalised_phone("not a phone", "google") is None
    junk = AudienceMember("m-2", emails=("null", "no-at-sign"), phones=("123",))
    assert audience_rows([junk], set()) == []


def test_full_and_delta_files_never_include_opted_out_members(tmp_path: Path) -> None:
    target = DirectoryTarget(tmp_path)
    ada = AudienceMember("ada", emails=("ada@example.org",), phones=("+14155550123",))
    bob = AudienceMember("bob", emails=("bob@example.org",))
    eve = AudienceMember("eve", emails=("eve@example.org",), phones=("+14155550188",))
    first = export_audience("gold-lapsing", [ada, bob, eve], {"eve"}, target, DAY_1)
    assert (first.rows, first.added_rows, first.removed_rows) == (3, 3, 0)
    full = read_csv(tmp_path / first.full)
    assert full[0] == ["Email", "Phone"]
    assert sorted(map(tuple, full[1:])) == sorted(
        [(sha("ada@example.org"), ""), ("", sha("+14155550123")), (sha("bob@example.org"), "")]
    )
    assert sha("eve@example.org") not in (tmp_path / first.full).read_text()

    # Next day: Ada opts out of sale/sharing, Bob leaves the segment, Dan joins.
    dan = AudienceMember("dan", emails=("dan@example.org",))
    second = export_audience("gold-lapsing", [ada, dan, eve], {"eve", "ada"}, target, DAY_2)
    assert read_csv(tmp_path / second.added)[1:] == [[sha("dan@example.org"), ""]]
    removed = sorted(map(tuple, read_csv(tmp_path / second.removed)[1:]))
    assert removed == sorted([(sha("ada@example.org"), ""), ("", sha("+14155550123")), (sha("bob@example.org"), "")])
    everything = "".join(path.read_text() for path in (tmp_path / "gold-lapsing").glob("*.csv"))
    assert sha("eve@example.org") not in everything  # never written, in no file
    current = read_csv(tmp_path / "gold-lapsing" / "latest.csv")
    assert current == read_csv(tmp_path / second.full) == [["Email", "Phone"], [sha("dan@example.org"), ""]]
    manifest = json.loads((tmp_path / "gold-lapsing" / "manifest.json").read_text())
    assert manifest["exported_at"] == DAY_2 and manifest["rows"] == 1 and manifest["removed_rows"] == 3
    assert not list(tmp_path.rglob("*.part"))  # temporary files renamed into place


def test_export_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        export_audience("../escape", [], set(), DirectoryTarget(tmp_path), DAY_1)
    with pytest.raises(InvalidInput):
        DirectoryTarget(tmp_path).write("../outside.csv", b"")


members = st.lists(
    st.builds(
        AudienceMember,
        user_id=st.sampled_from(["a", "b", "c", "d", "e", "f"]),
        emails=st.lists(st.sampled_from(["x@a.org", "Y@b.org", "z@c.org ", "w@d.org"]), max_size=2).map(tuple),
        phones=st.lists(st.sampled_from(["+14155550123", "+14155550124", "+442079460958"]), max_size=2).map(tuple),
    ),
    max_size=8,
)


@settings(max_examples=25, deadline=None)
@given(before=members, after=members, opted_out=st.sets(st.sampled_from(["a", "b", "c", "d", "e", "f"])))
def test_deltas_replay_to_the_full_list_and_opt_outs_never_appear(before, after, opted_out, tmp_path_factory) -> None:
    target = DirectoryTarget(tmp_path_factory.mktemp("audience"))
    export_audience("s", before, opted_out, target, DAY_1)
    previous = {tuple(row) for row in read_csv(target.root / "s" / "latest.csv")[1:]}
    second = export_audience("s", after, opted_out, target, DAY_2)
    added = {tuple(row) for row in read_csv(target.root / second.added)[1:]}
    removed = {tuple(row) for row in read_csv(target.root / second.removed)[1:]}
    full = {tuple(row) for row in read_csv(target.root / second.full)[1:]}
    assert (previous - removed) | added == full
    assert not added & removed
    excluded = {row for m in after if m.user_id in opted_out for row in audience_rows([m], set())}
    kept = {row for m in after if m.user_id not in opted_out for row in audience_rows([m], set())}
    assert not (excluded - kept) & full  # an opted-out member's identifiers appear only if someone else has them
