"""``loyalty-cdp config check PROGRAM.yaml``: validate a program file without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Check program configuration files.", no_args_is_help=True)


@app.command("check")
def check(path: Path = typer.Argument(..., help="The program YAML file.")) -> None:
    """Exit 0 and summarise the program when valid; exit 2 naming file, line and field when not."""
    from loyalty_cdp.bootstrap import open_program
    from loyalty_cdp.settings import Settings

    book, decisioning = open_program(Settings(program=path))
    for version in book.versions:
        program = version.program
        typer.echo(f"ok: {path}: program {program.program!r} version {program.version} "
                   f"effective from {program.effective_from}")
    latest = decisioning.configs[-1]
    typer.echo(f"ok: {len(latest.segments)} segments, {len(latest.offers)} offers, "
               f"{len(latest.by_trigger)} triggers in the latest version")
