"""End to end: a purchase that crosses a tier threshold is delivered by email, SMS, push and a signed webhook, once each.

A real server runs the example program with its tier-upgrade trigger split into one trigger
per channel (a decision picks one channel) and destinations pointing at local sinks that
check each vendor's wire format: aiosmtpd, a Twilio-compatible API that posts a signed
delivery callback back to the server, an FCM HTTP v1-compatible API, and a webhook receiver
that verifies the signature and drops repeats.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.demo_sinks import DemoSinks
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.testing import ServerProcess

TOKEN, FCM_TOKEN, HOOK_SECRET = "e2e-twilio", "e2e-fcm", "e2e-hook"
ENV = {"E2E_TWILIO": TOKEN, "E2E_FCM": FCM_TOKEN, "E2E_HOOK": HOOK_SECRET, "E2E_TRACK": "e2e-track",
       "LOYALTY_CDP_AUDIENCE_EVERY_S": "0"}
CONSENT = {"categoryPreferences": {"Email Marketing": True, "SMS Marketing": True, "Push Notifications": True}}
FAST = {"concurrency": 2, "timeout_s": 2, "backoff_base_s": 0.05, "backoff_cap_s": 0.5, "lease_s": 10, "poll_s": 0.2}


def tier_program(path: Path, server_url: str, sinks: DemoSinks) -> Path:
    """The example program, its tier-upgrade welcome sent on three channels, delivering to the sinks."""
    documents = list(yaml.safe_load_all(retail_program_path().read_text()))
    latest = documents[-1]
    policy = latest["offers"]["contact_policy"]["channels"]
    for channel in ("sms", "push"):
        policy[channel].pop("quiet_hours", None)  # the test must not depend on the time of day
    welcome = next(o for o in latest["offers"]["catalog"] if o["id"] == "tier-welcome")
    sms = {**welcome, "id": "tier-welcome-sms", "content": {"sms": {
        "body": "Northwind: welcome to {{ tier }}, {{ first_name or 'friend' }}! Reply STOP to opt out."}}}
    push = {**welcome, "id": "tier-welcome-push", "content": {"push": welcome["content"]["push"]}}
    latest["offers"]["catalog"] += [sms, push]
    latest["triggers"] = [
        {"id": f"tier-upgrade-{channel}", "type": "event", "event": "Tier Upgraded", "offers": [offer],
         "channels": [channel]}
        for channel, offer in (("email", "tier-welcome"), ("sms", "tier-welcome-sms"), ("push", "tier-welcome-push"))
    ]
    latest["destinations"] = [
        {"name": "email", "type": "smtp", "delivery": FAST, "settings": {
            "from_address": "rewards@northwind.example", "from_name": "Northwind Rewards", "host": "127.0.0.1",
            "port": sinks.smtp.port, "security": "none", "tracking_base_url": server_url,
            "tracking_secret_env": "E2E_TRACK", "unsubscribe_mailto": "unsubscribe@northwind.example"}},
        {"name": "sms", "type": "twilio", "delivery": FAST, "settings": {
            "account_sid": sinks.twilio.account_sid, "auth_token_env": "E2E_TWILIO", "from_number": "+14155550100",
            "base_url": sinks.twilio.url, "status_callback_url": f"{server_url}/v1/sms/status"}},
        {"name": "push", "type": "fcm", "delivery": FAST, "settings": {
            "project_id": sinks.fcm.project_id, "access_token_env": "E2E_FCM", "base_url": sinks.fcm.url}},
        {"name": "crm", "type": "webhook", "delivery": FAST, "settings": {
            "url": f"{sinks.webhook.url}/decisions", "secret_env": "E2E_HOOK", "allow_networks": ["127.0.0.0/8"]}},
    ]
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


@pytest.fixture()
def delivering(tmp_path: Path) -> Iterator[tuple[ServerProcess, DemoSinks]]:
    sinks = DemoSinks.start(twilio_auth_token=TOKEN, fcm_access_token=FCM_TOKEN, webhook_secret=HOOK_SECRET)
    program = tmp_path / "program.yaml"
    server = ServerProcess(tmp_path / "data", ENV, "--config", str(program))
    tier_program(program, server.url, sinks)
    try:
        server.start()
        yield server, sinks
    finally:
        server.stop()
        sinks.stop()


def post(client: httpx.Client, server: ServerProcess, key: str, path: str, body: dict[str, Any]) -> None:
    answer = client.post(f"{server.url}{path}", json=body, auth=(key, ""))
    assert answer.status_code == 200, answer.text


def test_a_purchase_crossing_silver_is_delivered_on_every_channel_exactly_once(
    delivering: tuple[ServerProcess, DemoSinks],
) -> None:
    server, sinks = delivering
    key = server.create_key("ingest")
    with httpx.Client(timeout=10) as client:
        post(client, server, key, "/v1/identify", {
            "userId": "member-ann", "context": {"consent": CONSENT, "channel": "app"},
            "traits": {"first_name": "Ann", "email": "ann.lee@example.com", "phone": "+1 415 555 0142",
                       "push_token": "fcm-token-of-ann:APA91b"}})
        post(client, server, key, "/v1/track", {
            "userId": "member-ann", "event": "Order Completed", "context": {"channel": "pos"},
            "properties": {"order_id": "o-ann-1", "total": 620.0, "currency": "USD", "products": [
                {"product_id": "TV-1", "sku": "TV-1", "category": "Electronics", "price": 620.0, "quantity": 1}]}})
        deadline = time.monotonic() + 20
        while sinks.counts() != (1, 1, 1, 3):
            assert time.monotonic() < deadline, f"delivered (email, sms, push, webhooks): {sinks.counts()}"
            time.sleep(0.05)
        time.sleep(1.5)  # long enough for any repeat to show up
    assert sinks.counts() == (1, 1, 1, 3)
    assert sinks.twilio.refused == sinks.fcm.refused == sinks.webhook.refused == sinks.webhook.repeats == 0

    email = sinks.smtp.messages[0]
    assert email["To"] == "ann.lee@example.com" and email["Subject"] == "Welcome to Silver, Ann!"
    html = email.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "You are now Silver" in html and "/v1/email/open?" in html
    assert f"{server.url}/v1/email/unsubscribe?" in email["List-Unsubscribe"]
    sms = sinks.twilio.accepted_items()[0].fields
    assert sms["To"] == "+14155550142" and sms["Body"] == "Northwind: welcome to Silver, Ann! Reply STOP to opt out."
    push = sinks.fcm.accepted_items()[0].fields
    assert push["token"] == "fcm-token-of-ann:APA91b" and push["notification"]["title"] == "You made Silver!"
    webhooks = [item.fields for item in sinks.webhook.accepted_items()]
    assert sorted(w["data"]["channel"] for w in webhooks) == ["email", "push", "sms"]
    assert {w["user_id"] for w in webhooks} == {"member-ann"} and len({w["id"] for w in webhooks}) == 3
    assert next(w for w in webhooks if w["data"]["channel"] == "email")["data"]["grant"]["rule"]["points"] == 100

    deadline = time.monotonic() + 10
    while sinks.twilio.callbacks_sent < 1:  # the sink's signed "delivered" callback reached the server
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.stop()
    log = SqliteEventLog(server.data_dir / "events.db")
    try:
        events = [msgspec.json.decode(e.body) for e in log.read(0, 10_000)]
    finally:
        log.close()
    status = [(e["event"], e["properties"]["destination"]) for e in events
              if e.get("event", "").startswith("Message ")]
    assert sorted(status) == sorted([("Message Sent", "email"), ("Message Sent", "sms"), ("Message Sent", "push"),
                                     *[("Message Sent", "crm")] * 3, *[("Message Delivered", "crm")] * 3,
                                     ("Message Delivered", "sms")])
    assert all(e["userId"] == "member-ann" for e in events if e.get("event", "").startswith("Message "))
