"""Replenishment: intervals, shrinkage toward the product, the band and due reminders; back-test against the
naive last interval on simulated members with planted cycles."""

from __future__ import annotations

import numpy as np
import pytest
from eval.replenishment import backtest
from eval.simdata import simulated_history
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.core.predictions.history import HistoryBuilder, PurchaseHistory
from loyalty_cdp.core.predictions.replenishment import (
    ReplenishmentConfig,
    last_interval_baseline,
    member_replenishment,
    pair_history,
    predict_replenishment,
)
from loyalty_cdp.errors import InvalidInput

DAY_MS = 86_400_000
START = 1_767_225_600_000  # 2026-01-01


def history_of(purchases: list[tuple[str, str, float]], category: str = "Coffee") -> PurchaseHistory:
    """(member, product, day) triples; each purchase is its own order at noon of that day."""
    builder = HistoryBuilder()
    for member, product, day in purchases:
        builder.add_order(member, START + int(day * DAY_MS) + 12 * 3_600_000, {
            "total": 10, "products": [{"product_id": product, "name": f"{product} 1kg", "category": category}]})
    return builder.build()


def test_a_regular_rebuyer_is_predicted_one_interval_on_and_reminded_ahead() -> None:
    history = history_of([("m1", "beans", day) for day in (0, 10, 20, 30, 40)] + [("m1", "beans", 40.1)])
    as_of = START + 47 * DAY_MS + 12 * 3_600_000
    predictions = predict_replenishment(history, as_of, ReplenishmentConfig(lead_days=3))
    assert predictions.purchases.tolist() == [5]  # the second purchase on day 40 is the same purchase
    assert predictions.interval_days.tolist() == [10.0]
    assert predictions.predicted_ms.tolist() == [START + 50 * DAY_MS + 12 * 3_600_000]
    assert predictions.lead_days.tolist() == [3.0] and predictions.due.tolist() == [True]
    not_yet = predict_replenishment(history, as_of - DAY_MS, ReplenishmentConfig(lead_days=3))
    assert not_yet.due.tolist() == [False]
    (entry,) = member_replenishment(predictions, history)[0]
    assert entry == {
        "product_id": "beans", "name": "beans 1kg", "category": "Coffee", "interval_days": 10.0, "purchases": 5,
        "last_purchase": "2026-02-10", "predicted_date": "2026-02-20", "earliest": "2026-02-19",
        "latest": "2026-02-21", "lead_days": 3.0, "due": True,
    }


def test_few_purchases_lean_on_the_product_many_on_the_member() -> None:
    rng = np.random.default_rng(4)
    purchases: list[tuple[str, str, float]] = []
    for index in range(40):  # the product's regular rebuyers: cycles around 30 days
        cycle, day = rng.uniform(26, 34), rng.uniform(0, 10)
        for _ in range(8):
            purchases.append((f"r{index}", "food", day))
            day += cycle + rng.normal(0, 2)
    purchases += [("few", "food", 0), ("few", "food", 20), ("few", "food", 40)]
    purchases += [("many", "food", 20.0 * k) for k in range(12)]
    history = history_of(purchases)
    as_of = START + 250 * DAY_MS
    predictions = predict_replenishment(history, as_of)
    interval = dict(zip(history.member_ids[predictions.member].tolist(), predictions.interval_days.tolist(),
                        strict=True))
    product_typical = float(np.median([v for k, v in interval.items() if k.startswith("r")]))
    assert 20 < interval["few"] < 30 and interval["few"] > interval["many"] >= 20
    assert (interval["few"] - 20) / (product_typical - 20) > (interval["many"] - 20) / (product_typical - 20)


def test_irregular_rebuying_is_not_replenishment() -> None:
    history = history_of([("m1", "chips", day) for day in (0, 2, 30, 31, 70, 140)])
    assert predict_replenishment(history, START + 150 * DAY_MS).member.size == 0
    pairs = pair_history(history, START + 150 * DAY_MS)
    assert pairs.cv[0] > 0.5 and pairs.previous_interval_days.tolist() == [70.0]


def test_per_category_groups_products() -> None:
    history = history_of([("m1", product, day) for product, day in (("a", 0), ("b", 14), ("a", 28), ("c", 42))])
    by_product = predict_replenishment(history, START + 50 * DAY_MS)
    by_category = predict_replenishment(history, START + 50 * DAY_MS, ReplenishmentConfig(group="category"))
    assert by_product.member.size == 0
    assert by_category.interval_days.tolist() == [14.0]
    (entry,) = member_replenishment(by_category, history, "category")[0]
    assert entry["category"] == "Coffee" and "product_id" not in entry


def test_long_lapsed_pairs_are_left_out_of_the_member_entries() -> None:
    history = history_of([("m1", "beans", day) for day in (0, 10, 20, 30)])
    predictions = predict_replenishment(history, START + 60 * DAY_MS)
    assert predictions.member.size == 1 and not predictions.due[0]
    assert member_replenishment(predictions, history) == {}


purchase_days = st.lists(st.floats(0, 200, allow_nan=False), min_size=0, max_size=12)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(days=st.lists(purchase_days, min_size=1, max_size=6), as_of_day=st.floats(0, 260), lead=st.floats(0, 10))
def test_predictions_are_consistent(days: list[list[float]], as_of_day: float, lead: float) -> None:
    history = history_of([(f"m{i}", "p", day) for i, member_days in enumerate(days) for day in member_days])
    as_of = START + int(as_of_day * DAY_MS)
    config = ReplenishmentConfig(lead_days=lead, min_item_pairs=2)
    for predictions in (predict_replenishment(history, as_of, config), last_interval_baseline(history, as_of, config)):
        assert (predictions.last_ms <= as_of).all()
        assert (predictions.earliest_ms <= predictions.predicted_ms).all()
        assert (predictions.predicted_ms < predictions.latest_ms).all()
        assert (predictions.earliest_ms >= predictions.last_ms).all()
        np.testing.assert_array_equal(
            predictions.due, (predictions.lead_days <= lead) & (as_of <= predictions.latest_ms))


def test_bad_configuration_is_refused() -> None:
    for overrides in ({"lead_days": -1.0}, {"min_purchases": 1}, {"max_cv": 0.0}, {"group": "brand"}):
        with pytest.raises(InvalidInput):
            ReplenishmentConfig(**overrides)  # type: ignore[arg-type]


def test_reminders_land_on_time_more_often_than_with_the_last_interval() -> None:
    sim = simulated_history(members=250, days=200, seed=9)
    config = ReplenishmentConfig(lead_days=3)
    shrunk = backtest(sim, predict_replenishment, config, from_day=110)
    naive = backtest(sim, last_interval_baseline, config, from_day=110)
    assert shrunk.planted_reminders > 300 and naive.planted_reminders > 300
    assert shrunk.planted_share > naive.planted_share + 0.04
    assert shrunk.share > naive.share + 0.04
    assert shrunk.planted_share > 0.75
