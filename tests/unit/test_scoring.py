"""The scoring step: lapse risk against its definition and its invariants, the run, explanations, ADMT, alerts.

The simulated-members checks use ``eval.simdata`` (run pytest from the repository root, as
``python -m pytest`` does).
"""

from __future__ import annotations

import numpy as np
import pytest
from eval.simdata import SimulatedHistory, simulated_history
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from loyalty_cdp.core.events import normalise, parse_time
from loyalty_cdp.core.predictions import BgNbdModel, fit_bgnbd
from loyalty_cdp.core.predictions.alerts import lapse_message_id, lapse_risk_call
from loyalty_cdp.core.predictions.explain import explain_scores, lapse_reasons
from loyalty_cdp.core.predictions.history import HistoryBuilder, order_value
from loyalty_cdp.core.predictions.lapse import (
    lapse_risk,
    lapse_window_days,
    population_interval_days,
    upward_crossings,
    usual_interval_days,
)
from loyalty_cdp.core.predictions.run import OPTED_OUT_REASON, ScoringRun, score_history
from loyalty_cdp.core.predictions.scoring import (
    MemberScores,
    ScoringConfig,
    ScoringModels,
    score_summary,
)
from loyalty_cdp.errors import InvalidInput

MODEL = BgNbdModel(0.243, 4.414, 0.793, 2.426, log_likelihood=0.0, n=1.0, converged=True)
DAY_MS = 86_400_000


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    ranks = stats.rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- lapse risk -------------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "t_x", "t_obs", "window_days"), [
    (2, 30.43, 38.86, 28.0), (0, 0.0, 20.0, 60.0), (12, 10.0, 30.0, 7.0), (1, 1.0, 50.0, 365.0),
])
def test_lapse_risk_is_the_chance_of_no_purchase_in_the_window(x: int, t_x: float, t_obs: float,
                                                                 window_days: float) -> None:
    # Alive at T, BG/NBD's rate is Gamma(r + x, alpha + T) and dropout only follows a purchase.
    window = window_days / 7
    quiet_if_alive, _ = integrate.quad(
        lambda rate: np.exp(-rate * window) * stats.gamma.pdf(rate, MODEL.r + x, scale=1 / (MODEL.alpha + t_obs)),
        0, np.inf, epsabs=0, epsrel=1e-10, limit=200,
    )
    alive = float(MODEL.probability_alive(x, t_x, t_obs))
    expected = 1 - alive + alive * quiet_if_alive
    computed = lapse_risk(MODEL, np.array([x], float), np.array([t_x]), np.array([t_obs]), np.array([window_days]))
    assert float(computed[0]) == pytest.approx(expected, rel=1e-8)


members = st.tuples(st.integers(0, 60), st.floats(0.0, 1.0), st.floats(0.1, 200.0), st.floats(0.0, 100.0))


@settings(max_examples=80, deadline=None, derandomize=True)
@given(member=members, window=st.floats(1.0, 400.0), longer=st.floats(1.0, 3.0))
def test_lapse_risk_is_a_probability_that_grows_with_silence_and_falls_with_the_window(
    member: tuple[int, float, float, float], window: float, longer: float
) -> None:
    x, share, age, extra = member
    t_x = 0.0 if x == 0 else share * age
    frequency, recency = np.array([x, x], float), np.array([t_x, t_x])
    risk = lapse_risk(MODEL, frequency, recency, np.array([age, age + extra]), np.array([window, window]))
    assert ((risk >= 0) & (risk <= 1)).all()
    assert risk[1] >= risk[0] - 1e-12  # longer since the last purchase: no lower risk
    wider = lapse_risk(MODEL, frequency[:1], recency[:1], np.array([age]), np.array([window * longer]))
    assert wider[0] <= risk[0] + 1e-12  # a longer window: no higher risk


def test_one_time_buyers_are_not_all_alike() -> None:
    # BG/NBD has every one-time buyer alive; their lapse risk still rises with time since the purchase.
    ages = np.array([1.0, 5.0, 20.0, 60.0])
    risk = lapse_risk(MODEL, np.zeros(4), np.zeros(4), ages, np.full(4, 60.0))
    assert (MODEL.probability_alive(np.zeros(4), np.zeros(4), ages) == 1).all()
    assert (np.diff(risk) > 0).all()


def test_usual_interval_shrinks_toward_the_population() -> None:
    frequency = np.array([0.0, 1.0, 3.0, 50.0])
    recency_days = np.array([0.0, 10.0, 30.0, 500.0])
    usual = usual_interval_days(frequency, recency_days, population_days=40.0)
    # (t_x + 40) / (x + 1): the population's 40 days, then halfway, then mostly the member's own 10.
    np.testing.assert_allclose(usual, [40.0, 25.0, 17.5, 540 / 51])
    assert population_interval_days(frequency, recency_days) == 10.0
    assert population_interval_days(np.zeros(3), np.zeros(3)) == 30.0
    np.testing.assert_allclose(lapse_window_days(np.array([1.0, 30.0, 400.0])), [7.0, 60.0, 365.0])
    with pytest.raises(InvalidInput):
        usual_interval_days(frequency, recency_days, population_days=0.0)


def test_upward_crossings() -> None:
    previous = np.array([0.2, 0.69, 0.7, 0.9, np.nan, np.nan, 0.8])
    current = np.array([0.1, 0.7, 0.95, 0.95, 0.75, 0.2, 0.3])
    assert upward_crossings(previous, current, 0.7).tolist() == [False, True, False, False, True, False, False]
    with pytest.raises(InvalidInput):
        upward_crossings(previous, current, 1.0)


# --- the run on simulated members ------------------------------------------------------------


@pytest.fixture(scope="module")
def simulation() -> SimulatedHistory:
    return simulated_history(members=400, days=240, seed=21)


@pytest.fixture(scope="module")
def run(simulation: SimulatedHistory) -> ScoringRun:
    return score_history(simulation.history, simulation.end_ms - 1, ScoringConfig())


def test_lapse_risk_finds_the_members_who_dropped_out(simulation: SimulatedHistory, run: ScoringRun) -> None:
    as_of = simulation.end_ms - 1
    dropout = {m.user_id: parse_time(m.dropout_at, "dropout_at") for m in simulation.truth.members}
    gone = np.array([dropout[member] <= as_of for member in run.member_ids.tolist()])
    assert 0.2 < gone.mean() < 0.8
    assert auc(run.lapse_risk, gone) > 0.9
    assert auc(-run.p_alive, gone) > 0.9
    flagged = run.lapse_risk >= 0.7
    assert gone[flagged].mean() > 0.85  # most alerts are about members who really left
    assert run.targeting.all() and len(run.scores) == run.member_ids.size
    assert run.models.version.startswith("btyd-1-2026-08-28-")
    assert run.models.metrics["scored"] == run.member_ids.size


def test_scores_carry_replenishment_and_cross_sell_lists(simulation: SimulatedHistory, run: ScoringRun) -> None:
    due = [entry for scores in run.scores for entry in scores["replenishment_due"]]
    assert due and all(set(entry) == {"product_id", "name", "category", "predicted_date", "lead_days"} for entry in due)
    assert all(entry["lead_days"] <= 3 for entry in due)
    with_due = next(i for i, scores in enumerate(run.scores) if scores["replenishment_due"])
    assert any(reason["code"] == "replenishment_due" for reason in run.explanations[with_due])
    assert all(len(scores["cross_sell"]) == 10 for scores in run.scores)
    assert run.artefact()["cross_sell"]["neighbours"]
    assert run.models.metrics["cross_sell_per_member"] is True
    as_of = simulation.start_ms + 150 * DAY_MS
    limited = score_history(simulation.history, as_of, ScoringConfig(cross_sell_member_limit=100))
    assert all("cross_sell" not in scores for scores in limited.scores)
    assert limited.models.metrics["cross_sell_per_member"] is False


def test_a_run_only_reads_orders_up_to_its_date(simulation: SimulatedHistory) -> None:
    as_of = simulation.start_ms + 150 * DAY_MS
    full = score_history(simulation.history, as_of, ScoringConfig())
    cut = score_history(simulation.history.until(as_of), as_of, ScoringConfig())
    assert full.models.version == cut.models.version
    assert full.scores == cut.scores


def test_opted_out_members_are_neither_fitted_nor_scored_for_targeting(simulation: SimulatedHistory) -> None:
    as_of = simulation.start_ms + 150 * DAY_MS
    opted_out = set(simulation.history.member_ids[:40].tolist())
    run = score_history(simulation.history, as_of, ScoringConfig(), opted_out=opted_out)
    for member_id, targeting, risk, scores, explanation in run.records():
        if member_id in opted_out:
            assert (targeting, risk, scores, explanation) == (False, None, {}, [OPTED_OUT_REASON])
        else:
            assert targeting and 0 <= risk <= 1 and {"p_alive", "lapse_risk", "expected_purchases_90d",
                                                      "clv"} <= scores.keys()
    assert run.models.metrics["opted_out"] == 40
    others = np.ones(simulation.history.member_ids.size, dtype=bool)
    others[:40] = False
    summary = simulation.history.until(as_of).restricted_to(others).summary(as_of, 7.0)
    assert fit_bgnbd(summary.frequency, summary.recency, summary.T) == run.models.bgnbd  # theirs did not count


def test_models_round_trip_and_bad_artefacts_are_refused(simulation: SimulatedHistory, run: ScoringRun) -> None:
    config = ScoringConfig()
    summary = simulation.history.summary(simulation.end_ms - 1, config.time_unit_days)
    models = run.models
    again = ScoringModels.from_dict(models.to_dict())
    assert again == models
    np.testing.assert_array_equal(score_summary(summary, again, config).clv, score_summary(summary, models, config).clv)
    with pytest.raises(InvalidInput):
        ScoringModels.from_dict({**models.to_dict(), "bgnbd": {"model": "bgnbd"}})


def test_a_history_without_repeat_buyers_cannot_be_fitted() -> None:
    builder = HistoryBuilder()
    for index in range(20):
        builder.add_order(f"m{index}", 1_780_000_000_000 + index * DAY_MS, {"total": 10})
    with pytest.raises(InvalidInput) as caught:
        score_history(builder.build(), 1_790_000_000_000, ScoringConfig())
    assert caught.value.field == "purchases"


@pytest.mark.parametrize(("field", "overrides"), [
    ("clv_months", {"clv_months": 0}), ("monthly_discount_rate", {"monthly_discount_rate": 1.0}),
    ("lapse_threshold", {"lapse_threshold": 0.0}), ("fit_sample", {"fit_sample": 10}),
    ("pareto_fit_sample", {"pareto_fit_sample": 99}),
])
def test_bad_configuration_is_refused(field: str, overrides: dict[str, float]) -> None:
    with pytest.raises(InvalidInput) as caught:
        ScoringConfig(**overrides)  # type: ignore[arg-type]
    assert caught.value.field == field


# --- history, explanations, alerts ------------------------------------------------------------


def test_orders_are_valued_like_the_signals_and_repeated_order_ids_count_once() -> None:
    assert order_value({"total": "12.5", "revenue": 99}) == 12.5
    assert order_value({"revenue": 20}) == 20
    assert order_value({"products": [{"price": 3, "quantity": 2}, {"price": 1.5}, "junk"]}) == 7.5
    assert order_value({"total": -4}) == 0
    builder = HistoryBuilder()
    assert builder.add_order("m1", 1000, {"order_id": "o1", "total": 5, "products": [
        {"product_id": "p1", "category": "Coffee", "quantity": 2}, {"sku": "S-2"}, {"name": "no id"}]})
    assert not builder.add_order("m1", 2000, {"order_id": "o1", "total": 5})
    assert builder.add_order("m2", 2000, {"order_id": "o1", "total": 7})
    history = builder.build()
    assert history.member_ids.tolist() == ["m1", "m2"]
    assert history.order_total.tolist() == [5.0, 7.0]
    assert history.product_ids.tolist() == ["p1", "S-2"]
    assert history.product_category.tolist() == ["Coffee", ""]
    assert history.line_quantity.tolist() == [2.0, 1.0]
    assert history.until(1500).order_total.tolist() == [5.0]


def scores_of(days_since: float, usual: float, orders: int, p_alive: float) -> MemberScores:
    def column(value: float) -> np.ndarray:
        return np.array([value], dtype=np.float64)

    return MemberScores(
        member_codes=np.array([0]), p_alive=column(p_alive), p_alive_bgnbd=column(p_alive),
        p_alive_pareto_nbd=column(p_alive), lapse_risk=column(0.8), expected_purchases=column(0.42),
        expected_spend=column(31.5), clv=column(40.0), orders=column(orders),
        days_since_last_purchase=column(days_since), days_since_first_purchase=column(days_since + 200),
        usual_interval_days=column(usual), lapse_window_days=column(2 * usual),
    )


def test_explanations_quote_the_inputs_in_plain_language() -> None:
    (overdue,) = explain_scores(scores_of(94.0, 31.2, 7, 0.234))
    assert [reason["code"] for reason in overdue] == ["overdue", "activity", "frequency", "value"]
    assert overdue[0]["text"] == "no purchase for 94 days, 3.0x your usual 31-day interval"
    assert overdue[1]["text"] == "23% estimated chance of still being an active customer"
    assert overdue[2]["text"] == "7 purchases in the last 294 days"
    assert overdue[3]["text"] == "about 0.4 purchases expected in the next 90 days, about 31.50 each"
    assert lapse_reasons(overdue) == [reason["text"] for reason in overdue[:3]]
    (regular,) = explain_scores(scores_of(12.0, 31.0, 7, 0.9))
    assert regular[0]["text"] == "last purchase 12 days ago, within your usual 31-day interval"
    (single,) = explain_scores(scores_of(40.0, 25.0, 1, 1.0))
    assert [reason["code"] for reason in single] == ["single_purchase", "activity", "value"]
    assert single[0]["text"] == "one purchase so far, 40 days ago; members usually buy again within 25 days"


def test_the_lapse_alert_is_idempotent_per_member_and_day() -> None:
    as_of = parse_time("2026-04-01T23:59:59.999Z", "as_of")
    first = lapse_message_id("M000000001", as_of)
    assert first == lapse_message_id("M000000001", as_of - 3_600_000)  # same day
    assert first != lapse_message_id("M000000001", as_of + 1)  # next day
    assert first != lapse_message_id("M000000002", as_of)
    call = lapse_risk_call(member_id="M000000001", user_id="M000000001", anonymous_id=None, lapse_risk=0.81234,
                           p_alive=0.2, threshold=0.7, model_version="btyd-1-2026-04-01-0a1b2c3d", as_of_ms=as_of,
                           reasons=["no purchase for 94 days, 3.0x your usual 31-day interval"])
    event = normalise(call, call_type="track", received_at=as_of + 5000, default_message_id="unused")
    assert (event.message_id, event.event, event.user_id, event.channel) == (
        first, "Lapse Risk Detected", "M000000001", "predictions")
    assert event.timestamp == as_of
    assert call["properties"]["lapse_risk"] == 0.8123
