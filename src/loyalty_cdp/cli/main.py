"""Entry point of the ``loyalty-cdp`` command: registers every sub-command."""

from __future__ import annotations

import sys

import typer

from loyalty_cdp.errors import LoyaltyCdpError

app = typer.Typer(
    name="loyalty-cdp",
    help="Customer data platform for loyalty programs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from loyalty_cdp.cli import (
        audit,
        config,
        destinations,
        importer,
        keys,
        privacy,
        replay,
        report,
        score,
        serve,
        simulate,
    )

    app.command("serve")(serve.serve)
    app.add_typer(keys.app, name="keys")
    app.command("simulate")(simulate.simulate)
    app.command("import")(importer.import_file)
    app.command("replay")(replay.replay)
    app.command("score")(score.score)
    app.add_typer(config.app, name="config")
    app.add_typer(report.app, name="report")
    app.add_typer(audit.app, name="audit")
    app.add_typer(privacy.app, name="privacy")
    app.add_typer(destinations.app, name="destinations")


def main() -> None:
    _register()
    try:
        app()
    except LoyaltyCdpError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
