"""Webhooks against a real local receiver: signed JSON, exactly once, SSRF refusals, no redirects."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import time
from pathlib import Path

import pytest
from destination_support import NOW_MS, Request, StatusLog, eventually, fast_policy, message, run

from loyalty_cdp.adapters.destinations.base import PermanentFailure
from loyalty_cdp.adapters.destinations.webhook import (
    SIGNATURE_HEADER,
    WebhookDestination,
    address_refusal,
    parse_networks,
    sign,
    verify_signature,
)
from loyalty_cdp.adapters.outbox import Outbox
from loyalty_cdp.core.messages import MESSAGE_DELIVERED, MESSAGE_FAILED, MESSAGE_SENT
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.services.dispatcher import Dispatcher

SECRET = "whsec_test_secret"
LOCAL = ["127.0.0.1/32"]


def no_consent_needed(user_id: str) -> dict[str, bool]:
    return {}


def test_a_signed_webhook_arrives_exactly_once_and_verifies(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    verified: list[int] = []

    def receive(request: Request) -> tuple[int, dict[str, str], bytes]:
        # The receiver's side, as the docs tell integrators to write it.
        verified.append(verify_signature(SECRET, request.headers[SIGNATURE_HEADER.lower()], request.body, time.time()))
        return 200, {"X-Request-Id": "rcv-1"}, b"{}"

    sink.respond = receive
    hook = message("m-1", "hook", "webhook", "", data={"offer": "double-points", "tier": "Gold"}, body="Welcome to Gold")
    status = StatusLog()

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        destination = WebhookDestination("hook", f"{sink.url}/hooks/loyalty", SECRET, allow_networks=LOCAL)
        dispatcher = Dispatcher(outbox, [(destination, fast_policy())], on_status=status, consent_of=no_consent_needed)
        await dispatcher.start()
        assert await dispatcher.enqueue([hook]) == 1
        assert await dispatcher.enqueue([hook]) == 0  # the same idempotency key again
        await eventually(lambda: len(status.named(MESSAGE_DELIVERED)) == 1, what="delivery")
        assert await dispatcher.enqueue([hook]) == 0  # and again after delivery
        await dispatcher.close()
        assert outbox.finished("m-1").outcome == "delivered"
        outbox.close()

    run(scenario())
    assert len(sink.requests) == 1
    request = sink.requests[0]
    assert request.method == "POST" and request.path == "/hooks/loyalty"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == "m-1"
    assert request.headers["host"] == f"127.0.0.1:{sink.port}"
    body = json.loads(request.body)
    assert body["id"] == "m-1" and body["user_id"] == "member-1" and body["decision_id"] == "dec-m-1"
    assert body["data"] == {"offer": "double-points", "tier": "Gold"} and body["body"] == "Welcome to Gold"
    # The signature is HMAC-SHA256 of "t.body", computed here from the spec, not by our code.
    header = dict(part.split("=", 1) for part in request.headers[SIGNATURE_HEADER.lower()].split(","))
    expected = hmac.new(SECRET.encode(), header["t"].encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert header["v1"] == expected and verified == [int(header["t"])]
    sent, delivered = status.named(MESSAGE_SENT), status.named(MESSAGE_DELIVERED)
    assert [e.message_id for e in sent + delivered] == ["m-1:sent", "m-1:delivered"]
    assert json.loads(sent[0].body)["properties"]["provider_message_id"] == "rcv-1"


def test_verify_signature_refuses_tampering_wrong_secrets_and_replays() -> None:
    body = b'{"id":"m-1"}'
    header = sign(SECRET, 1_700_000_000, body)
    assert verify_signature(SECRET, header, body, now_s=1_700_000_100) == 1_700_000_000
    rotated = f"{header},v1={'0' * 64}"  # several signatures: any match passes
    assert verify_signature(SECRET, rotated, body, now_s=1_700_000_000) == 1_700_000_000
    for bad_header, bad_body, now in (
        (header, b'{"id":"m-2"}', 1_700_000_000),  # body changed
        (sign("other", 1_700_000_000, body), body, 1_700_000_000),  # wrong secret
        (header, body, 1_700_000_301),  # replayed after the 300 s tolerance
        (header, body, 1_699_999_699),  # from the future
        ("v1=abc", body, 1_700_000_000),  # no timestamp
        ("t=1700000000,v1=é", body, 1_700_000_000),  # non-ASCII signature: refused, not a crash
    ):
        with pytest.raises(InvalidInput):
            verify_signature(SECRET, bad_header, bad_body, now_s=now)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "224.0.0.1", "0.0.0.0", "100.64.0.1",
     "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "2002:7f00:1::", "ff02::1"],
)
def test_non_public_addresses_are_refused_unless_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert address_refusal(ip) is not None
    assert address_refusal(ip, parse_networks([address])) is None


def test_public_addresses_pass() -> None:
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert address_refusal(ipaddress.ip_address(address)) is None


def test_a_webhook_to_localhost_is_refused_without_configuration(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    status = StatusLog()

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        # "localhost" resolves to loopback addresses only: every one is checked and refused.
        destination = WebhookDestination("hook", f"http://localhost:{sink.port}/x", SECRET)
        dispatcher = Dispatcher(outbox, [(destination, fast_policy())], on_status=status, consent_of=no_consent_needed)
        await dispatcher.start()
        await dispatcher.enqueue([message("m-1", "hook", "webhook", "")])
        await eventually(lambda: len(status.named(MESSAGE_FAILED)) == 1, what="refusal")
        await dispatcher.close()
        [letter] = outbox.dead_letters()
        assert letter.attempts == 1 and "refused localhost" in letter.reason and "loopback" in letter.reason
        outbox.close()

    run(scenario())
    assert sink.requests == []


def test_redirects_are_not_followed(make_sink) -> None:
    target, redirector = make_sink(), make_sink()
    redirector.respond = lambda request: (302, {"Location": f"{target.url}/elsewhere"}, b"")

    async def scenario() -> None:
        destination = WebhookDestination("hook", redirector.url, SECRET, allow_networks=LOCAL)
        try:
            with pytest.raises(PermanentFailure, match="redirects are not followed"):
                await destination.send(message("m-1", "hook", "webhook", ""), NOW_MS)
        finally:
            await destination.aclose()

    run(scenario())
    assert len(redirector.requests) == 1 and target.requests == []
