"""``loyalty-cdp serve``: the whole system in one process on the embedded default.

``--demo`` also starts local sinks for the example program's destinations (an SMTP server,
Twilio- and FCM-compatible APIs, a webhook receiver: :mod:`loyalty_cdp.demo_sinks`), streams
a simulated year of program traffic into the server, and every few seconds sends a live
shopper whose purchase crosses a tier, so that offers are decided and delivered now through
five destinations at once (the fifth, the audience export, writes files under
``<data-dir>/audiences`` every minute).
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import random
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
DEMO_LIVE_EVERY_S = 5.0  # a live shopper crossing a tier this often


def _wait_for(url: str) -> None:
    while True:  # wait until the server answers
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)


def _live_shopper(n: int, rng: random.Random) -> list[dict[str, object]]:
    """A new member who enrols in the app (answering the consent banner) and spends enough for Silver or Gold."""
    from loyalty_cdp.core.messages import is_e164

    user = f"live-{n:05d}-{rng.randrange(16**6):06x}"
    first = rng.choice(("Ann", "Bo", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Jules"))
    phone = next(number for number in (f"+1415{rng.randrange(2_000_000, 9_999_999):07d}" for _ in range(100))
                 if is_e164(number))
    preferences = {"Email Marketing": rng.random() < 0.85, "SMS Marketing": rng.random() < 0.4,
                   "Push Notifications": rng.random() < 0.75, "Advertising": rng.random() < 0.5}
    total = round(rng.uniform(520, 1800), 2)
    return [
        {"type": "identify", "userId": user, "context": {"channel": "app", "consent": {
            "categoryPreferences": preferences}}, "traits": {
            "first_name": first, "email": f"{user}@example.com", "phone": phone,
            "push_token": f"{user}-{rng.randrange(16**20):020x}:APA91b"}},
        {"type": "track", "userId": user, "event": "Order Completed", "context": {"channel": "pos"},
         "properties": {"order_id": f"live-order-{user}", "total": total, "currency": "USD", "products": [
             {"product_id": "TV-00001", "sku": "TV-00001", "name": "Television", "category": "Electronics",
              "brand": "Northwind", "price": total, "quantity": 1}]}},
    ]


def _demo_live(settings: Settings, write_key: str) -> None:
    """Every few seconds a new member shops live: a tier upgrade now, so offers go out now.

    (The simulated year is history: decisions about occurrences more than a day old are
    recorded without being sent.)"""
    url = f"http://{settings.host}:{settings.port}"
    _wait_for(url)
    auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    rng = random.Random()
    for n in itertools.count(1):
        body = json.dumps({"batch": _live_shopper(n, rng)}).encode()
        request = urllib.request.Request(url + "/v1/batch", data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": auth})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        except OSError as exc:  # the demo must never take the server down with it
            log.warning("demo live shopper not sent: %s", exc)
        time.sleep(DEMO_LIVE_EVERY_S)


def _demo_traffic(settings: Settings, write_key: str, sinks: DemoSinks | None = None) -> None:
    """Stream a simulated year of the program into the server, as a client would."""
    from loyalty_cdp.simulator.generator import simulate
    from loyalty_cdp.simulator.streaming import BatchSender

    url = f"http://{settings.host}:{settings.port}"
    _wait_for(url)
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
    from loyalty_cdp.api.http_protocol import GatheredWritesProtocol
    from loyalty_cdp.bootstrap import open_key_store, open_program
    from loyalty_cdp.services.scoring import score_every_s

    settings = Settings.from_env(data_dir=data_dir, program=config, host=host, port=port)
    open_program(settings)  # a broken program file stops here, naming file, line and field (exit 2)
    score_every_s()  # so does a bad LOYALTY_CDP_SCORE_EVERY_S
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
        threading.Thread(target=_demo_live, args=(settings, key), name="demo-live", daemon=True).start()
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=log_config,
            access_log=False,
            http=GatheredWritesProtocol,  # a response in one write (api/http_protocol.py)
            timeout_graceful_shutdown=30,
        )
    finally:
        if sinks is not None:
            log.info("demo sinks received: %s", sinks.summary())
            sinks.stop()
