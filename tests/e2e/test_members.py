"""The unified member over HTTP: stitching across channels, lookups, timeline, races, and crashes."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from loyalty_cdp.adapters.program_yaml import load_program
from loyalty_cdp.core.loyalty import LoyaltyEngine
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.services.loyalty_stage import loyalty_state
from loyalty_cdp.testing import SYSTEM_CHANNELS, ServerProcess, run_cli, wait_for


@pytest.fixture()
def keys(server: ServerProcess) -> tuple[str, str]:
    return server.create_key("ingest"), server.create_key("read")


def test_one_member_across_web_login_pos_and_app(server: ServerProcess, keys: tuple[str, str]) -> None:
    ingest, read = keys
    calls = [
        {"type": "page", "anonymousId": "web-anon-1", "name": "Dog Food", "context": {"channel": "web"},
         "timestamp": "2026-05-01T09:00:00Z", "properties": {"category": "Pet Food"}},
        {"type": "track", "anonymousId": "web-anon-1", "event": "Product Viewed", "context": {"channel": "web"},
         "timestamp": "2026-05-01T09:01:00Z", "properties": {"product_id": "dog-1", "category": "Pet Food"}},
        {"type": "identify", "anonymousId": "web-anon-1", "userId": "member-7", "context": {"channel": "web"},
         "timestamp": "2026-05-01T09:02:00Z",
         "traits": {"email": "Ann.Lee@Example.com", "first_name": "Ann", "card_number": "7000 1234 5678"}},
        {"type": "track", "anonymousId": "pos-terminal-9-txn-1", "event": "Order Completed",
         "context": {"channel": "pos"}, "timestamp": "2026-05-03T17:30:00Z",
         "properties": {"order_id": "pos-1", "total": 42.0, "currency": "USD", "loyalty_card_number": "7000-1234-5678",
                        "products": [{"product_id": "dog-1", "sku": "DOG-1", "category": "Pet Food",
                                      "brand": "Acme", "price": 42.0, "quantity": 1}]}},
        {"type": "track", "userId": "member-7", "anonymousId": "app-install-3", "event": "Application Opened",
         "context": {"channel": "app"}, "timestamp": "2026-05-04T08:00:00Z"},
    ]
    response = httpx.post(server.url + "/v1/batch", json={"batch": calls}, auth=(ingest, ""))
    assert response.status_code == 200, response.text
    bearer = {"Authorization": f"Bearer {read}"}

    def member() -> dict | None:
        answer = httpx.get(server.url + "/v1/members/member-7", headers=bearer)
        body = answer.json() if answer.status_code == 200 else None
        return body if body and body["signals"]["purchase"]["orders"] == 1 else None

    profile = wait_for(member)
    assert profile is not None, "the member never appeared"
    assert profile["user_id"] == "member-7"
    for field in ("identities", "loyalty", "traits", "signals", "scores", "segments", "consent"):
        assert field in profile
    assert {"points_balance", "pending_points", "lifetime_points", "tier"} <= set(profile["loyalty"])
    assert profile["traits"]["first_name"] == "Ann"
    assert {"web", "pos", "app"} <= set(profile["signals"]["channels"])

    for kind, value in [("email", "ann.lee@example.com"), ("card", "7000 1234 5678"),
                        ("anonymous_id", "web-anon-1"), ("anonymous_id", "pos-terminal-9-txn-1"),
                        ("anonymous_id", "app-install-3")]:
        found = httpx.get(server.url + "/v1/members/lookup", params={"type": kind, "value": value}, headers=bearer)
        assert found.status_code == 200, (kind, value, found.text)
        assert found.json()["user_id"] == "member-7"

    timeline = httpx.get(server.url + "/v1/members/member-7/events", headers=bearer).json()["events"]
    channels = [e["context"]["channel"] for e in timeline]
    # The member's own calls, in time order; the system's events (loyalty program, segment
    # memberships, decisions) are interleaved on the same timeline.
    assert [c for c in channels if c not in SYSTEM_CHANNELS] == ["web", "web", "web", "pos", "app"]
    # The program ran on the POS purchase: its loyalty events are on the same timeline.
    assert {"Points Earned", "Milestone Achieved"} <= {e.get("event") for e in timeline if e["context"]["channel"] == "loyalty"}
    history = httpx.get(server.url + "/v1/members/member-7/identities", headers=bearer).json()["history"]
    assert any(r["action"] == "merge" for r in history)


def test_member_read_errors(server: ServerProcess, keys: tuple[str, str]) -> None:
    ingest, read = keys
    bearer = {"Authorization": f"Bearer {read}"}
    assert httpx.get(server.url + "/v1/members/ghost", headers=bearer).status_code == 404
    assert httpx.get(server.url + "/v1/members/ghost").status_code == 401
    assert httpx.get(server.url + "/v1/members/ghost", headers={"Authorization": f"Bearer {ingest}"}).status_code == 403
    bad = httpx.get(server.url + "/v1/members/lookup", params={"type": "shoe_size", "value": "9"}, headers=bearer)
    assert bad.status_code == 400 and bad.json()["field"] == "type"
    missing = httpx.get(server.url + "/v1/members/lookup", params={"type": "email"}, headers=bearer)
    assert missing.status_code == 400 and missing.json()["field"] == "value"


def test_concurrent_identifies_for_one_person_make_one_profile(server: ServerProcess, keys: tuple[str, str]) -> None:
    ingest, read = keys

    def identify(n: int) -> None:
        call = {"userId": "racer", "anonymousId": f"device-{n}", "traits": {"email": "racer@example.com"}}
        assert httpx.post(server.url + "/v1/identify", json=call, auth=(ingest, "")).status_code == 200

    threads = [threading.Thread(target=identify, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bearer = {"Authorization": f"Bearer {read}"}

    def every_device_stitched() -> bool:
        answers = [httpx.get(server.url + "/v1/members/lookup", params={"type": "anonymous_id", "value": f"device-{n}"},
                             headers=bearer) for n in range(16)]
        return all(a.status_code == 200 and a.json()["user_id"] == "racer" for a in answers)

    assert wait_for(every_device_stitched)
    metrics = httpx.get(server.url + "/metrics").text
    assert "lcdp_members 1.0" in metrics


def test_sigkill_while_processing_then_restart_equals_replay(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    ingest = server.create_key("ingest")
    simulated = tmp_path / "sim.jsonl"
    assert run_cli("simulate", "--members", "40", "--days", "45", "--seed", "4", "--out", str(simulated)).returncode == 0
    server.start()
    importer = threading.Thread(target=run_cli, args=("import", str(simulated), "--target", server.url,
                                                      "--write-key", ingest))
    importer.start()
    time.sleep(1.5)
    server.kill()
    importer.join()
    server.start()  # resumes from the committed offset
    assert run_cli("import", str(simulated), "--target", server.url, "--write-key", ingest).returncode == 0

    def caught_up() -> bool:
        text = httpx.get(server.url + "/metrics").text
        return "lcdp_processor_lag_events 0.0" in text
    assert wait_for(caught_up, timeout=60)
    server.stop()

    def dump() -> dict[str, Profile]:
        db = sqlite3.connect(tmp_path / "data" / "profiles.db")
        try:
            rows = db.execute("SELECT member_id, state FROM profiles").fetchall()
        finally:
            db.close()
        return {member_id: msgspec.msgpack.decode(state, type=Profile) for member_id, state in rows}

    incremental = dump()
    assert len(incremental) >= 40
    assert run_cli("replay", "--data-dir", str(tmp_path / "data")).returncode == 0
    replayed = dump()
    assert set(replayed) == set(incremental)
    # The running server also advanced time-based loyalty transitions (to its wall clock),
    # which a replay of the log alone does not: compare loyalty states advanced to one instant.
    engine = LoyaltyEngine(load_program(retail_program_path()))
    now = int(time.time() * 1000)
    for member_id, profile in incremental.items():
        again = replayed[member_id]
        states = [loyalty_state(p) for p in (profile, again)]
        if states[0] is None:
            assert states[1] is None
        else:
            for state in states:
                engine.advance(state, now)
            assert states[0] == states[1], member_id
        # Segment memberships are time-dependent too: the server's sweep moved them at its wall clock.
        assert msgspec.structs.replace(profile, loyalty={}, segments={}) == \
            msgspec.structs.replace(again, loyalty={}, segments={})
