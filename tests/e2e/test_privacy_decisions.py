"""Privacy across decisions, messages and audiences, against a real server running the example program.

A member who granted consent (``context.consent.categoryPreferences``) crosses Silver with a
$620 purchase: the tier-upgrade trigger decides, and the welcome goes out by email and SMS
(and to the CRM webhook) through local sinks; the member then texts STOP, and the periodic
audience export lists their hashed email and phone. The access export must hold the decision
(reason, inputs, candidates, outcomes), the messages, the segment memberships and the audience
rows, and the ADMT account must explain the decision. After the erasure the decision store,
the outbox, the activation tables, the STOP list and the audience files hold nothing of them,
the CRM webhook was told (a signed ``member.erased``), no byte of any file under the data
directory holds any of their identifiers, contact values or hashes, and another member's
decisions, messages and audience rows are untouched.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import yaml

from loyalty_cdp.adapters.destinations.twilio import request_signature
from loyalty_cdp.adapters.keystore import KeyStore
from loyalty_cdp.demo_sinks import DemoSinks
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.testing import ServerProcess, wait_for

TOKEN, FCM_TOKEN, HOOK_SECRET = "e2e-privacy-twilio", "e2e-privacy-fcm", "e2e-privacy-hook"
ENV = {"E2E_TWILIO": TOKEN, "E2E_FCM": FCM_TOKEN, "E2E_HOOK": HOOK_SECRET, "E2E_TRACK": "e2e-privacy-track",
       "LOYALTY_CDP_AUDIENCE_EVERY_S": "1"}
FAST = {"concurrency": 2, "timeout_s": 2, "backoff_base_s": 0.05, "backoff_cap_s": 0.5, "lease_s": 10, "poll_s": 0.2}
CONSENT = {"categoryPreferences": {"Email Marketing": True, "SMS Marketing": True, "Push Notifications": True,
                                   "Advertising": True, "Personalization": True}}

# The person, and each value in every form a store or a file could keep it.
USER_ID = "qv-member-5521"
ANON = "qv-web-anon-5521"
EMAIL = "Quentin.Vale-qv@Example.net"
PHONE = "+1 415 555 0177"
E164 = "+14155550177"
PUSH = "qv-push-token:APA91bQV5521"  # the other member's token differs
FIRST_NAME = "Qventin"
TRACES = [USER_ID, ANON, EMAIL, EMAIL.lower(), PHONE, E164, E164[1:], PUSH, FIRST_NAME]
HASHES = [hashlib.sha256(value.encode()).hexdigest() for value in (EMAIL.lower(), E164, E164[1:])]
OTHER = "qv-other-member"
OTHER_EMAIL = "other.member@example.net"


def privacy_program(path: Path, server_url: str, sinks: DemoSinks) -> Path:
    """The example program delivering to the sinks; its tier welcome goes out by email and by SMS, without
    holdout or quiet hours so that the test depends neither on the member's arm nor on the time of day."""
    documents = list(yaml.safe_load_all(retail_program_path().read_text()))
    latest = documents[-1]
    policy = latest["offers"]["contact_policy"]["channels"]
    for channel in ("sms", "push"):
        policy[channel].pop("quiet_hours", None)
    welcome = next(o for o in latest["offers"]["catalog"] if o["id"] == "tier-welcome")
    latest["offers"]["catalog"].append({**welcome, "id": "tier-welcome-sms", "content": {"sms": {
        "body": "Northwind: welcome to {{ tier }}, {{ first_name or 'friend' }}! Reply STOP to opt out."}}})
    triggers = [t for t in latest["triggers"] if t["id"] != "tier-upgrade-welcome"]
    latest["triggers"] = [
        *triggers,
        {"id": "tier-upgrade-email", "type": "event", "event": "Tier Upgraded", "offers": ["tier-welcome"],
         "channels": ["email"]},
        {"id": "tier-upgrade-sms", "type": "event", "event": "Tier Upgraded", "offers": ["tier-welcome-sms"],
         "channels": ["sms"]},
    ]
    latest["destinations"] = [
        {"name": "email", "type": "smtp", "delivery": FAST, "settings": {
            "from_address": "rewards@northwind.example", "host": "127.0.0.1", "port": sinks.smtp.port,
            "security": "none", "tracking_base_url": server_url, "tracking_secret_env": "E2E_TRACK"}},
        {"name": "sms", "type": "twilio", "delivery": FAST, "settings": {
            "account_sid": sinks.twilio.account_sid, "auth_token_env": "E2E_TWILIO", "from_number": "+14155550100",
            "base_url": sinks.twilio.url, "status_callback_url": f"{server_url}/v1/sms/status"}},
        {"name": "push", "type": "fcm", "delivery": FAST, "settings": {
            "project_id": sinks.fcm.project_id, "access_token_env": "E2E_FCM", "base_url": sinks.fcm.url}},
        {"name": "crm", "type": "webhook", "delivery": FAST, "settings": {
            "url": f"{sinks.webhook.url}/loyalty", "secret_env": "E2E_HOOK", "allow_networks": ["127.0.0.0/8"]}},
        {"name": "retail-media", "type": "audience", "settings": {"directory": "audiences", "default_region": "US"}},
    ]
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


@pytest.fixture()
def running(tmp_path: Path) -> Iterator[tuple[ServerProcess, DemoSinks, dict[str, str]]]:
    sinks = DemoSinks.start(twilio_auth_token=TOKEN, fcm_access_token=FCM_TOKEN, webhook_secret=HOOK_SECRET)
    program = tmp_path / "program.yaml"
    server = ServerProcess(tmp_path / "data", ENV, "--config", str(program))
    privacy_program(program, server.url, sinks)
    store = KeyStore(server.data_dir / "keys.db")
    try:
        keys = {scope: store.create(frozenset({scope}))[0] for scope in ("ingest", "read", "privacy")}
    finally:
        store.close()
    try:
        server.start()
        yield server, sinks, keys
    finally:
        server.stop()
        sinks.stop()


def member_calls(user_id: str, anonymous_id: str, email: str, phone: str | None, order: str,
                 first_name: str) -> list[dict[str, Any]]:
    """Anonymous browsing, a login with consent and contact traits, and a $620 purchase (crosses Silver)."""
    token = PUSH if user_id == USER_ID else f"{user_id}-token:APA91b"
    traits: dict[str, Any] = {"email": email, "first_name": first_name, "push_token": token}
    if phone is not None:
        traits["phone"] = phone
    return [
        {"type": "page", "anonymousId": anonymous_id, "name": "TVs", "context": {"channel": "web"},
         "messageId": f"{user_id}-page"},
        {"type": "identify", "anonymousId": anonymous_id, "userId": user_id, "traits": traits,
         "context": {"channel": "web", "consent": CONSENT}, "messageId": f"{user_id}-login"},
        {"type": "track", "userId": user_id, "event": "Order Completed", "context": {"channel": "pos"},
         "messageId": f"{user_id}-order", "properties": {
             "order_id": order, "total": 620.0, "currency": "USD", "products": [
                 {"product_id": "TV-1", "sku": "TV-1", "category": "Electronics", "brand": "Vizio", "price": 620.0,
                  "quantity": 1}]}},
    ]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def privacy_request(client: httpx.Client, server: ServerProcess, key: str, body: dict[str, Any]) -> dict[str, Any]:
    made = client.post(f"{server.url}/v1/privacy/requests", json=body, headers=bearer(key))
    assert made.status_code == 201 and made.json()["status"] == "completed", made.text
    return made.json()


def export_of(client: httpx.Client, server: ServerProcess, key: str, kind: str) -> dict[str, Any]:
    made = privacy_request(client, server, key, {"type": kind, "identifier": {"type": "email", "value": EMAIL}})
    answer = client.get(server.url + made["result"]["export"], headers=bearer(key))
    assert answer.status_code == 200, answer.text
    return answer.json()


def sent_sms(client: httpx.Client, server: ServerProcess, key: str) -> dict[str, Any] | None:
    """The access export once the member's SMS is recorded as sent (its send time is kept for callbacks)."""
    export = export_of(client, server, key, "access")
    if not export["member_found"]:  # the processor has not folded the member's events yet
        return None
    messages = export["messages"]["records"]
    done = any(m["channel"] == "sms" and m.get("sent_at") for m in messages)
    return export if done and any(m["channel"] == "email" and m["status"] == "sent" for m in messages) else None


def audience_rows(data_dir: Path) -> set[str]:
    """Every cell of every audience file."""
    return {cell for path in (data_dir / "audiences").rglob("*.csv")
            for line in path.read_text().splitlines() for cell in line.split(",")}


def outbox_rows(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(data_dir / "outbox.db", timeout=10)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def traces_in_files(data_dir: Path) -> list[tuple[str, str]]:
    """(file, trace) for every identifier, contact value or audience hash found in the bytes of any file."""
    found = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # an exporter's temporary file, renamed since it was listed
            continue
        for trace in [*TRACES, *HASHES]:
            if trace.encode() in data or trace.lower().encode() in data:
                found.append((str(path.relative_to(data_dir)), trace))
    return found


def test_decisions_messages_and_audiences_are_exported_then_erased_everywhere(
    running: tuple[ServerProcess, DemoSinks, dict[str, str]],
) -> None:
    server, sinks, keys = running
    data = server.data_dir
    with httpx.Client(timeout=30) as client:
        calls = (member_calls(USER_ID, ANON, EMAIL, PHONE, "qv-order-1", FIRST_NAME)
                 + member_calls(OTHER, "qv-other-anon", OTHER_EMAIL, None, "qv-order-2", "Otto"))
        answer = client.post(f"{server.url}/v1/batch", json={"batch": calls}, auth=(keys["ingest"], ""))
        assert answer.status_code == 200, answer.text

        export = wait_for(lambda: sent_sms(client, server, keys["privacy"]), "the email and SMS sent")
        stop = {"MessageSid": "SMqv0001", "From": E164, "To": "+14155550100", "Body": "STOP"}
        inbound = f"{server.url}/v1/sms/inbound"
        answer = client.post(inbound, data=stop, headers={"X-Twilio-Signature": request_signature(TOKEN, inbound,
                                                                                                   stop)})
        assert answer.status_code == 200, answer.text
        wait_for(lambda: HASHES[0] in audience_rows(data) and hashlib.sha256(OTHER_EMAIL.encode()).hexdigest()
                 in audience_rows(data), "both members in an audience export")

        # -- access: the decision, its messages, the memberships, the audience rows --------------
        export = export_of(client, server, keys["privacy"], "access")
        assert export["format"] == 2 and export["member_found"]
        decisions = {d["trigger_id"]: d for d in export["decisions"]["records"]}
        assert {"tier-upgrade-email", "tier-upgrade-sms"} <= set(decisions)
        upgrade = decisions["tier-upgrade-email"]
        assert upgrade["action"] == "send" and upgrade["user_id"] == USER_ID and upgrade["member_id"] == USER_ID
        assert upgrade["reason"].startswith("Send “Welcome to your new tier” by email")
        assert upgrade["inputs"].get("loyalty.tier") == "Silver"
        assert upgrade["candidates"] and upgrade["candidates"][0]["offer_id"] == "tier-welcome"
        assert upgrade["chosen"][0]["content"]["subject"] == f"Welcome to Silver, {FIRST_NAME}!"
        assert isinstance(upgrade["outcomes"], dict)
        messages = export["messages"]["records"]
        by_channel = {(m["destination"], m["channel"]): m for m in messages
                      if m["decision_id"] in {d["decision_id"] for d in decisions.values()}}
        assert {("email", "email"), ("sms", "sms"), ("crm", "webhook")} <= set(by_channel)
        email = by_channel[("email", "email")]
        assert email["status"] == "sent" and email["finished_at"] >= upgrade["at"]
        sms = by_channel[("sms", "sms")]
        assert sms["status"] in ("sent", "delivered") and sms["sent_at"] and sms["created_at"] and sms["attempts"] == 1
        assert f"Welcome to Silver, {FIRST_NAME}!" in {m["Subject"] for m in sinks.smtp.messages
                                                       if m["To"] == EMAIL.lower()}
        assert {row["segment_id"] for row in export["segments"]["current"]} >= {"new-members"}
        assert any(t["segment_id"] == "new-members" and t["kind"] == "entered" for t in export["segments"]["history"])
        listed = {(a["destination"], a["segment"]) for a in export["audiences"]["records"]}
        assert ("retail-media", "new-members") in listed and export["audiences"]["sale_sharing_allowed"] is True
        assert all(a["rows"] == 2 for a in export["audiences"]["records"])  # the email and the phone
        admt = {d["decision_id"]: d for d in export["admt"]["decisions"]}
        account = admt[upgrade["decision_id"]]
        assert account["reason"] == upgrade["reason"] and account["rule_based_only"] is True
        assert account["automated_decision_making_allowed"] is True
        assert "Welcome to your new tier" in account["summary"] and "fixed rule" in account["logic"]
        for section in ("decisions", "messages", "audiences"):
            assert "not" not in export[section].get("note", "").split()  # no "not stored yet" notes remain
        admt_only = export_of(client, server, keys["privacy"], "admt_access")
        assert upgrade["decision_id"] in {d["decision_id"] for d in admt_only["decisions"]}
        assert "decisions_note" not in admt_only

        decision_ids = [d["decision_id"] for d in export["decisions"]["records"]]
        message_ids = [m["message_id"] for m in messages]
        other_decisions = outbox_rows(data, "SELECT count(*) FROM decisions WHERE member_id = ?", (OTHER,))[0][0]
        other_finished = outbox_rows(data, "SELECT count(*) FROM outbox_finished")[0][0] - len(
            [m for m in messages if m["status"] in ("sent", "delivered", "suppressed")])
        assert other_decisions >= 1 and other_finished >= 1
        assert outbox_rows(data, "SELECT count(*) FROM activation_sent WHERE decision_id IN (SELECT value FROM "
                                 "json_each(?))", (msgspec.json.encode(decision_ids).decode(),))[0][0] == 1
        assert any(hook.fields.get("user_id") == USER_ID for hook in sinks.webhook.accepted_items())

        # -- erasure -------------------------------------------------------------------------------
        erased = privacy_request(client, server, keys["privacy"],
                                 {"type": "erasure", "identifier": {"type": "phone", "value": PHONE}})
        result = erased["result"]
        assert result["member_found"] is True and result["decisions_deleted"] == len(decision_ids)
        assert result["sent_rows_deleted"] == 1 and result["sms_opt_outs_deleted"] == 1
        assert result["audience_rows_deleted"] >= 2 and result["destinations_notified"] == {"crm": "delivered"}
        print(f"\nerasure with decisions, messages and audiences: answered in {result['seconds'] * 1000:.0f} ms; "
              f"suppression {result['suppressed_in_s'] * 1000:.1f} ms in, every store purged "
              f"{result['purged_in_s'] * 1000:.0f} ms later; outbox vacuumed: {result['outbox_vacuumed']}")
        notices = [hook.fields for hook in sinks.webhook.accepted_items() if hook.fields.get("type") == "member.erased"]
        assert len(notices) == 1 and notices[0]["user_ids"] == [USER_ID]
        assert notices[0]["request_id"] == erased["id"]

        # Nothing of them in the decision store, the outbox, the activation tables, the STOP list.
        ids = (msgspec.json.encode(decision_ids).decode(),)
        for table in ("decisions", "decision_outcomes", "activation_sent"):
            assert outbox_rows(data, f"SELECT count(*) FROM {table} WHERE decision_id IN "
                                     "(SELECT value FROM json_each(?))", ids) == [(0,)], table
        messages_held = (msgspec.json.encode(message_ids).decode(),)
        for table in ("outbox_messages", "outbox_dead_letters", "outbox_finished"):
            assert outbox_rows(data, f"SELECT count(*) FROM {table} WHERE message_id IN "
                                     "(SELECT value FROM json_each(?))", messages_held) == [(0,)], table
        for table in ("decisions", "segment_members", "segment_transitions"):
            assert outbox_rows(data, f"SELECT count(*) FROM {table} WHERE member_id IN (?, ?)",
                               (USER_ID, f"anon:{ANON}")) == [(0,)], table
        optouts = sqlite3.connect(data / "sms_optouts.db")
        try:
            assert optouts.execute("SELECT count(*) FROM sms_opt_outs").fetchone() == (0,)
        finally:
            optouts.close()
        cells = audience_rows(data)
        assert not set(HASHES) & cells
        assert hashlib.sha256(OTHER_EMAIL.encode()).hexdigest() in cells  # the other member stays listed
        assert outbox_rows(data, "SELECT count(*) FROM decisions WHERE member_id = ?", (OTHER,)) == [(other_decisions,)]
        assert outbox_rows(data, "SELECT count(*) FROM outbox_finished")[0][0] == other_finished

        # Later exports leave them out; no byte of any file holds them, running or stopped.
        time.sleep(2.5)
        assert not set(HASHES) & audience_rows(data)
        assert traces_in_files(data) == []
        gone = client.get(f"{server.url}/v1/members/{USER_ID}", headers=bearer(keys["read"]))
        assert gone.status_code == 404

        # -- opt-out of sale/sharing: the other member leaves the audience files at once -----------
        other_hash = hashlib.sha256(OTHER_EMAIL.encode()).hexdigest()
        assert other_hash in audience_rows(data)
        opted = privacy_request(client, server, keys["privacy"],
                                {"type": "opt_out_sale", "identifier": {"type": "email", "value": OTHER_EMAIL}})
        assert opted["result"]["audience_rows_deleted"] >= 1
        assert other_hash not in audience_rows(data)
        time.sleep(2.5)  # and the periodic export leaves them out
        assert other_hash not in audience_rows(data)
    server.stop()
    assert traces_in_files(data) == []
