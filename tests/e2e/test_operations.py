"""Operations over HTTP: health, metrics, OpenAPI, graceful shutdown, and the PostgreSQL event log."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.testing import SYSTEM_CHANNELS, ServerProcess, wait_for


def test_health_metrics_and_openapi(server: ServerProcess, write_key: str) -> None:
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    httpx.post(server.url + "/v1/track", json={"userId": "u", "event": "E"}, auth=(write_key, ""))
    metrics = httpx.get(server.url + "/metrics").text
    assert "lcdp_ingest_events_accepted_total 1.0" in metrics
    assert 'lcdp_http_request_duration_seconds_count{method="POST",route="/v1/track",status="200"} 1.0' in metrics
    # The client's event, and the system's own once the processor has looked at it (the new
    # visitor enters a segment): the log holds at least the one event that was acknowledged.
    stored = next(float(line.split()[1]) for line in metrics.splitlines() if line.startswith("lcdp_eventlog_events "))
    assert stored >= 1
    spec = httpx.get(server.url + "/openapi.json").json()
    for kind in ("identify", "track", "page", "screen", "group", "alias", "batch"):
        assert "post" in spec["paths"][f"/v1/{kind}"]
    assert {"/healthz", "/metrics"} <= set(spec["paths"])


def test_graceful_shutdown_under_load_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    key = server.create_key("ingest")
    server.start()
    acked: list[str] = []
    done = threading.Event()

    def sender() -> None:
        with httpx.Client(base_url=server.url, auth=(key, ""), timeout=10) as client:
            n = 0
            while not done.is_set():
                calls = [{"type": "track", "userId": "u", "event": "E", "messageId": f"g-{n + i}"} for i in range(100)]
                try:
                    response = client.post("/v1/batch", json={"batch": calls})
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    acked.extend(c["messageId"] for c in calls)
                n += 100

    thread = threading.Thread(target=sender)
    thread.start()
    while len(acked) < 3_000:
        done.wait(0.02)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it stopped.
    assert server.stop() in (0, -15)
    done.set()
    thread.join()
    log = SqliteEventLog(server.data_dir / "events.db")
    try:
        stored = {e.message_id for e in log.read(0, 1_000_000)}
    finally:
        log.close()
    assert set(acked) <= stored


def test_server_on_postgres_event_log(tmp_path: Path, postgres_dsn: str) -> None:
    from loyalty_cdp.adapters.eventlog.postgres import PostgresEventLog

    env = {"LOYALTY_CDP_STORAGE": "postgres", "LOYALTY_CDP_POSTGRES_DSN": postgres_dsn}
    server = ServerProcess(tmp_path / "data", env)
    key = server.create_key("ingest")
    with server:
        batch = {"batch": [{"type": "track", "userId": "u1", "event": "Order Completed", "messageId": f"pg-{i}"}
                           for i in range(50)]}
        for _ in range(2):
            assert httpx.post(server.url + "/v1/batch", json=batch, auth=(key, "")).status_code == 200
        assert httpx.get(server.url + "/healthz").json()["storage"] == "postgres"
    log = PostgresEventLog(postgres_dsn)
    try:
        clients = [e.message_id for e in log.read(0, 1000) if e.channel not in SYSTEM_CHANNELS]  # not the engine's own
        assert sorted(clients) == sorted(f"pg-{i}" for i in range(50))
    finally:
        log.close()


def test_per_key_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", {"LOYALTY_CDP_KEY_RATE_LIMIT": "5"})
    busy, other = server.create_key("read"), server.create_key("read")
    with server, httpx.Client(base_url=server.url, timeout=10) as client:
        answers = [client.get("/v1/members/ghost", headers={"Authorization": f"Bearer {busy}"}) for _ in range(30)]
        statuses = [a.status_code for a in answers]
        assert statuses[:10] == [404] * 10 and 429 in statuses  # a burst of twice the rate, then refused
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.headers["Retry-After"] == "1"
        assert client.get("/v1/members/ghost", headers={"Authorization": f"Bearer {other}"}).status_code == 404


def test_decisions_on_postgres_storage(tmp_path: Path, postgres_dsn: str) -> None:
    """The whole path on PostgreSQL: a purchase crossing Silver, the loyalty engine, the trigger, the decision."""
    env = {"LOYALTY_CDP_STORAGE": "postgres", "LOYALTY_CDP_POSTGRES_DSN": postgres_dsn}
    server = ServerProcess(tmp_path / "data", env)
    key, read = server.create_key("ingest"), server.create_key("read")
    consent = {"categoryPreferences": {"email_marketing": True, "push": True, "profiling": True}}
    calls = [{"type": "identify", "userId": "pg-member", "context": {"consent": consent},
              "traits": {"email": "pg@example.com", "first_name": "Pia"}},
             {"type": "track", "userId": "pg-member", "event": "Order Completed",
              "properties": {"order_id": "pg-o1", "total": 640.0, "currency": "USD",
                             "products": [{"product_id": "tv", "category": "Electronics", "price": 640.0,
                                           "quantity": 1}]}}]
    with server:
        assert httpx.post(server.url + "/v1/batch", json={"batch": calls}, auth=(key, "")).status_code == 200

        def decided() -> list[dict] | None:
            answer = httpx.get(server.url + "/v1/members/pg-member/decisions",
                               headers={"Authorization": f"Bearer {read}"})
            found = [d for d in answer.json()["decisions"] if d["trigger_id"] == "tier-upgrade-welcome"] \
                if answer.status_code == 200 else []
            return found or None

        [decision] = wait_for(decided, "the tier upgrade's decision")
        assert decision["action"] in ("send", "hold_out")
        assert decision["inputs"]["loyalty.tier"] == "Silver"
