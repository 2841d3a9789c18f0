"""``loyalty-cdp score``: score every member as of now or a past date (safe beside a running server)."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import typer

from loyalty_cdp.core.events import format_time, parse_time
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.settings import Settings

DAY_MS = 86_400_000


def parse_as_of(text: str) -> int:
    """``YYYY-MM-DD`` means the end of that day (UTC, its last millisecond); a date-time is exact."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return parse_time(text, "as_of")
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return int(midnight.timestamp() * 1000) + DAY_MS - 1


def score(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data directory (default ./data)."),
    as_of: str | None = typer.Option(
        None, "--as-of", help="Score as of this date (YYYY-MM-DD: end of that day, UTC) or ISO date-time; "
        "only events up to it are used. Default: now."),
    lapse_threshold: float | None = typer.Option(
        None, "--lapse-threshold", help="Lapse risk at which 'Lapse Risk Detected' fires (default: the lapse "
        "model's threshold)."),
    clv_months: int = typer.Option(12, "--clv-months", help="Months of customer lifetime value."),
    monthly_discount_rate: float = typer.Option(0.01, "--discount-rate", help="CLV discount rate per month."),
    lead_days: float = typer.Option(
        3.0, "--replenishment-lead-days", help="Days before a predicted repurchase that its reminder is due."),
) -> None:
    """Fit the purchase models and score every member: p_alive, lapse_risk, expected purchases, CLV."""
    now_ms = int(time.time() * 1000)
    as_of_ms = now_ms if as_of is None else parse_as_of(as_of)
    if as_of_ms > now_ms:
        raise InvalidInput("as_of", f"{format_time(as_of_ms)} is in the future")
    # The prediction stack (numpy, scipy, scikit-learn) takes about a second to import: only this command pays it,
    # once its arguments are known to be good.
    from loyalty_cdp.core.predictions.lapse import DEFAULT_THRESHOLD
    from loyalty_cdp.core.predictions.replenishment import ReplenishmentConfig
    from loyalty_cdp.core.predictions.scoring import ScoringConfig
    from loyalty_cdp.services.scoring import run_scoring

    config = ScoringConfig(clv_months=clv_months, monthly_discount_rate=monthly_discount_rate,
                           lapse_threshold=DEFAULT_THRESHOLD if lapse_threshold is None else lapse_threshold,
                           replenishment=ReplenishmentConfig(lead_days=lead_days))
    report = run_scoring(Settings.from_env(data_dir=data_dir), as_of_ms=as_of_ms, now_ms=now_ms, config=config)
    kind = "back-test scores" if report.backtest else "scores"
    typer.echo(
        f"scored {report.members} members as of {format_time(as_of_ms)} with model {report.model_version} "
        f"({report.scored_for_targeting} for targeting) in {report.seconds:.1f}s; {kind} in {report.store_dir}; "
        f"{report.alerts_appended} 'Lapse Risk Detected' events appended"
    )
    if report.unattributed_orders:
        typer.echo(f"{report.unattributed_orders} orders skipped: their anonymous id is not linked to a member yet",
                   err=True)
