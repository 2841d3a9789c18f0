"""One scoring run over a purchase history: who is scored, the fits, the scores and their reasons (pure).

:func:`score_history` is everything ``loyalty-cdp score`` computes, without the I/O: members
who opted out of automated decision-making (``opted_out``, member ids; the job reads them from
the members' recorded consent) are left out of every fit and get no targeting scores, only a
row saying so; every other member with an order up to ``as_of_ms`` gets the BTYD scores and
lapse risk with their reasons, replenishment and cross-sell lists, personas, and the offer
propensities (``scores.propensity.<name>``, :mod:`.offer_propensity`) with the input behind each.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.core.predictions.crosssell import (
    CrossSellModel,
    fit_cross_sell,
    member_cross_sell,
    recommend_members,
)
from loyalty_cdp.core.predictions.explain import Reason, explain_scores, replenishment_reasons
from loyalty_cdp.core.predictions.history import PurchaseHistory
from loyalty_cdp.core.predictions.offer_propensity import (
    OfferPropensities,
    fit_offer_propensities,
    member_features,
    propensity_reason,
    repeat_lines,
    score_offer_propensities,
    shown_amounts,
)
from loyalty_cdp.core.predictions.personas import PersonaConfig, assign_personas, persona_signals
from loyalty_cdp.core.predictions.replenishment import member_replenishment, predict_replenishment
from loyalty_cdp.core.predictions.scoring import (
    MemberScores,
    ScoringConfig,
    ScoringModels,
    fit_scoring_models,
    score_metrics,
    score_summary,
)

# What a ``replenishment_due`` entry keeps of a replenishment entry (the product fields exist
# when replenishment is per product, ``category`` always).
DUE_FIELDS = ("product_id", "name", "category", "predicted_date", "lead_days")

OPTED_OUT_REASON: Reason = {
    "code": "admt_opt_out",
    "text": "not scored for targeting: you opted out of automated decision-making",
}


@dataclass(frozen=True, slots=True)
class ScoringRun:
    """The result of one run, one entry per member with an order up to ``as_of_ms``.

    ``lapse_risk`` and ``p_alive`` are NaN, ``scores`` empty, for members not scored for
    targeting (``targeting`` False).
    """

    as_of_ms: int
    models: ScoringModels
    cross_sell: CrossSellModel
    propensities: OfferPropensities
    lapse_settings: dict[str, float]
    product_ids: NDArray[np.str_]
    member_ids: NDArray[np.str_]
    targeting: NDArray[np.bool_]
    lapse_risk: NDArray[np.float64]
    p_alive: NDArray[np.float64]
    scores: list[dict[str, Any]]
    explanations: list[list[Reason]]

    def artefact(self) -> dict[str, Any]:
        """The run's models as one JSON-ready artefact (``models/<version>.json``)."""
        return {**self.models.to_dict(), "cross_sell": self.cross_sell.to_dict(self.product_ids),
                "propensity": self.propensities.to_dict(), "lapse": self.lapse_settings}

    def records(self) -> Iterator[tuple[str, bool, float | None, dict[str, Any], list[Reason]]]:
        """(member id, scored for targeting, lapse risk or None, scores, explanation) per member."""
        risks = [None if np.isnan(risk) else risk for risk in self.lapse_risk.tolist()]
        yield from zip(
            self.member_ids.tolist(), self.targeting.tolist(), risks, self.scores, self.explanations, strict=True
        )


def _score_dicts(scores: MemberScores) -> list[dict[str, Any]]:
    """The stored scores of each member: probabilities to 4 places, money to cents, days to 0.1."""
    columns = {
        "p_alive": np.round(scores.p_alive, 4),
        "lapse_risk": np.round(scores.lapse_risk, 4),
        "expected_purchases_90d": np.round(scores.expected_purchases, 4),
        "clv": np.round(scores.clv, 2),
        "expected_spend": np.round(scores.expected_spend, 2),
        "p_alive_bgnbd": np.round(scores.p_alive_bgnbd, 4),
        "p_alive_pareto_nbd": np.round(scores.p_alive_pareto_nbd, 4),
        "orders": scores.orders.astype(np.int64),
        "days_since_last_purchase": np.round(scores.days_since_last_purchase, 1),
        "days_since_first_purchase": np.round(scores.days_since_first_purchase, 1),
        "usual_interval_days": np.round(scores.usual_interval_days, 1),
        "lapse_window_days": np.round(scores.lapse_window_days, 1),
    }
    names = list(columns)
    rows = zip(*(column.tolist() for column in columns.values()), strict=True)
    return [dict(zip(names, values, strict=True)) for values in rows]


def _add_replenishment(history: PurchaseHistory, as_of_ms: int, config: ScoringConfig, member_codes: NDArray[np.int64],
                       score_dicts: list[dict[str, Any]], explanations: list[list[Reason]]) -> None:
    """Each scored member's replenishment pairs, the due ones also as a list and as reasons."""
    settings = config.replenishment
    entries = member_replenishment(predict_replenishment(history, as_of_ms, settings), history, settings.group)
    for row in range(len(score_dicts)):
        score_dicts[row]["replenishment"] = score_dicts[row]["replenishment_due"] = ()
    row_of = {code: row for row, code in enumerate(member_codes.tolist())}
    for code, mine in entries.items():
        row = row_of[code]
        score_dicts[row]["replenishment"] = mine
        score_dicts[row]["replenishment_due"] = [
            {key: entry[key] for key in DUE_FIELDS if key in entry} for entry in mine if entry["due"]
        ]
        explanations[row].extend(replenishment_reasons(mine))


def _add_cross_sell(history: PurchaseHistory, as_of_ms: int, config: ScoringConfig, member_codes: NDArray[np.int64],
                    score_dicts: list[dict[str, Any]]) -> CrossSellModel:
    """Fit the cross-sell model; up to ``config.cross_sell_member_limit`` scored members, put each
    member's recommendations in their scores (their cost grows with members x products)."""
    model = fit_cross_sell(history, as_of_ms, config.cross_sell)
    if member_codes.size > config.cross_sell_member_limit:
        return model
    entries = member_cross_sell(recommend_members(model, history, as_of_ms, config.cross_sell), history)
    for row, code in enumerate(member_codes.tolist()):
        score_dicts[row]["cross_sell"] = entries.get(code, ())
    return model


def _add_propensities(history: PurchaseHistory, as_of_ms: int, config: ScoringConfig, member_codes: NDArray[np.int64],
                      score_dicts: list[dict[str, Any]], explanations: list[list[Reason]],
                      seed: int) -> OfferPropensities:
    """Fit the offer propensities and put each scored member's probabilities and their reasons in."""
    repeat = repeat_lines(history)
    fitted = fit_offer_propensities(history, as_of_ms, config.propensity, seed=seed, repeat=repeat)
    for row in range(len(score_dicts)):
        score_dicts[row]["propensity"] = {}
    if not fitted.models:
        return fitted
    features = member_features(history, as_of_ms, repeat)
    scored = score_offer_propensities(fitted, features)
    row_of = np.full(history.member_ids.size, -1, dtype=np.int64)
    row_of[member_codes] = np.arange(member_codes.size)
    rows = row_of[scored.members].tolist()
    targets = [target for target in config.propensity.targets if target.name in fitted.models]
    for target in targets:
        name = target.name
        probabilities = np.round(scored.probability[name], 4)
        percents = np.rint(probabilities * 100).astype(np.int64).tolist()  # the reason's whole percent
        tops = scored.top_feature[name]
        shown = shown_amounts(tops, features.values[np.arange(tops.size), tops]).tolist()
        memo: dict[tuple[int, int, float], Reason] = {}  # one reason per (percent, input, amount shown)
        for row, probability, percent, top, amount in zip(rows, probabilities.tolist(), percents, tops.tolist(),
                                                          shown, strict=True):
            score_dicts[row]["propensity"][name] = probability
            key = (percent, top, amount)
            reason = memo.get(key)
            if reason is None:
                reason = memo[key] = propensity_reason(target, percent, top, amount)
            explanations[row].append(reason)
    return fitted


def score_history(
    history: PurchaseHistory,
    as_of_ms: int,
    config: ScoringConfig,
    *,
    opted_out: Collection[str] = frozenset(),
    seed: int = 0,
) -> ScoringRun:
    """Fit on and score the members with orders up to ``as_of_ms`` (see the module docstring)."""
    history = history.until(as_of_ms)
    has_orders = np.zeros(history.member_ids.size, dtype=bool)
    has_orders[history.order_member] = True
    targeting = ~np.isin(history.member_ids, np.array(list(opted_out), dtype=np.str_))
    scored = history.restricted_to(targeting)
    summary = scored.summary(as_of_ms, config.time_unit_days)
    models = fit_scoring_models(summary, as_of_ms, config, seed=seed)
    scores = score_summary(summary, models, config)
    run_metrics = {
        **score_metrics(scores, config.lapse_threshold),
        "opted_out": int((has_orders & ~targeting).sum()),
        "cross_sell_per_member": bool(scores.member_codes.size <= config.cross_sell_member_limit),
    }
    models = replace(models, metrics={**models.metrics, **run_metrics})

    members = np.flatnonzero(has_orders)
    row_of = np.full(history.member_ids.size, -1, dtype=np.int64)
    row_of[scores.member_codes] = np.arange(scores.member_codes.size)
    rows = row_of[members]
    score_dicts = _score_dicts(scores)
    explanations = explain_scores(scores)
    _add_replenishment(scored, as_of_ms, config, scores.member_codes, score_dicts, explanations)
    cross_sell = _add_cross_sell(scored, as_of_ms, config, scores.member_codes, score_dicts)
    propensities = _add_propensities(scored, as_of_ms, config, scores.member_codes, score_dicts, explanations, seed)
    models = replace(models, metrics={**models.metrics, "propensity": propensities.metrics,
                                      "propensity_skipped": propensities.skipped})
    personas = PersonaConfig(lapse_threshold=config.lapse_threshold)
    for row, (primary, matches) in enumerate(assign_personas(persona_signals(scored, as_of_ms), scores, personas)):
        score_dicts[row]["persona"] = primary
        score_dicts[row]["personas"] = matches
    return ScoringRun(
        as_of_ms=as_of_ms,
        models=models,
        cross_sell=cross_sell,
        propensities=propensities,
        lapse_settings=config.lapse_settings(),
        product_ids=history.product_ids,
        member_ids=history.member_ids[members],
        targeting=rows >= 0,
        lapse_risk=np.where(rows >= 0, scores.lapse_risk[rows], np.nan),
        p_alive=np.where(rows >= 0, scores.p_alive[rows], np.nan),
        scores=[score_dicts[row] if row >= 0 else {} for row in rows.tolist()],
        explanations=[explanations[row] if row >= 0 else [OPTED_OUT_REASON] for row in rows.tolist()],
    )
