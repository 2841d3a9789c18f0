"""Holdout groups (share, stability, independence) and uplift measurement with intervals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.core.decisioning import GroupOutcomes, assign_arm, attribute, measure_uplift, period_label
from loyalty_cdp.core.decisioning.holdout import holdout_fraction
from loyalty_cdp.errors import InvalidInput

MEMBERS = [f"member-{n}" for n in range(20_000)]
JULY = 1_783_296_000_000  # 2026-07-06T00:00:00Z


def test_period_labels() -> None:
    assert [period_label(p, JULY) for p in ("forever", "year", "quarter", "month", "week")] == [
        "forever", "2026", "2026-Q3", "2026-07", "2026-W28"]


@pytest.mark.parametrize("share", [0.05, 0.1, 0.25])
def test_the_holdout_share_is_within_tolerance_and_stable(share: float) -> None:
    arms = [assign_arm(member, "win-back", "2026-Q3", share) for member in MEMBERS]
    held = sum(arm == "holdout" for arm in arms) / len(MEMBERS)
    tolerance = 4 * (share * (1 - share) / len(MEMBERS)) ** 0.5  # four standard errors
    assert abs(held - share) < tolerance
    assert arms == [assign_arm(member, "win-back", "2026-Q3", share) for member in MEMBERS]


def test_holdouts_of_other_campaigns_and_periods_are_independent() -> None:
    def held(campaign: str, period: str) -> set[str]:
        return {m for m in MEMBERS if assign_arm(m, campaign, period, 0.2) == "holdout"}

    base = held("win-back", "2026-Q3")
    for other in (held("tier-up", "2026-Q3"), held("win-back", "2026-Q4")):
        overlap = len(base & other) / len(MEMBERS)
        assert abs(overlap - 0.04) < 0.006  # independent draws: 0.2 x 0.2
    assert base == held("win-back", "2026-Q3")
    assert 0 <= holdout_fraction("m", "c", "p") < 1
    with pytest.raises(InvalidInput):
        assign_arm("m", "c", "p", 1.0)


def _simulate(rng: np.random.Generator, size: int, conversion: float, spend: float, active: float) -> GroupOutcomes:
    converted = rng.random(size) < conversion
    revenue = np.where(converted, rng.gamma(2.0, spend / 2.0, size), 0.0)
    return GroupOutcomes(converted, revenue, rng.random(size) < active)


def test_the_interval_covers_a_planted_effect() -> None:
    """Control: 10% convert, $40 per buyer, 30% active; treated: 13%, same spend, 36% active (+20%)."""
    rng = np.random.default_rng(7)
    true = {"conversion_rate": 0.03, "revenue_per_member": 0.03 * 40.0, "active_member_rate": 0.06}
    covered = {name: 0 for name in true}
    significant_active = 0
    runs = 200
    for _ in range(runs):
        report = measure_uplift(_simulate(rng, 4000, 0.13, 40.0, 0.36), _simulate(rng, 4000, 0.10, 40.0, 0.30))
        for name, effect in true.items():
            metric = getattr(report, name)
            covered[name] += metric.low <= effect <= metric.high
        significant_active += report.active_member_rate.significant
    for name in true:
        assert covered[name] / runs >= 0.9, name  # nominal 95%
    assert significant_active / runs > 0.95  # a 20% relative lift on 4,000 members a side is seen
    report = measure_uplift(_simulate(rng, 4000, 0.13, 40.0, 0.36), _simulate(rng, 4000, 0.10, 40.0, 0.30))
    assert report.active_member_rate.relative == pytest.approx(0.2, abs=0.12)


def test_an_effect_of_zero_is_reported_not_significant() -> None:
    rng = np.random.default_rng(11)
    false_alarms = 0
    runs = 200
    for _ in range(runs):
        report = measure_uplift(_simulate(rng, 3000, 0.1, 40.0, 0.3), _simulate(rng, 3000, 0.1, 40.0, 0.3))
        metrics = (report.conversion_rate, report.revenue_per_member, report.active_member_rate)
        for metric in metrics:
            assert metric.significant == (not metric.low <= 0 <= metric.high)
        false_alarms += report.conversion_rate.significant
    assert false_alarms / runs <= 0.1  # nominal 5%
    one = measure_uplift(_simulate(np.random.default_rng(3), 3000, 0.1, 40.0, 0.3),
                         _simulate(np.random.default_rng(4), 3000, 0.1, 40.0, 0.3))
    assert not one.conversion_rate.significant and not one.revenue_per_member.significant
    assert not one.active_member_rate.significant


def test_degenerate_groups() -> None:
    nobody = GroupOutcomes(np.zeros(50, bool), np.zeros(50), np.zeros(50, bool))
    report = measure_uplift(nobody, nobody)
    assert report.revenue_per_member.low == report.revenue_per_member.high == 0.0
    assert not report.conversion_rate.significant and report.conversion_rate.relative is None
    with pytest.raises(InvalidInput, match="at least two members"):
        measure_uplift(GroupOutcomes(np.zeros(1, bool), np.zeros(1), np.zeros(1, bool)), nobody)
    with pytest.raises(InvalidInput, match="one entry per member"):
        measure_uplift(GroupOutcomes(np.zeros(3, bool), np.zeros(2), np.zeros(3, bool)), nobody)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 100)), max_size=12),
       st.lists(st.tuples(st.integers(0, 5), st.integers(0, 100), st.integers(1, 50)), max_size=40),
       st.integers(1, 60))
def test_attribution_counts_the_orders_in_the_window_after_each_exposure(
        exposures: list[tuple[int, int]], orders: list[tuple[int, int, int]], window: int) -> None:
    counts, revenue = attribute([e[0] for e in exposures], [e[1] for e in exposures], [o[0] for o in orders],
                                [o[1] for o in orders], [o[2] for o in orders], window)
    for index, (who, at) in enumerate(exposures):
        inside = [o for o in orders if o[0] == who and at < o[1] <= at + window]
        assert counts[index] == len(inside)
        assert revenue[index] == pytest.approx(sum(o[2] for o in inside))
