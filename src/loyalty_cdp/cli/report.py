"""``loyalty-cdp report liability``: the points liability of the program, from the profile store."""

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
