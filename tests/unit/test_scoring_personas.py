"""Personas: each rule and its reason on hand-made members, priority, and agreement with planted personas."""

from __future__ import annotations

import numpy as np
import pytest
from eval.personas import evaluate
from eval.simdata import simulated_history

from loyalty_cdp.core.predictions.history import HistoryBuilder
from loyalty_cdp.core.predictions.personas import PersonaConfig, assign_personas, persona_signals
from loyalty_cdp.core.predictions.scoring import MemberScores
from loyalty_cdp.errors import InvalidInput

DAY_MS = 86_400_000
START = 1_767_225_600_000


def scores_for(members: int, **columns: list[float]) -> MemberScores:
    base = {"p_alive": 0.9, "p_alive_bgnbd": 0.9, "p_alive_pareto_nbd": 0.9, "lapse_risk": 0.2,
            "expected_purchases": 1.0, "expected_spend": 20.0, "clv": 100.0, "orders": 5.0,
            "days_since_last_purchase": 10.0, "days_since_first_purchase": 300.0, "usual_interval_days": 20.0,
            "lapse_window_days": 40.0}
    arrays = {name: np.array(columns.get(name, [value] * members), dtype=np.float64) for name, value in base.items()}
    return MemberScores(member_codes=np.arange(members), **arrays)


def test_each_rule_with_its_reason_and_the_priority() -> None:
    builder = HistoryBuilder()
    lines = {
        "fan": [{"product_id": f"c{i % 2}", "category": "Coffee", "brand": "Northroast"} for i in range(5)]
        + [{"product_id": "t1", "category": "Tea", "brand": "Leafy"}],
        "saver": [{"product_id": f"p{i}", "category": f"K{i}", "brand": f"B{i}", "discount": 1.5 if i < 3 else 0}
                  for i in range(4)],
        "plain": [{"product_id": f"q{i}", "category": "Coffee", "brand": f"B{i}"} for i in range(4)],
    }
    for member, products in lines.items():
        builder.add_order(member, START, {"products": products})
    history = builder.build()
    signals = persona_signals(history, START + DAY_MS)
    assert signals.top_category.tolist() == ["Coffee", "K0", "Coffee"]
    assert signals.top_brand_share[0] == 1.0 and signals.promotion_share[1] == 0.75
    scores = scores_for(3, lapse_risk=[0.2, 0.85, 0.2], days_since_first_purchase=[300.0, 300.0, 30.0],
                        clv=[100.0, 50.0, 900.0], days_since_last_purchase=[10.0, 94.0, 30.0])
    (fan, saver, plain) = assign_personas(signals, scores, PersonaConfig(high_value_quantile=0.6))
    assert fan == ("brand_enthusiast", [{"persona": "brand_enthusiast",
                                         "reason": "100% of your Coffee items are Northroast"}])
    assert saver[0] == "at_risk" and [m["persona"] for m in saver[1]] == ["at_risk", "price_sensitive"]
    assert saver[1][0]["reason"] == "lapse risk 0.85: no purchase for 94 days, usually every 20"
    assert saver[1][1]["reason"] == "75% of your items were bought on promotion"
    assert plain[0] == "new" and [m["persona"] for m in plain[1]] == ["new", "high_value"]
    assert plain[1][1]["reason"] == "expected 12-month value 900.00, in the top 40% of members"
    with pytest.raises(InvalidInput):
        PersonaConfig(brand_share=1.0)


def test_assigned_personas_agree_with_the_planted_ones_far_above_chance() -> None:
    result = evaluate(simulated_history(members=400, days=240, seed=8))
    assert result.accuracy > 0.4  # the largest planted persona is about 27% of members
    assert result.precision["high_value"] > 0.6 and result.precision["price_sensitive"] > 0.5
    assert result.precision["new"] > 0.9
