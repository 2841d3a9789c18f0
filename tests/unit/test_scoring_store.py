"""The score store: point reads, whole-run replacement seen atomically by other readers, erasure, artefacts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loyalty_cdp.adapters.scorestore import RunRecord, ScoreRow, ScoreStore
from loyalty_cdp.errors import InvalidInput, NotFound

AS_OF = 1_775_087_999_999  # 2026-04-01T23:59:59.999Z
SCORED_AT = 1_775_088_060_000


def row(member_id: str, risk: float) -> ScoreRow:
    return ScoreRow(member_id, True, risk, {"p_alive": 1 - risk, "lapse_risk": risk, "clv": 12.5},
                    [{"code": "overdue", "text": "no purchase for 94 days, 3.0x your usual 31-day interval"}])


def run(version: str, members: int) -> RunRecord:
    return RunRecord(version, AS_OF, SCORED_AT, members, {"mean_p_alive": 0.5})


def test_get_answers_the_latest_scores_flat_with_their_provenance(tmp_path: Path) -> None:
    store = ScoreStore(tmp_path)
    assert store.get("m1") is None and store.last_run() is None
    opted_out = ScoreRow("m2", False, None, {}, [{"code": "admt_opt_out", "text": "not scored"}])
    assert store.replace_all([row("m1", 0.8), opted_out], run("btyd-1-2026-04-01-aaaa0000", 2)) == 2
    assert store.get("m1") == {
        "p_alive": pytest.approx(0.2), "lapse_risk": 0.8, "clv": 12.5,
        "model_version": "btyd-1-2026-04-01-aaaa0000", "as_of": "2026-04-01T23:59:59.999Z",
        "scored_at": "2026-04-02T00:01:00.000Z", "scored_for_targeting": True,
        "explanation": [{"code": "overdue", "text": "no purchase for 94 days, 3.0x your usual 31-day interval"}],
    }
    assert store.get("m2") == {
        "model_version": "btyd-1-2026-04-01-aaaa0000", "as_of": "2026-04-01T23:59:59.999Z",
        "scored_at": "2026-04-02T00:01:00.000Z", "scored_for_targeting": False,
        "explanation": [{"code": "admt_opt_out", "text": "not scored"}],
    }
    assert store.lapse_risks() == {"m1": 0.8}
    assert store.last_run() == run("btyd-1-2026-04-01-aaaa0000", 2)


def test_a_run_replaces_everything_and_readers_see_one_run_or_the_other(tmp_path: Path) -> None:
    writer, reader = ScoreStore(tmp_path), ScoreStore(tmp_path)
    writer.replace_all([row(f"m{i}", 0.1) for i in range(100)], run("v1", 100))
    seen_during_write: list[dict[str, object] | None] = []

    def second_run() -> Iterator[ScoreRow]:
        for i in range(50, 150):
            if i == 120:  # the writer holds its transaction open: the other connection sees run 1
                seen_during_write.extend([reader.get("m10"), reader.get("m120")])
            yield row(f"m{i}", 0.9)

    writer.replace_all(second_run(), run("v2", 100))
    old_member, new_member = seen_during_write
    assert old_member is not None and old_member["model_version"] == "v1"
    assert new_member is None
    assert reader.get("m10") is None  # not in the new run
    assert reader.get("m120")["model_version"] == "v2"  # type: ignore[index]
    assert reader.count() == 100


def test_erasure_leaves_no_byte_of_the_rows(tmp_path: Path) -> None:
    store = ScoreStore(tmp_path)
    erased = ScoreRow("m-erased-1", True, 0.2, {"note": "erased-member-secret"}, [])
    others = [row(f"m{i}", 0.3) for i in range(2, 3000)]  # enough pages that freed ones are not all reused
    store.replace_all([erased, *others], run("v1", 3000))
    store.replace_all([erased, *others[:100]], run("v2", 101))  # run 1's freed pages held it too
    assert store.delete_members(["m-erased-1", "nobody"]) == 1
    assert store.get("m-erased-1") is None and store.get("m2") is not None
    files = [path for path in tmp_path.iterdir() if path.name.startswith("scores.db")]
    assert not any(b"erased-member-secret" in path.read_bytes() for path in files)


def test_model_artefacts_are_versioned_files(tmp_path: Path) -> None:
    store = ScoreStore(tmp_path)
    artefact = {"version": "btyd-1-2026-04-01-aaaa0000", "bgnbd": {"r": 0.24}, "metrics": {"scored": 3}}
    path = store.save_model("btyd-1-2026-04-01-aaaa0000", artefact)
    assert path == tmp_path / "models" / "btyd-1-2026-04-01-aaaa0000.json"
    assert store.load_model("btyd-1-2026-04-01-aaaa0000") == artefact
    assert [p.name for p in (tmp_path / "models").iterdir()] == [path.name]  # no temporary left
    with pytest.raises(NotFound):
        store.load_model("btyd-1-1999-01-01-00000000")
    for bad in ("../escape", "", ".hidden", "a/b"):
        with pytest.raises(InvalidInput):
            store.save_model(bad, artefact)
