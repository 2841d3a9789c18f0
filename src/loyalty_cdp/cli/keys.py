"""``loyalty-cdp keys create|list|revoke``: API key management."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from loyalty_cdp.adapters.keystore import parse_scopes
from loyalty_cdp.bootstrap import open_audit_log, open_key_store
from loyalty_cdp.settings import Settings

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

DataDir = typer.Option(None, "--data-dir", help="Data directory (default ./data or $LOYALTY_CDP_DATA_DIR).")


def _when(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "-"
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@app.command("create")
def create(
    scopes: str = typer.Option(..., "--scopes", help="Comma-separated: ingest, read, loyalty, admin, privacy."),
    data_dir: Path | None = DataDir,
) -> None:
    """Print a new API key, and only the key, on stdout."""
    wanted = parse_scopes(scopes)
    settings = Settings.from_env(data_dir=data_dir)
    store = open_key_store(settings)
    try:
        key, record = store.create(wanted)
    finally:
        store.close()
    _audit(settings, "key.created", record.key_id, {"scopes": sorted(wanted)})
    typer.echo(key)


def _audit(settings: Settings, action: str, key_id: str, details: dict[str, object] | None = None) -> None:
    """Key management is audited; the actor is the operator at the command line."""
    audit = open_audit_log(settings)
    try:
        audit.append("cli", action, f"key:{key_id}", details)
    finally:
        audit.close()


@app.command("list")
def list_keys(data_dir: Path | None = DataDir) -> None:
    """List keys: id, scopes, created, last used, revoked (never the key itself)."""
    store = open_key_store(Settings.from_env(data_dir=data_dir))
    try:
        records = store.list()
    finally:
        store.close()
    typer.echo("key_id        scopes                          created               last_used             revoked")
    for r in records:
        typer.echo(f"{r.key_id:<13} {','.join(sorted(r.scopes)):<31} {_when(r.created_at):<21} "
                   f"{_when(r.last_used_at):<21} {_when(r.revoked_at)}")


@app.command("revoke")
def revoke(key_id: str = typer.Argument(..., help="The key_id shown by `keys list`."),
           data_dir: Path | None = DataDir) -> None:
    """Revoke a key; a running server refuses it from its next request."""
    settings = Settings.from_env(data_dir=data_dir)
    store = open_key_store(settings)
    try:
        store.revoke(key_id)
    finally:
        store.close()
    _audit(settings, "key.revoked", key_id)
    typer.echo(f"revoked {key_id}")
