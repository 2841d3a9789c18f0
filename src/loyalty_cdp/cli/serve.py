"""``loyalty-cdp serve``: the whole system in one process on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer
import uvicorn

from loyalty_cdp import logs
from loyalty_cdp.api.app import create_app
from loyalty_cdp.settings import Settings


def serve(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data directory (default ./data)."),
    config: Path | None = typer.Option(None, "--config", help="Program YAML (default: the example retail program)."),
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port (default 8080)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Run the server until SIGINT/SIGTERM; shutting down drains the ingest queue first."""
    settings = Settings.from_env(data_dir=data_dir, program=config, host=host, port=port)
    log_config = logs.configure(log_level.upper())
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=log_config,
        access_log=False,
        timeout_graceful_shutdown=30,
    )
