"""``loyalty-cdp report``: the points liability of the program (``liability``) and campaign uplift against
the holdout (``uplift``), as JSON."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import typer

app = typer.Typer(help="Reports over the program's members.", no_args_is_help=True)


@app.command("liability")
def liability(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data directory (default ./data)."),
    config: Path | None = typer.Option(None, "--config", help="Program YAML (default: the example retail program)."),
) -> None:
    """Outstanding points by age and tier, the expiry forecast by month, and the breakage rate (JSON)."""
    from loyalty_cdp.bootstrap import open_profile_store, open_program
    from loyalty_cdp.core.loyalty import liability_report
    from loyalty_cdp.core.profile import Profile
    from loyalty_cdp.services.loyalty_stage import loyalty_state
    from loyalty_cdp.settings import Settings

    settings = Settings.from_env(data_dir=data_dir, program=config)
    book, _ = open_program(settings)
    store = open_profile_store(settings)
    decode = msgspec.msgpack.Decoder(Profile).decode
    try:
        states = [s for _, blob in store.iter_profiles() if (s := loyalty_state(decode(blob))) is not None]
    finally:
        store.close()
    report = liability_report(book, states, int(time.time() * 1000))
    typer.echo(msgspec.json.format(msgspec.json.encode(report), indent=2))


@app.command("uplift")
def uplift(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data directory (default ./data)."),
    campaign: str | None = typer.Option(None, "--campaign", help="One campaign (default: every campaign)."),
    trigger: str | None = typer.Option(None, "--trigger", help="Only this trigger's decisions."),
    window_days: int = typer.Option(14, "--window-days", help="Attribution window in days after the send."),
    active_days: int | None = typer.Option(None, "--active-days",
                                           help="Activity window in days (default: the attribution window)."),
    min_orders: int = typer.Option(1, "--min-orders", help="Orders in the activity window that make a member active."),
    confidence: float = typer.Option(0.95, "--confidence", help="Confidence level of the intervals."),
    group_by: str = typer.Option("campaign", "--by", help="One row per 'campaign' or per 'trigger'."),
) -> None:
    """Uplift of each campaign's treated members over its holdout, with confidence intervals (JSON)."""
    from loyalty_cdp.adapters.decisionstore import DecisionStore
    from loyalty_cdp.adapters.outbox import OUTBOX_FILE, Outbox
    from loyalty_cdp.bootstrap import open_event_log
    from loyalty_cdp.errors import InvalidInput
    from loyalty_cdp.services.scoring import read_identities
    from loyalty_cdp.services.uplift import UpliftService, check_parameters
    from loyalty_cdp.settings import Settings

    check_parameters(window_days, active_days, min_orders, confidence)
    if group_by not in ("campaign", "trigger"):
        raise InvalidInput("--by", "must be campaign or trigger")
    settings = Settings.from_env(data_dir=data_dir)
    if not (settings.data_dir / OUTBOX_FILE).exists():
        raise InvalidInput("--data-dir", f"{settings.data_dir} holds no decisions (no {OUTBOX_FILE})")
    owner = read_identities(settings.data_dir / "profiles.db").owner
    identities: dict[str, dict[str, list[str]]] = {}
    for (kind, value), member_id in owner.items():
        identities.setdefault(member_id, {}).setdefault(kind, []).append(value)
    outbox = Outbox(settings.data_dir / OUTBOX_FILE)
    store = DecisionStore(outbox)
    event_log = open_event_log(settings)
    try:
        service = UpliftService(store, event_log, identities.get)
        summary = service.report(now=int(time.time() * 1000), campaign=campaign, trigger_id=trigger,
                                 window_days=window_days, active_days=active_days, min_orders=min_orders,
                                 confidence=confidence, group_by="trigger" if group_by == "trigger" else "campaign")
    finally:
        event_log.close()
        store.close()
        outbox.close()
    typer.echo(msgspec.json.format(msgspec.json.encode(summary), indent=2))
