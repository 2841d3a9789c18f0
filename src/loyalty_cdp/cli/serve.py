"""``loyalty-cdp serve``: the whole system in one process on the embedded default.

``--demo`` also starts local sinks for the example program's destinations (an SMTP server,
Twilio- and FCM-compatible APIs, a webhook receiver: :mod:`loyalty_cdp.demo_sinks`) and
streams simulated program traffic into the server, so that offers are decided and
delivered through five destinations at once (the fifth, the audience export, writes files
under ``<data-dir>/audiences`` every minute).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from loyalty_cdp import logs
from loyalty_cdp.settings import Settings

if TYPE_CHECKING:
    from loyalty_cdp.demo_sinks import DemoSinks

log = logging.getLogger("loyalty_cdp.demo")

DEMO_MEMBERS = 2_000
DEMO_DAYS = 365
DEMO_RATE = 200.0  # events/s: lively in the logs and metrics, light on a laptop
DEMO_AUDIENCE_EVERY_S = "60"


def _demo_traffic(settings: Settings, write_key: str, sinks: DemoSinks | None = None) -> None:
    """Stream a simulated year of the program into the server, as a client would."""
    from loyalty_cdp.simulator.generator import simulate
    from loyalty_cdp.simulator.streaming import BatchSender

    url = f"http://{settings.host}:{settings.port}"
    while True:  # wait until the server answers
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                break
        except OSError:
            time.sleep(0.2)
    start = (datetime.now(UTC) - timedelta(days=DEMO_DAYS)).date()
    reported = time.monotonic()

    def progress(sent: int) -> None:
        nonlocal reported
        if time.monotonic() - reported >= 10:
            reported = time.monotonic()
            log.info("demo traffic: %d simulated events sent%s", sender.sent,
                     f"; delivered so far: {sinks.summary()}" if sinks is not None else "")

    sender = BatchSender(url, write_key, rate=DEMO_RATE, on_sent=progress)
    log.info("demo traffic: streaming %d members over %d days at %.0f events/s to %s",
             DEMO_MEMBERS, DEMO_DAYS, DEMO_RATE, url)
    try:
        sender.send(simulate(DEMO_MEMBERS, DEMO_DAYS, seed=1, start=start))
    except Exception as exc:  # the demo must never take the server down with it
        log.warning("demo traffic stopped: %s", exc)
    finally:
        sender.close()
    log.info("demo traffic finished: %d events sent", sender.sent)


def serve(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data directory (default ./data)."),
    config: Path | None = typer.Option(None, "--config", help="Program YAML (default: the example retail program)."),
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port (default 8080)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    demo: bool = typer.Option(False, "--demo", help="Also stream simulated program traffic into the server."),
) -> None:
    """Run the server until SIGINT/SIGTERM; shutting down drains the ingest queue first."""
    # The server's imports are heavy; importing them here keeps every other command quick.
    import uvicorn

    from loyalty_cdp.api.app import create_app
    from loyalty_cdp.bootstrap import open_key_store, open_program

    settings = Settings.from_env(data_dir=data_dir, program=config, host=host, port=port)
    open_program(settings)  # a broken program file stops here, naming file, line and field (exit 2)
    log_config = logs.configure(log_level.upper())
    sinks = None
    if demo:
        from loyalty_cdp.demo_sinks import start_demo_sinks

        os.environ.setdefault("LOYALTY_CDP_AUDIENCE_EVERY_S", DEMO_AUDIENCE_EVERY_S)
        sinks = start_demo_sinks(started=log.info)  # before the app: its destinations read the addresses
        store = open_key_store(settings)
        try:
            key, _ = store.create(frozenset({"ingest"}))
        finally:
            store.close()
        threading.Thread(target=_demo_traffic, args=(settings, key, sinks), name="demo", daemon=True).start()
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=log_config,
            access_log=False,
            timeout_graceful_shutdown=30,
        )
    finally:
        if sinks is not None:
            log.info("demo sinks received: %s", sinks.summary())
            sinks.stop()
