"""Incremental lapse refresh: the scalar formulas equal the vectorised ones, a refresh after a purchase equals a
rescoring from scratch with the same parameters, and LapseRefresher updates the store and raises the alert once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eval.simdata import simulated_history
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.adapters.scorestore import RunRecord, ScoreRow, ScoreStore, StoredEntry
from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.predictions.alerts import lapse_message_id
from loyalty_cdp.core.predictions.bgnbd import BgNbdModel
from loyalty_cdp.core.predictions.explain import explain_scores
from loyalty_cdp.core.predictions.history import HistoryBuilder
from loyalty_cdp.core.predictions.pareto_nbd import ParetoNbdModel
from loyalty_cdp.core.predictions.refresh import LapseModel, refresh_lapse
from loyalty_cdp.core.predictions.run import _score_dicts, score_history
from loyalty_cdp.core.predictions.scoring import ScoringConfig, ScoringModels, score_summary
from loyalty_cdp.core.profile import Activity, Profile, Purchases
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.services.scoring import LapseRefresher, purchase_summary

DAY_MS = 86_400_000
START = 1_767_225_600_000  # 2026-01-01
CONFIG = ScoringConfig()
MODELS = ScoringModels(
    version="btyd-1-test", as_of_ms=START,
    bgnbd=BgNbdModel(0.243, 4.414, 0.793, 2.426, 0.0, 1.0, True, 7.0),
    pareto_nbd=ParetoNbdModel(0.553, 10.58, 0.606, 11.67, 0.0, 1.0, True, 7.0),
    gamma_gamma=None, population_interval_days=21.0, mean_spend=35.0,
)
LAPSE = LapseModel.from_artefact({**MODELS.to_dict(), "lapse": CONFIG.lapse_settings()})
FIELDS = ("p_alive", "p_alive_bgnbd", "p_alive_pareto_nbd", "lapse_risk", "expected_purchases_90d", "orders",
          "days_since_last_purchase", "days_since_first_purchase", "usual_interval_days", "lapse_window_days")


def scored(days: list[int], as_of_ms: int) -> tuple[dict[str, object], list[dict[str, str]]]:
    """One member with orders at noon on ``days`` (after START), scored from scratch with MODELS."""
    builder = HistoryBuilder()
    for n, day in enumerate(days):
        builder.add_order("m", START + day * DAY_MS + DAY_MS // 2, {"order_id": f"o{n}", "total": 20.0 + n})
    summary = builder.build().summary(as_of_ms, CONFIG.time_unit_days)
    scores = score_summary(summary, MODELS, CONFIG)
    return _score_dicts(scores)[0], explain_scores(scores)[0]


@settings(max_examples=200, deadline=None)
@given(x=st.integers(0, 300), t_x=st.floats(0, 400), gap=st.floats(0, 400))
def test_the_scalar_formulas_are_the_vectorised_ones(x: int, t_x: float, gap: float) -> None:
    t_x = t_x if x else 0.0
    t_obs = t_x + gap
    args = (np.array([float(x)]), np.array([t_x]), np.array([t_obs]))
    assert LAPSE.p_alive_bgnbd(x, t_x, t_obs) == pytest.approx(MODELS.bgnbd.probability_alive(*args)[0], rel=1e-9,
                                                               abs=1e-12)
    assert LAPSE.p_alive_pareto_nbd(x, t_x, t_obs) == pytest.approx(
        MODELS.pareto_nbd.probability_alive(*args)[0], rel=1e-9, abs=1e-12)
    assert LAPSE.expected_purchases(90 / 7, x, t_x, t_obs, LAPSE.p_alive_bgnbd(x, t_x, t_obs)) == pytest.approx(
        MODELS.bgnbd.conditional_expected_purchases(90 / 7, *args)[0], rel=1e-9, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 60), min_size=0, max_size=12),
    wait=st.integers(0, 120),
    new_purchases=st.lists(st.integers(0, 90), min_size=1, max_size=3),
    after=st.integers(0, 60),
)
def test_a_refresh_after_purchases_equals_rescoring_from_scratch(gaps: list[int], wait: int,
                                                                   new_purchases: list[int], after: int) -> None:
    days = [int(day) for day in np.cumsum([0, *gaps])]
    run_day = days[-1] + wait
    run_as_of = START + run_day * DAY_MS + DAY_MS - 1  # the end of the run's day, as `--as-of DATE`
    entry, explanation = scored(days, run_as_of)
    new_days = sorted(run_day + 1 + gap for gap in new_purchases)
    as_of = START + (new_days[-1] + after) * DAY_MS + DAY_MS // 2 + 1
    stored = StoredEntry("m", True, float(entry["lapse_risk"]), MODELS.version, run_as_of, run_as_of, entry,
                         explanation)
    recent = [START + day * DAY_MS + DAY_MS // 2 for day in [*days, *new_days]]
    summary = purchase_summary(stored, recent, as_of, LAPSE.time_unit_days)
    assert summary is not None
    refreshed, reasons = refresh_lapse(entry, explanation, LAPSE, *summary, as_of)
    expected, expected_reasons = scored([*days, *new_days], as_of)
    for name in FIELDS:
        assert refreshed[name] == pytest.approx(expected[name], abs=1.01e-4), name
    # Spend per purchase is the run's until the next run; with it, CLV is the rescoring's.
    assert refreshed["clv"] == pytest.approx(
        float(expected["clv"]) * float(entry["expected_spend"]) / float(expected["expected_spend"]), rel=1e-3, abs=0.02)
    assert [r["code"] for r in reasons] == [r["code"] for r in expected_reasons]
    assert refreshed["refreshed_at"] == format_time(as_of)


def test_a_refresh_rejects_an_impossible_summary() -> None:
    entry, explanation = scored([0, 10], START + 20 * DAY_MS)
    with pytest.raises(InvalidInput):
        refresh_lapse(entry, explanation, LAPSE, 1.0, 3.0, 2.0, START)
    with pytest.raises(InvalidInput):
        refresh_lapse(entry, explanation, LAPSE, 0.0, 1.0, 2.0, START)


@pytest.fixture
def scored_store(tmp_path: Path) -> tuple[ScoreStore, list[str]]:
    sim = simulated_history(300, 200, seed=11)
    as_of = sim.end_ms - 30 * DAY_MS
    run = score_history(sim.history, as_of, CONFIG)
    store = ScoreStore(tmp_path)
    store.save_model(run.models.version, run.artefact())
    store.replace_all((ScoreRow(*fields) for fields in run.records()),
                      RunRecord(run.models.version, as_of, as_of, int(run.member_ids.size), run.models.metrics))
    return store, [str(member) for member in run.member_ids.tolist()]


def profile_of(member_id: str, recent: list[int]) -> Profile:
    return Profile(member_id=member_id, user_id=member_id, activity=Activity(purchases=Purchases(recent=recent)))


def test_the_refresher_updates_the_row_and_raises_the_alert_on_an_upward_crossing(
        scored_store: tuple[ScoreStore, list[str]]) -> None:
    store, members = scored_store
    entry = next(e for e in map(store.entry, members) if e is not None and e.lapse_risk is not None
                 and 0.2 < e.lapse_risk < 0.6)
    later = entry.as_of + 200 * DAY_MS  # no purchase for 200 more days: the risk rises
    model = LapseModel.from_artefact(store.load_model(entry.model_version))
    summary = purchase_summary(entry, [], later, model.time_unit_days)
    assert summary is not None
    risk = refresh_lapse(entry.scores, entry.explanation, model, *summary, later)[0]["lapse_risk"]
    assert risk > entry.lapse_risk
    threshold = (entry.lapse_risk + risk) / 2
    refresher = LapseRefresher(store, threshold)

    calls = refresher.refresh(entry.member_id, profile_of(entry.member_id, []), later)
    assert len(calls) == 1
    call = calls[0]
    assert call["event"] == "Lapse Risk Detected" and call["userId"] == entry.member_id
    assert call["messageId"] == lapse_message_id(entry.member_id, later)
    assert call["properties"]["lapse_risk"] == risk and call["properties"]["threshold"] == threshold
    stored = store.get(entry.member_id)
    assert stored is not None and stored["lapse_risk"] == risk and stored["refreshed_at"] == format_time(later)
    assert stored["as_of"] == format_time(later) and store.lapse_risks()[entry.member_id] == risk
    # Already above the threshold: no second alert; a purchase brings the risk down again.
    assert refresher.refresh(entry.member_id, profile_of(entry.member_id, []), later + DAY_MS) == []
    assert refresher.refresh(entry.member_id, profile_of(entry.member_id, [later + 2 * DAY_MS]),
                             later + 2 * DAY_MS + 1) == []
    after_purchase = store.get(entry.member_id)
    assert after_purchase is not None and after_purchase["lapse_risk"] < risk
    assert after_purchase["orders"] == entry.scores["orders"] + 1
    assert after_purchase["days_since_last_purchase"] == 0.0


def test_the_refresher_leaves_a_row_a_run_replaced_and_unknown_members_alone(
        scored_store: tuple[ScoreStore, list[str]]) -> None:
    store, members = scored_store
    refresher = LapseRefresher(store)
    assert refresher.refresh("nobody", profile_of("nobody", []), START) == []
    entry = next(e for e in map(store.entry, members) if e is not None and e.lapse_risk is not None)
    moved = StoredEntry(entry.member_id, True, entry.lapse_risk, entry.model_version, entry.as_of - 1,
                        entry.scored_at, entry.scores, entry.explanation)
    assert not store.update_member(moved, 0.5, entry.scores, entry.explanation, entry.as_of + 1)
    assert store.entry(entry.member_id) == entry
    # An earlier as-of than the row's is not a refresh.
    assert refresher.refresh(entry.member_id, profile_of(entry.member_id, []), entry.as_of - DAY_MS) == []
    assert store.entry(entry.member_id) == entry
    store.delete_members([entry.member_id])
    assert refresher.refresh(entry.member_id, profile_of(entry.member_id, []), entry.as_of + DAY_MS) == []
    assert store.entry(entry.member_id) is None
    store.close()
