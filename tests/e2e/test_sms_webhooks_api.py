"""Twilio webhooks over HTTP: inbound STOP/START and delivery status callbacks, against a real server.

Requests are signed with ``X-Twilio-Signature`` exactly as Twilio signs them (HMAC-SHA1 of the
URL and the sorted form fields, keyed with the auth token the program's Twilio destination
uses); unsigned or forged ones answer 403 and change nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from loyalty_cdp.adapters.decisionstore import Batch
from loyalty_cdp.adapters.destinations.factory import sms_opt_out_store
from loyalty_cdp.adapters.destinations.twilio import request_signature
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.api.metrics import Metrics
from loyalty_cdp.core.consent import STRICT_POLICY, allowed, consent_from_builtins
from loyalty_cdp.core.decisioning import Chosen, Decision
from loyalty_cdp.core.messages import OutboundMessage, message_id_for, status_call
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.services.activation import Activation
from loyalty_cdp.settings import Settings
from loyalty_cdp.testing import ServerProcess

TOKEN = "e2e-twilio-auth-token"
ENV = {"E2E_TWILIO": TOKEN, "LOYALTY_CDP_AUDIENCE_EVERY_S": "0"}
PHONE = "+14155550142"


def write_program(path: Path) -> Path:
    base = retail_program_path().read_text().split("\n# --- Destinations")[0]
    path.write_text(base + """
destinations:
  - name: sms
    type: twilio
    settings: {account_sid: AC00000000000000000000000000000000, auth_token_env: E2E_TWILIO,
               from_number: "+14155550100", base_url: "http://127.0.0.1:9"}
""")
    return path


@pytest.fixture()
def twilio_server(tmp_path: Path) -> Iterator[ServerProcess]:
    program = write_program(tmp_path / "program.yaml")
    process = ServerProcess(tmp_path / "data", ENV, "--config", str(program))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def post_signed(client: httpx.Client, url: str, form: dict[str, str], token: str = TOKEN) -> httpx.Response:
    return client.post(url, data=form, headers={"X-Twilio-Signature": request_signature(token, url, form)})


def logged(data_dir: Path) -> list[dict[str, Any]]:
    log = SqliteEventLog(data_dir / "events.db")
    try:
        return [msgspec.json.decode(e.body) for e in log.read(0, 10_000)]
    finally:
        log.close()


def sms_allowed(client: httpx.Client, server: ServerProcess, key: str, user_id: str) -> bool | None:
    answer = client.get(f"{server.url}/v1/members/{user_id}", headers={"Authorization": f"Bearer {key}"})
    if answer.status_code != 200:
        return None
    return allowed(consent_from_builtins(answer.json()["consent"]), "sms", STRICT_POLICY)


def wait_until(check: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_stop_opts_the_number_out_and_withdraws_sms_consent_start_restores_them(
    twilio_server: ServerProcess,
) -> None:
    server = twilio_server
    write_key, read_key = server.create_key("ingest"), server.create_key("read")
    url = f"{server.url}/v1/sms/inbound"
    with httpx.Client(timeout=10) as client:
        member = {"userId": "member-42", "traits": {"phone": "(415) 555-0142"}, "timestamp": "2026-01-01T00:00:00Z",
                  "context": {"consent": {"categoryPreferences": {"SMS Marketing": True}}}}
        assert client.post(f"{server.url}/v1/identify", json=member, auth=(write_key, "")).status_code == 200
        wait_until(lambda: sms_allowed(client, server, read_key, "member-42") is True, "the identify is folded")

        stop = {"MessageSid": "SM0001", "From": PHONE, "To": "+14155550100", "Body": " stop "}
        answer = post_signed(client, url, stop)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
        assert answer.text.endswith("<Response></Response>")
        assert post_signed(client, url, stop).status_code == 200  # Twilio retrying: one withdrawal
        wait_until(lambda: sms_allowed(client, server, read_key, "member-42") is False, "STOP withdraws consent")
        opt_outs = sms_opt_out_store(server.data_dir)
        try:
            assert opt_outs.is_opted_out(PHONE)
            start = {"MessageSid": "SM0002", "From": PHONE, "To": "+14155550100", "Body": "START"}
            assert post_signed(client, url, start).status_code == 200
            assert not opt_outs.is_opted_out(PHONE)
        finally:
            opt_outs.close()
        wait_until(lambda: sms_allowed(client, server, read_key, "member-42") is True, "START grants it again")
        help_text = {"MessageSid": "SM0003", "From": PHONE, "To": "+14155550100", "Body": "HELP"}
        assert post_signed(client, url, help_text).status_code == 200
    server.stop()
    changes = [e for e in logged(server.data_dir) if e.get("event") == "Consent Updated"]
    assert [(e["properties"]["purpose"], e["properties"]["granted"]) for e in changes] == [("sms", False), ("sms", True)]
    assert all(e["userId"] == "member-42" and e["properties"]["source"] == "sms_keyword" for e in changes)


def test_unsigned_forged_or_malformed_webhooks_are_refused_and_change_nothing(twilio_server: ServerProcess) -> None:
    server = twilio_server
    url = f"{server.url}/v1/sms/inbound"
    stop = {"MessageSid": "SM0009", "From": PHONE, "To": "+14155550100", "Body": "STOP"}
    with httpx.Client(timeout=10) as client:
        unsigned = client.post(url, data=stop)
        assert unsigned.status_code == 403 and "X-Twilio-Signature" in unsigned.json()["message"]
        assert post_signed(client, url, stop, token="someone-else").status_code == 403
        assert post_signed(client, url, {"Body": "STOP"}).json()["field"] == "From"
        assert post_signed(client, url, {"From": "not a phone", "Body": "STOP"}).status_code == 400
        not_form = client.post(url, json=stop)
        assert not_form.status_code == 400 and not_form.json()["field"] == "content-type"
        status = f"{server.url}/v1/sms/status?message_id=msg_x"
        assert client.post(status, data={"MessageStatus": "delivered"}).status_code == 403
        no_id = f"{server.url}/v1/sms/status"
        assert post_signed(client, no_id, {"MessageStatus": "delivered"}).json()["field"] == "message_id"
    opt_outs = sms_opt_out_store(server.data_dir)
    try:
        assert not opt_outs.is_opted_out(PHONE)
    finally:
        opt_outs.close()


def sent_sms(data_dir: Path, program: Path, decision_id: str) -> str:
    """Record, as the running dispatcher would have, that an SMS of a stored decision was sent."""
    activation = Activation(Settings(data_dir=data_dir), program, lambda calls: None, Metrics(), environ=ENV)
    try:
        chosen = Chosen(offer_id="win-back-500", name="We miss you", channel="sms", score=1.0, send_at=0,
                        content={"body": "Northwind misses you"}, reason="lapse risk")
        decision = Decision(decision_id=decision_id, member_id="m-42", at=1_000, action="send", reason="trigger",
                            automated=True, user_id="member-42", trigger_id="lapse-risk-win-back", chosen=[chosen])
        activation.decisions.write(Batch(decisions=[decision]), 2_000)
        message = OutboundMessage(message_id=message_id_for(decision_id, "sms"), decision_id=decision_id,
                                  user_id="member-42", destination="sms", channel="sms", recipient=PHONE,
                                  created_at=int(time.time() * 1000) - 500)
        activation.remember_sent([status_call(message, "Message Sent", int(time.time() * 1000), attempts=1,
                                              provider_id="SM0100")])
        return message.message_id
    finally:
        asyncio.run(activation.close())


def test_status_callbacks_report_delivered_and_undelivered_messages_into_the_log(tmp_path: Path) -> None:
    program = write_program(tmp_path / "program.yaml")
    delivered_id = sent_sms(tmp_path / "data", program, "dec-delivered")
    bounced_id = sent_sms(tmp_path / "data", program, "dec-bounced")
    server = ServerProcess(tmp_path / "data", ENV, "--config", str(program)).start()
    try:
        with httpx.Client(timeout=10) as client:
            url = f"{server.url}/v1/sms/status?message_id={delivered_id}"
            form = {"MessageSid": "SM0100", "MessageStatus": "delivered", "To": PHONE, "From": "+14155550100"}
            assert post_signed(client, url, form).json() == {"success": True, "recorded": True}
            queued = {**form, "MessageStatus": "sent"}
            assert post_signed(client, url, queued).json()["recorded"] is False
            url = f"{server.url}/v1/sms/status?message_id={bounced_id}"
            form = {"MessageSid": "SM0101", "MessageStatus": "undelivered", "ErrorCode": "30003", "To": PHONE}
            assert post_signed(client, url, form).json()["recorded"] is True
            unknown = f"{server.url}/v1/sms/status?message_id=msg_unknown"
            assert post_signed(client, unknown, {"MessageStatus": "delivered"}).json()["recorded"] is False
            opted = {"MessageSid": "SM0102", "MessageStatus": "failed", "ErrorCode": "21610", "To": "+14155550143"}
            post_signed(client, f"{server.url}/v1/sms/status?message_id=msg_other", opted)
    finally:
        server.stop()
    events = {e["event"]: e for e in logged(tmp_path / "data") if e.get("event", "").startswith("Message")}
    assert set(events) == {"Message Delivered", "Message Bounced"}
    delivered = events["Message Delivered"]
    assert delivered["userId"] == "member-42" and delivered["messageId"] == f"{delivered_id}:delivered"
    assert delivered["properties"]["decision_id"] == "dec-delivered"
    assert delivered["properties"]["provider_message_id"] == "SM0100"
    assert delivered["properties"]["latency_ms"] >= 500
    assert events["Message Bounced"]["properties"]["reason"] == "Twilio undelivered (error 30003)"
    opt_outs = sms_opt_out_store(tmp_path / "data")
    try:
        assert opt_outs.is_opted_out("+14155550143")
    finally:
        opt_outs.close()
