"""The batch scoring step: fit BG/NBD, Pareto/NBD and Gamma-Gamma, then score every member (pure).

:func:`fit_scoring_models` fits the three models on (a seeded sample of) the members' purchase
summaries and names the result with a deterministic version; :func:`score_summary` computes
every member's scores in vectorised form. Which member is scored at all (automated
decision-making opt-outs) is decided by the caller, before the summary is built.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.core.predictions.bgnbd import BgNbdModel, fit_bgnbd
from loyalty_cdp.core.predictions.clv import customer_lifetime_value
from loyalty_cdp.core.predictions.crosssell import CrossSellConfig
from loyalty_cdp.core.predictions.gamma_gamma import GammaGammaModel, fit_gamma_gamma
from loyalty_cdp.core.predictions.lapse import (
    DEFAULT_THRESHOLD,
    MAX_WINDOW_DAYS,
    MIN_WINDOW_DAYS,
    PRIOR_PURCHASES,
    WINDOW_INTERVALS,
    lapse_risk,
    lapse_window_days,
    population_interval_days,
    usual_interval_days,
)
from loyalty_cdp.core.predictions.offer_propensity import OfferPropensityConfig
from loyalty_cdp.core.predictions.pareto_nbd import ParetoNbdModel, fit_pareto_nbd
from loyalty_cdp.core.predictions.replenishment import ReplenishmentConfig
from loyalty_cdp.core.predictions.summary import PurchaseSummary
from loyalty_cdp.errors import InvalidInput

FloatArray = NDArray[np.float64]

# Names the scoring method (models, definitions, explanations); bump it when they change.
METHOD_VERSION = "btyd-1"
DAYS_PER_MONTH = 365.25 / 12
# Expected purchases are over this horizon (the profile's ``expected_purchases_90d``).
HORIZON_DAYS = 90.0
# Gamma-Gamma is fitted only with at least this many repeat buyers with a positive spend.
MIN_SPEND_MEMBERS = 10


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """What the scoring job computes. Defaults: 12-month CLV at 1% a month, threshold 0.7."""

    clv_months: int = 12
    monthly_discount_rate: float = 0.01
    lapse_threshold: float = DEFAULT_THRESHOLD
    lapse_window_intervals: float = WINDOW_INTERVALS
    interval_prior_purchases: float = PRIOR_PURCHASES
    fit_sample: int = 100_000
    pareto_fit_sample: int = 10_000
    time_unit_days: float = 7.0
    replenishment: ReplenishmentConfig = field(default_factory=ReplenishmentConfig)
    cross_sell: CrossSellConfig = field(default_factory=CrossSellConfig)
    propensity: OfferPropensityConfig = field(default_factory=OfferPropensityConfig)
    # Above this many scored members only the cross-sell model is stored, not per-member lists.
    cross_sell_member_limit: int = 200_000

    def __post_init__(self) -> None:
        if isinstance(self.clv_months, bool) or not isinstance(self.clv_months, int) or self.clv_months < 1:
            raise InvalidInput("clv_months", "must be a whole number of months, at least 1")
        if not (np.isfinite(self.monthly_discount_rate) and 0 <= self.monthly_discount_rate < 1):
            raise InvalidInput("monthly_discount_rate", "must be in [0, 1), e.g. 0.01 for 1% a month")
        if not 0 < self.lapse_threshold < 1:
            raise InvalidInput("lapse_threshold", "must be between 0 and 1")
        if not self.lapse_window_intervals > 0:
            raise InvalidInput("lapse_window_intervals", "must be positive")
        if not self.interval_prior_purchases > 0:
            raise InvalidInput("interval_prior_purchases", "must be positive")
        for name in ("fit_sample", "pareto_fit_sample"):
            if getattr(self, name) < 100:
                raise InvalidInput(name, "must be at least 100 members")
        if not self.time_unit_days > 0:
            raise InvalidInput("time_unit_days", "must be positive")

    def lapse_settings(self) -> dict[str, float]:
        """What the incremental refresh needs besides the fitted models (stored in the artefact)."""
        return {
            "time_unit_days": self.time_unit_days,
            "lapse_threshold": self.lapse_threshold,
            "lapse_window_intervals": self.lapse_window_intervals,
            "interval_prior_purchases": self.interval_prior_purchases,
            "min_window_days": MIN_WINDOW_DAYS,
            "max_window_days": MAX_WINDOW_DAYS,
            "horizon_days": HORIZON_DAYS,
            "clv_months": self.clv_months,
            "monthly_discount_rate": self.monthly_discount_rate,
        }


@dataclass(frozen=True, slots=True)
class ScoringModels:
    """The fitted models of one run, their version and their fit metrics."""

    version: str
    as_of_ms: int
    bgnbd: BgNbdModel
    pareto_nbd: ParetoNbdModel
    gamma_gamma: GammaGammaModel | None
    population_interval_days: float
    mean_spend: float
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The versioned artefact, JSON-ready."""
        return {
            "version": self.version,
            "method": METHOD_VERSION,
            "as_of": _iso(self.as_of_ms),
            "as_of_ms": self.as_of_ms,
            "bgnbd": self.bgnbd.to_dict(),
            "pareto_nbd": self.pareto_nbd.to_dict(),
            "gamma_gamma": None if self.gamma_gamma is None else self.gamma_gamma.to_dict(),
            "population_interval_days": self.population_interval_days,
            "mean_spend": self.mean_spend,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoringModels:
        try:
            spend_model = data["gamma_gamma"]
            return cls(
                version=str(data["version"]),
                as_of_ms=int(data["as_of_ms"]),
                bgnbd=BgNbdModel.from_dict(data["bgnbd"]),
                pareto_nbd=ParetoNbdModel.from_dict(data["pareto_nbd"]),
                gamma_gamma=None if spend_model is None else GammaGammaModel.from_dict(spend_model),
                population_interval_days=float(data["population_interval_days"]),
                mean_spend=float(data["mean_spend"]),
                metrics=dict(data.get("metrics") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput("model", f"not a scoring model artefact: {exc}") from exc


@dataclass(frozen=True, slots=True)
class MemberScores:
    """One entry per member of the summary, in its order (``member_codes`` = its member ids)."""

    member_codes: NDArray[np.int64]
    p_alive: FloatArray
    p_alive_bgnbd: FloatArray
    p_alive_pareto_nbd: FloatArray
    lapse_risk: FloatArray
    expected_purchases: FloatArray
    expected_spend: FloatArray
    clv: FloatArray
    orders: FloatArray
    days_since_last_purchase: FloatArray
    days_since_first_purchase: FloatArray
    usual_interval_days: FloatArray
    lapse_window_days: FloatArray


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _sample(size: int, limit: int, seed: int) -> NDArray[np.int64]:
    if size <= limit:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).choice(size, limit, replace=False))


def _fit_spend(frequency: FloatArray, monetary: FloatArray) -> GammaGammaModel | None:
    """Gamma-Gamma on repeat buyers with a positive mean spend; None when too few or q <= 1."""
    usable = (frequency > 0) & (monetary > 0)
    if usable.sum() < MIN_SPEND_MEMBERS:
        return None
    model = fit_gamma_gamma(frequency[usable], monetary[usable])
    return model if model.q > 1 else None


def _version(as_of_ms: int, parameters: dict[str, Any]) -> str:
    text = json.dumps(parameters, sort_keys=True, separators=(",", ":"))
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    return f"{METHOD_VERSION}-{_iso(as_of_ms)[:10]}-{digest}"


def _fit_metrics(model: BgNbdModel | ParetoNbdModel | GammaGammaModel) -> dict[str, Any]:
    return {"log_likelihood": model.log_likelihood, "n": model.n, "converged": model.converged}


def fit_scoring_models(
    summary: PurchaseSummary, as_of_ms: int, config: ScoringConfig, *, seed: int = 0
) -> ScoringModels:
    """Fit BG/NBD and Gamma-Gamma on up to ``config.fit_sample`` members, Pareto/NBD on up to
    ``config.pareto_fit_sample`` of those (seeded samples).

    Pareto/NBD only supplies P(alive) of one-time buyers, and its fit costs far more per member
    (tens of seconds per 100k on data where its dropout heterogeneity runs off to the
    homogeneous limit, s and beta growing together), hence the smaller sample.
    """
    if summary.time_unit_days != config.time_unit_days:
        raise InvalidInput("time_unit_days", "the summary and the configuration use different units")
    size = summary.frequency.size
    if size == 0 or not (summary.frequency > 0).any():
        raise InvalidInput("purchases", f"{size} members with orders and none bought twice: nothing to fit yet")
    rows = _sample(size, config.fit_sample, seed)
    x, t_x, t_obs = summary.frequency[rows], summary.recency[rows], summary.T[rows]
    unit = config.time_unit_days
    bgnbd = fit_bgnbd(x, t_x, t_obs, time_unit_days=unit)
    pareto_rows = _sample(rows.size, config.pareto_fit_sample, seed + 1)
    pareto = fit_pareto_nbd(x[pareto_rows], t_x[pareto_rows], t_obs[pareto_rows], time_unit_days=unit)
    spend_model = _fit_spend(x, summary.monetary_value[rows])
    paying = summary.monetary_value > 0
    mean_spend = float(summary.monetary_value[paying].mean()) if paying.any() else 0.0
    interval = population_interval_days(summary.frequency, summary.recency * unit)
    parameters = {
        "bgnbd": bgnbd.to_dict(),
        "pareto_nbd": pareto.to_dict(),
        "gamma_gamma": None if spend_model is None else spend_model.to_dict(),
        "population_interval_days": interval,
        "mean_spend": mean_spend,
    }
    metrics = {
        "members": size,
        "fit_members": int(rows.size),
        "pareto_nbd_fit_members": int(pareto_rows.size),
        "repeat_buyers": int((summary.frequency > 0).sum()),
        "bgnbd": _fit_metrics(bgnbd),
        "pareto_nbd": _fit_metrics(pareto),
        "gamma_gamma": None if spend_model is None else _fit_metrics(spend_model),
    }
    return ScoringModels(
        version=_version(as_of_ms, parameters),
        as_of_ms=as_of_ms,
        bgnbd=bgnbd,
        pareto_nbd=pareto,
        gamma_gamma=spend_model,
        population_interval_days=interval,
        mean_spend=mean_spend,
        metrics=metrics,
    )


def _expected_spend(models: ScoringModels, frequency: FloatArray, monetary: FloatArray) -> FloatArray:
    """Gamma-Gamma's shrunk spend; without it, the member's own mean or the population's."""
    has_spend = (frequency > 0) & (monetary > 0)
    if models.gamma_gamma is None:
        return np.where(has_spend, monetary, models.mean_spend)
    return models.gamma_gamma.conditional_expected_spend(np.where(has_spend, frequency, 0), monetary)


def score_summary(summary: PurchaseSummary, models: ScoringModels, config: ScoringConfig) -> MemberScores:
    """Every member's scores (``docs/models.md``, "The scoring job"), vectorised."""
    x, t_x, t_obs = summary.frequency, summary.recency, summary.T
    unit = config.time_unit_days
    bgnbd = models.bgnbd
    alive_bgnbd = bgnbd.probability_alive(x, t_x, t_obs)
    alive_pareto = models.pareto_nbd.probability_alive(x, t_x, t_obs)
    usual = usual_interval_days(x, t_x * unit, models.population_interval_days, config.interval_prior_purchases)
    window = lapse_window_days(usual, config.lapse_window_intervals, MIN_WINDOW_DAYS, MAX_WINDOW_DAYS)
    spend = _expected_spend(models, x, summary.monetary_value)
    clv = customer_lifetime_value(
        bgnbd, x, t_x, t_obs, spend,
        periods=config.clv_months,
        period_length=DAYS_PER_MONTH / unit,
        discount_rate=config.monthly_discount_rate,
    )
    return MemberScores(
        member_codes=np.asarray(summary.member_ids, dtype=np.int64),
        p_alive=np.where(x > 0, alive_bgnbd, alive_pareto),
        p_alive_bgnbd=alive_bgnbd,
        p_alive_pareto_nbd=alive_pareto,
        lapse_risk=lapse_risk(bgnbd, x, t_x, t_obs, window),
        expected_purchases=bgnbd.conditional_expected_purchases(HORIZON_DAYS / unit, x, t_x, t_obs),
        expected_spend=spend,
        clv=clv,
        orders=x + 1,
        days_since_last_purchase=(t_obs - t_x) * unit,
        days_since_first_purchase=t_obs * unit,
        usual_interval_days=usual,
        lapse_window_days=window,
    )


def score_metrics(scores: MemberScores, threshold: float) -> dict[str, Any]:
    """Distribution figures of a run, stored with the model artefact."""
    if scores.p_alive.size == 0:
        return {"scored": 0}
    return {
        "scored": int(scores.p_alive.size),
        "mean_p_alive": float(scores.p_alive.mean()),
        "mean_lapse_risk": float(scores.lapse_risk.mean()),
        "share_at_or_above_threshold": float((scores.lapse_risk >= threshold).mean()),
        "expected_purchases_total": float(scores.expected_purchases.sum()),
        "clv_total": float(scores.clv.sum()),
    }
