"""Ingest over HTTP as a client sees it: auth, limits, gzip, partial batches, skew, dedup, bad input."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.testing import SYSTEM_CHANNELS, ServerProcess


def stored(server: ServerProcess) -> list[dict]:
    """What clients stored (the loyalty engine's own events, channel "loyalty", left out)."""
    log = SqliteEventLog(server.data_dir / "events.db")
    try:
        return [msgspec.json.decode(e.body) for e in log.read(0, 100_000) if e.channel not in SYSTEM_CHANNELS]
    finally:
        log.close()


@pytest.fixture()
def client(server: ServerProcess, write_key: str):
    with httpx.Client(base_url=server.url, auth=(write_key, ""), timeout=10) as c:
        yield c


def test_every_call_type_answers_segment_success(client: httpx.Client, server: ServerProcess) -> None:
    calls = {
        "identify": {"userId": "u1", "traits": {"email": "a@example.com"}},
        "track": {"userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p1"}},
        "page": {"anonymousId": "a1", "name": "Home"},
        "screen": {"userId": "u1", "name": "Cart"},
        "group": {"userId": "u1", "groupId": "g1"},
        "alias": {"userId": "u1", "previousId": "a1"},
    }
    for kind, call in calls.items():
        response = client.post(f"/v1/{kind}", json=call)
        assert response.status_code == 200, response.text
        assert response.json() == {"success": True}
    assert sorted(e["type"] for e in stored(server)) == sorted(calls)


def test_write_key_in_body_and_gzip(server: ServerProcess, write_key: str) -> None:
    body = gzip.compress(json.dumps({"writeKey": write_key, "batch": [
        {"type": "track", "userId": "u2", "event": "Application Opened", "context": {"channel": "app"}}
    ]}).encode())
    response = httpx.post(server.url + "/v1/batch", content=body,
                          headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    [event] = stored(server)
    assert event["context"]["channel"] == "app"
    assert "writeKey" not in event


def test_auth_errors(server: ServerProcess) -> None:
    call = {"userId": "u", "event": "E"}
    assert httpx.post(server.url + "/v1/track", json=call).status_code == 401
    assert httpx.post(server.url + "/v1/track", json=call, auth=("lcdp_wrong", "")).status_code == 401
    read_only = server.create_key("read")
    response = httpx.post(server.url + "/v1/track", json=call, auth=(read_only, ""))
    assert response.status_code == 403
    assert "ingest" in response.json()["message"]
    assert stored(server) == []


def test_revoked_key_is_refused_at_once(server: ServerProcess, write_key: str) -> None:
    from loyalty_cdp.testing import run_cli

    call = {"userId": "u", "event": "E"}
    assert httpx.post(server.url + "/v1/track", json=call, auth=(write_key, "")).status_code == 200
    listing = run_cli("keys", "list", "--data-dir", str(server.data_dir)).stdout.splitlines()[1:]
    [key_id] = [line.split()[0] for line in listing if "ingest" in line]
    assert run_cli("keys", "revoke", key_id, "--data-dir", str(server.data_dir)).returncode == 0
    assert httpx.post(server.url + "/v1/track", json=call, auth=(write_key, "")).status_code == 401


def test_partial_batch_stores_valid_events_and_reports_each_invalid_one(
    client: httpx.Client, server: ServerProcess
) -> None:
    batch = [
        {"type": "track", "userId": "u1", "event": "A", "messageId": "m-ok-1"},
        {"type": "track", "event": "B", "messageId": "m-bad-1"},
        {"type": "fly", "userId": "u1", "messageId": "m-bad-2"},
        {"type": "identify", "userId": "u1", "messageId": "m-ok-2"},
    ]
    response = client.post("/v1/batch", json={"batch": batch})
    assert response.status_code == 400
    body = response.json()
    assert body["accepted"] == 2 and body["rejected"] == 2
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "batch[1].userId"), (2, "batch[2].type")]
    assert sorted(e["messageId"] for e in stored(server)) == ["m-ok-1", "m-ok-2"]


def test_clock_skew_is_corrected_and_message_id_generated(client: httpx.Client, server: ServerProcess) -> None:
    # The client's clock runs one hour fast: timestamp and sentAt are both an hour ahead.
    now = datetime.now(UTC)
    fast = now + timedelta(hours=1)
    event_time = fast - timedelta(minutes=5)
    response = client.post("/v1/track", json={
        "userId": "u1", "event": "Order Completed",
        "timestamp": event_time.isoformat(), "sentAt": fast.isoformat(),
    })
    assert response.status_code == 200
    [event] = stored(server)
    corrected = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    assert abs((corrected - (now - timedelta(minutes=5))).total_seconds()) < 5
    assert event["originalTimestamp"].startswith(event_time.strftime("%Y-%m-%dT%H:%M"))
    assert 0 < len(event["messageId"]) < 100


def test_repeated_message_id_is_stored_once(client: httpx.Client, server: ServerProcess) -> None:
    call = {"type": "track", "userId": "u1", "event": "A", "messageId": "same"}
    for _ in range(3):
        assert client.post("/v1/batch", json={"batch": [call, call]}).status_code == 200
    changed = {**call, "event": "B"}
    assert client.post("/v1/track", json=changed).status_code == 200
    events = stored(server)
    assert [(e["messageId"], e["event"]) for e in events] == [("same", "A")]
    metrics = httpx.get(server.url + "/metrics").text
    assert "lcdp_ingest_messageid_conflicts_total 1.0" in metrics
    assert "lcdp_ingest_events_deduplicated_total 6.0" in metrics


MALFORMED = [
    ("invalid json", "/v1/track", b'{"userId": "u", "event": ', {}, 400, "body"),
    ("invalid utf-8", "/v1/track", b'{"userId": "\xff\xfe", "event": "E"}', {}, 400, "body"),
    ("NaN", "/v1/track", b'{"userId": "u", "event": "E", "properties": {"x": NaN}}', {}, 400, "body"),
    ("Infinity", "/v1/track", b'{"userId": "u", "event": "E", "properties": {"x": Infinity}}', {}, 400, "body"),
    ("not an object", "/v1/track", b'[1, 2]', {}, 400, ""),
    ("missing ids", "/v1/track", b'{"event": "E"}', {}, 400, "userId"),
    ("wrong id type", "/v1/identify", b'{"userId": {"a": 1}}', {}, 400, "userId"),
    ("bool id", "/v1/identify", b'{"userId": true}', {}, 400, "userId"),
    ("missing event", "/v1/track", b'{"userId": "u"}', {}, 400, "event"),
    ("properties not object", "/v1/track", b'{"userId": "u", "event": "E", "properties": [1]}', {}, 400, "properties"),
    ("bad timestamp", "/v1/track", b'{"userId": "u", "event": "E", "timestamp": "yesterday"}', {}, 400, "timestamp"),
    ("long messageId", "/v1/track", json.dumps({"userId": "u", "event": "E", "messageId": "m" * 100}).encode(), {}, 400, "messageId"),
    ("unknown call type", "/v1/batch", b'{"batch": [{"type": "fly", "userId": "u"}]}', {}, 400, "batch[0].type"),
    ("batch not a list", "/v1/batch", b'{"batch": {"type": "track"}}', {}, 400, "batch"),
    ("deep nesting", "/v1/track", ('{"userId": "u", "event": "E", "properties": ' + '{"a":' * 40 + "1" + "}" * 41).encode(), {}, 400, "properties"),
    ("pathological nesting", "/v1/track", b'{"userId": "u", "event": "E", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", {}, 400, "body"),
    ("oversize event", "/v1/track", json.dumps({"userId": "u", "event": "E", "properties": {"x": "y" * 40_000}}).encode(), {}, 413, ""),
    ("oversize batch", "/v1/batch", json.dumps({"batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"x": "y" * 20_000}}] * 30}).encode(), {}, 413, ""),
    ("too many events", "/v1/batch", json.dumps({"batch": [{"type": "track", "userId": "u", "event": "E"}] * 2501}).encode(), {}, 413, "batch"),
    ("gzip bomb", "/v1/batch", gzip.compress(b'{"batch": [' + b" " * 50_000_000 + b"]}"), {"Content-Encoding": "gzip"}, 413, ""),
    ("broken gzip", "/v1/track", b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, 400, "Content-Encoding"),
    ("unknown encoding", "/v1/track", b"{}", {"Content-Encoding": "br"}, 400, "Content-Encoding"),
]


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    """One server for the whole malformed suite: every case must leave its log empty, so a case
    that stored anything would show in its own assertion and in every later one."""
    with ServerProcess(tmp_path_factory.mktemp("malformed") / "data") as server, \
            httpx.Client(base_url=server.url, auth=(server.create_key("ingest"), ""), timeout=10) as client:
        yield server, client


@pytest.mark.parametrize(("name", "path", "body", "headers", "status", "field"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
def test_malformed_input_gets_a_clear_4xx_and_changes_nothing(
    quiet_server: tuple[ServerProcess, httpx.Client],
    name: str, path: str, body: bytes, headers: dict, status: int, field: str,
) -> None:
    server, client = quiet_server
    response = client.post(path, content=body, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["success"] is False and payload["message"]
    if field:
        found = payload["errors"][0]["field"] if "errors" in payload else payload["field"]
        assert found == field
    assert stored(server) == []


def test_loyalty_commands_need_the_loyalty_scope(server: ServerProcess, write_key: str) -> None:
    command = {"userId": "u1", "event": "Points Adjusted", "properties": {"points": 100000, "reason": "free points"}}
    refused = httpx.post(server.url + "/v1/track", json=command, auth=(write_key, ""))
    assert refused.status_code == 403 and "loyalty" in refused.json()["message"]
    batch = {"batch": [{"type": "track", "userId": "u1", "event": "Product Viewed"}, {"type": "track", **command}]}
    assert httpx.post(server.url + "/v1/batch", json=batch, auth=(write_key, "")).status_code == 403
    assert stored(server) == []
    trusted = server.create_key("ingest,loyalty")
    assert httpx.post(server.url + "/v1/track", json=command, auth=(trusted, "")).status_code == 200
