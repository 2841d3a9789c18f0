"""Erased members' liability: a repeated erasure counts the member once, and the totals keep no request id."""

from __future__ import annotations

from pathlib import Path

from loyalty_cdp.adapters.erased_liability import ErasedLiability, ErasedLine

DAY_MS = 86_400_000
MONDAY = 1_795_392_000_000  # 2026-11-23T00:00:00Z


def line(points: int, tier: str = "Gold") -> ErasedLine:
    return ErasedLine(currency="USD", members=1, outstanding_points=points, pending_points=0,
                      outstanding_value=points / 100, issued_points=points + 500, redeemed_points=500,
                      expired_points=0, by_tier={tier: points}, expiry_forecast={"2027-11": points})


def test_a_held_line_is_counted_once_and_forgets_its_request(tmp_path: Path) -> None:
    store = ErasedLiability(tmp_path)
    try:
        store.hold("pr_aaaaaaaaaaaaaaaa", line(700))
        store.hold("pr_aaaaaaaaaaaaaaaa", line(725))  # the erasure ran again: its line replaces the first
        assert store.held("pr_aaaaaaaaaaaaaaaa") == line(725)
        assert store.settle("pr_aaaaaaaaaaaaaaaa", MONDAY) == line(725)
        assert store.settle("pr_aaaaaaaaaaaaaaaa", MONDAY) is None  # a third run finds nothing left to count
        store.hold("pr_bbbbbbbbbbbbbbbb", line(100, "Silver"))
        store.settle("pr_bbbbbbbbbbbbbbbb", MONDAY + 3_600_000)
        store.hold("pr_cccccccccccccccc", line(50))
        store.settle("pr_cccccccccccccccc", MONDAY + DAY_MS)
        totals = store.totals()
    finally:
        store.close()
    assert [(day["day"], day["members"], day["outstanding_points"]) for day in totals["days"]] == [
        ("2026-11-23", 2, 825), ("2026-11-24", 1, 50)]
    (overall,) = totals["totals"]
    assert overall["members"] == 3 and overall["outstanding_points"] == 875
    assert overall["by_tier"] == {"Gold": 775, "Silver": 100} and overall["expiry_forecast"] == {"2027-11": 875}
    assert overall["outstanding_value"] == 8.75
    for path in tmp_path.iterdir():
        assert b"pr_" not in path.read_bytes(), path.name
