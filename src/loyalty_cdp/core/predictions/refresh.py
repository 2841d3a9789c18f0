"""P(alive), lapse risk, expected purchases and CLV of one member, refreshed after a purchase (pure, scalar).

The batch run fits the models and scores everyone as of a day; between runs a member's purchase
changes their (frequency, recency, T), and :func:`refresh_lapse` recomputes their scores from the
run's fitted parameters (:class:`LapseModel`, read from the model artefact) without refitting.
It evaluates the same formulas as :func:`~.scoring.score_summary` for one member in plain
floats (a few microseconds, against about 100 for the vectorised code on a one-member array),
and gives the same numbers: ``tests/unit/test_refresh_lapse.py`` checks it against a rescoring
from scratch. The expected spend per purchase (Gamma-Gamma) is the run's: the new order's amount
counts from the next run on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy.special import hyp2f1 as _scipy_hyp2f1

from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.predictions.bgnbd import BgNbdModel
from loyalty_cdp.core.predictions.explain import BTYD_CODES, btyd_reasons
from loyalty_cdp.core.predictions.lapse import MAX_WINDOW_DAYS, MIN_WINDOW_DAYS
from loyalty_cdp.core.predictions.pareto_nbd import ParetoNbdModel
from loyalty_cdp.core.predictions.scoring import DAYS_PER_MONTH, HORIZON_DAYS, ScoringConfig, ScoringModels
from loyalty_cdp.errors import InvalidInput

_C_NUDGE = 1e-9  # as special.hyp2f1: SciPy's degenerate integer c - a - b cases, recomputed beside them
_A_SINGULARITY_GAP = 1e-7  # as BgNbdModel


def _hyp2f1(a: float, b: float, c: float, z: float) -> float:
    value = float(_scipy_hyp2f1(a, b, c, z))
    if not math.isfinite(value):
        value = float(_scipy_hyp2f1(a, b, c + _C_NUDGE * max(abs(c), 1.0), z))
    return value


def _expit(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)


@dataclass(frozen=True, slots=True)
class LapseModel:
    """What a refresh needs from a run: its fitted BG/NBD and Pareto/NBD and its lapse settings."""

    version: str
    bgnbd: BgNbdModel
    pareto_nbd: ParetoNbdModel
    population_interval_days: float
    time_unit_days: float
    window_intervals: float
    prior_purchases: float
    min_window_days: float
    max_window_days: float
    horizon_days: float
    clv_months: int
    monthly_discount_rate: float

    @classmethod
    def from_artefact(cls, artefact: dict[str, Any]) -> LapseModel:
        """From ``models/<version>.json``; an artefact without its ``lapse`` settings used the defaults."""
        models = ScoringModels.from_dict(artefact)
        defaults = ScoringConfig()
        settings = artefact.get("lapse") or {}
        if not isinstance(settings, dict):
            raise InvalidInput("lapse", "the artefact's lapse settings must be an object")
        try:
            return cls(
                version=models.version, bgnbd=models.bgnbd, pareto_nbd=models.pareto_nbd,
                population_interval_days=models.population_interval_days,
                time_unit_days=float(settings.get("time_unit_days", models.bgnbd.time_unit_days)),
                window_intervals=float(settings.get("lapse_window_intervals", defaults.lapse_window_intervals)),
                prior_purchases=float(settings.get("interval_prior_purchases", defaults.interval_prior_purchases)),
                min_window_days=float(settings.get("min_window_days", MIN_WINDOW_DAYS)),
                max_window_days=float(settings.get("max_window_days", MAX_WINDOW_DAYS)),
                horizon_days=float(settings.get("horizon_days", HORIZON_DAYS)),
                clv_months=int(settings.get("clv_months", defaults.clv_months)),
                monthly_discount_rate=float(settings.get("monthly_discount_rate", defaults.monthly_discount_rate)),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInput("lapse", f"unreadable lapse settings: {exc}") from exc

    # -- the formulas of bgnbd.py, pareto_nbd.py and lapse.py for one member --------------------

    def p_alive_bgnbd(self, x: float, t_x: float, t_obs: float) -> float:
        if x <= 0:
            return 1.0
        m = self.bgnbd
        log_odds = math.log(m.a) - math.log(m.b + x - 1) + (m.r + x) * math.log1p((t_obs - t_x) / (m.alpha + t_x))
        return _expit(-log_odds)

    def p_alive_pareto_nbd(self, x: float, t_x: float, t_obs: float) -> float:
        m = self.pareto_nbd
        r, alpha, s, beta = m.r, m.alpha, m.s, m.beta
        alive = -(r + x) * math.log(alpha + t_obs) - s * math.log(beta + t_obs)

        def log_antiderivative(tau: float) -> float:
            total = r + s + x
            if alpha >= beta:
                z = (alpha - beta) / (alpha + tau)
                log_f = (-(r + x) * math.log(alpha + tau) - s * math.log(beta + tau)
                         + math.log(_hyp2f1(1.0, r + x, total + 1, z)))
            else:
                z = (beta - alpha) / (beta + tau)
                log_f = ((1 - r - x) * math.log(alpha + tau) - (s + 1) * math.log(beta + tau)
                         + math.log(_hyp2f1(1.0, s + 1, total + 1, z)))
            return log_f - math.log(total)

        upper, lower = log_antiderivative(t_x), log_antiderivative(t_obs)
        gap = -math.exp(min(lower - upper, 0.0))
        if gap <= -1.0:
            return 1.0  # t_x == T: the dropped-out integral is empty
        dropped = math.log(s) + upper + math.log1p(gap)
        return _expit(alive - dropped)

    def _expected_after(self, x: float, t_obs: float, horizon: float) -> float:
        m = self.bgnbd
        a = 1 + _A_SINGULARITY_GAP if abs(m.a - 1) < _A_SINGULARITY_GAP else m.a
        c = a + m.b + x - 1
        log_shrink = -math.log1p(horizon / (m.alpha + t_obs))
        z = -math.expm1(log_shrink)
        if x + m.r - a + 1 >= 0:
            power, series = a - 1, _hyp2f1(a + m.b - 1 - m.r, a - 1, c, z)
        else:
            power, series = m.r + x, _hyp2f1(m.r + x, m.b + x, c, z)
        remaining = -(math.expm1(power * log_shrink) * series + (series - 1))
        return c / (a - 1) * remaining

    def expected_purchases(self, horizon: float, x: float, t_x: float, t_obs: float, alive: float) -> float:
        return self._expected_after(x, t_obs, horizon) * alive

    def clv(self, x: float, t_obs: float, alive: float, spend: float) -> float:
        period = DAYS_PER_MONTH / self.time_unit_days
        value = before = 0.0
        for month in range(1, self.clv_months + 1):
            by_end = self._expected_after(x, t_obs, month * period) * alive
            value += (by_end - before) * (1 + self.monthly_discount_rate) ** -month
            before = by_end
        return value * spend

    def usual_interval_days(self, x: float, t_x_days: float) -> float:
        return (t_x_days + self.prior_purchases * self.population_interval_days) / (x + self.prior_purchases)

    def lapse_window_days(self, usual_days: float) -> float:
        return min(max(self.window_intervals * usual_days, self.min_window_days), self.max_window_days)

    def lapse_risk(self, x: float, t_obs: float, alive_bgnbd: float, window_days: float) -> float:
        m = self.bgnbd
        window = window_days / m.time_unit_days
        quiet_if_alive = -(m.r + x) * math.log1p(window / (m.alpha + t_obs))
        return min(max(1.0 - alive_bgnbd * -math.expm1(quiet_if_alive), 0.0), 1.0)


Reasons = list[dict[str, str]]


def refresh_lapse(entry: dict[str, Any], explanation: Reasons, model: LapseModel, frequency: float, recency: float,
                  T: float, as_of_ms: int) -> tuple[dict[str, Any], Reasons]:
    """The member's scores and explanation with the purchase-model fields recomputed.

    ``frequency`` (repeat purchase days), ``recency`` and ``T`` are in ``model.time_unit_days``
    units as of ``as_of_ms``'s day (``PurchaseHistory.summary``'s convention). Rounded as the run
    stores them; ``refreshed_at`` records when. The reasons the purchase model gives (cadence,
    activity, frequency, value) are rewritten; the others (replenishment, propensities) are kept.
    """
    x, t_x, t_obs = float(frequency), float(recency), float(T)
    if not (x >= 0 and x == math.floor(x) and 0 <= t_x <= t_obs and math.isfinite(t_obs)) or (x == 0 and t_x != 0):
        raise InvalidInput("frequency", "need whole repeat purchases x >= 0 and 0 <= recency <= T (0 when x is 0)")
    unit = model.time_unit_days
    alive_bgnbd = model.p_alive_bgnbd(x, t_x, t_obs)
    alive_pareto = model.p_alive_pareto_nbd(x, t_x, t_obs)
    usual = model.usual_interval_days(x, t_x * unit)
    window = model.lapse_window_days(usual)
    spend = float(entry.get("expected_spend") or 0.0)
    expected = model.expected_purchases(model.horizon_days / unit, x, t_x, t_obs, alive_bgnbd)
    updated = {
        **entry,
        "p_alive": round(alive_bgnbd if x > 0 else alive_pareto, 4),
        "lapse_risk": round(model.lapse_risk(x, t_obs, alive_bgnbd, window), 4),
        "expected_purchases_90d": round(expected, 4),
        "clv": round(model.clv(x, t_obs, alive_bgnbd, spend), 2),
        "p_alive_bgnbd": round(alive_bgnbd, 4),
        "p_alive_pareto_nbd": round(alive_pareto, 4),
        "orders": int(x) + 1,
        "days_since_last_purchase": round((t_obs - t_x) * unit, 1),
        "days_since_first_purchase": round(t_obs * unit, 1),
        "usual_interval_days": round(usual, 1),
        "lapse_window_days": round(window, 1),
        "refreshed_at": format_time(as_of_ms),
    }
    alive = alive_bgnbd if x > 0 else alive_pareto
    reasons = btyd_reasons((t_obs - t_x) * unit, usual, int(x) + 1, t_obs * unit, alive, expected, spend)
    return updated, reasons + [reason for reason in explanation if reason.get("code") not in BTYD_CODES]
