"""``loyalty-cdp audit verify|list``: check the audit log's hash chain and read its entries."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from loyalty_cdp.adapters.audit import AUDIT_DB, AuditLog
from loyalty_cdp.core.events import format_time
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.settings import Settings

app = typer.Typer(help="Verify and read the tamper-evident audit log.", no_args_is_help=True)

DataDir = typer.Option(None, "--data-dir", help="Data directory (default ./data or $LOYALTY_CDP_DATA_DIR).")


def _anchor(text: str) -> tuple[int, str]:
    sequence, _, digest = text.partition(":")
    if not sequence.isdigit() or int(sequence) < 1 or len(digest) != 64:
        raise InvalidInput("--anchor", "must be SEQUENCE:HASH as printed by `audit verify` (64 hex digits)")
    try:
        bytes.fromhex(digest)
    except ValueError:
        raise InvalidInput("--anchor", "the hash must be 64 hex digits") from None
    return int(sequence), digest


@app.command("verify")
def verify(
    data_dir: Path | None = DataDir,
    anchor: str | None = typer.Option(
        None, "--anchor", help="SEQUENCE:HASH from an earlier verify, kept elsewhere; also detects cut-off entries."
    ),
) -> None:
    """Recompute the hash chain: exit 0 when intact, 2 naming the first bad entry when not."""
    expected = None if anchor is None else _anchor(anchor)
    path = Settings.from_env(data_dir=data_dir).data_dir / AUDIT_DB
    if not path.exists() and expected is None:
        typer.echo(f"no audit log at {path} yet: nothing to verify")
        return
    log = AuditLog(path)
    try:
        result = log.verify(expected)
    finally:
        log.close()
    if not result.ok:
        typer.echo(f"audit log broken at entry {result.first_bad_sequence}: {result.reason}", err=True)
        raise typer.Exit(2)
    typer.echo(f"intact: {result.entries} entries; anchor {result.head_sequence}:{result.head_hash}")


@app.command("list")
def list_entries(
    data_dir: Path | None = DataDir,
    after: int = typer.Option(0, "--after", help="Only entries with a higher sequence number."),
    limit: int = typer.Option(100, "--limit", help="At most this many entries."),
    action: str | None = typer.Option(None, "--action", help="Only entries of this action."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List entries oldest first: sequence, time, actor, action, subject, details."""
    log = AuditLog(Settings.from_env(data_dir=data_dir).data_dir / AUDIT_DB)
    try:
        entries = log.list(after=after, limit=limit, action=action)
    finally:
        log.close()
    for entry in entries:
        if as_json:
            typer.echo(json.dumps(entry.view(), sort_keys=True))
        else:
            details = json.dumps(entry.details, sort_keys=True, separators=(",", ":"))
            when = format_time(entry.at)
            typer.echo(f"{entry.sequence:>6} {when} {entry.actor} {entry.action} {entry.subject} {details}")
