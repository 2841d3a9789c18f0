"""Push against a local server that checks FCM HTTP v1's documented wire format; dead tokens, quotas, token files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from destination_support import NOW_MS, Request, StatusLog, eventually, fast_policy, message, run

from loyalty_cdp.adapters.destinations.base import PermanentFailure, TransientFailure
from loyalty_cdp.adapters.destinations.fcm import AccessToken, FcmDestination
from loyalty_cdp.adapters.outbox import Outbox
from loyalty_cdp.core.messages import MESSAGE_BOUNCED, MESSAGE_SENT
from loyalty_cdp.services.dispatcher import Dispatcher

PROJECT = "northwind-rewards"
DEVICE = "fcm-device-token:APA91bH-example_0123456789"


def fcm_error(code: int, status: str, error_code: str) -> bytes:
    detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}
    return json.dumps({"error": {"code": code, "message": error_code, "status": status, "details": [detail]}}).encode()


class FcmDouble:
    """Answers like FCM's ``messages:send``, and lists every way a request departs from its documented shape."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.problems: list[str] = []
        self.messages: list[dict] = []
        self.tokens_seen: list[str] = []

    def __call__(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        problems = []
        if request.method != "POST" or request.path != f"/v1/projects/{PROJECT}/messages:send":
            problems.append(f"{request.method} {request.path}")
        if not request.headers.get("content-type", "").startswith("application/json"):
            problems.append(f"content-type {request.headers.get('content-type')}")
        self.tokens_seen.append(request.headers.get("authorization", ""))
        body = json.loads(request.body)
        payload = body.get("message") if set(body) == {"message"} else None
        if not isinstance(payload, dict) or set(payload) - {"token", "notification", "data"} or "token" not in payload:
            problems.append(f"body {body}")
        else:
            if set(payload.get("notification", {})) - {"title", "body"}:
                problems.append("notification keys")
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in payload.get("data", {}).items()):
                problems.append("data values must be strings")
        if problems:
            self.problems.extend(problems)
            return 400, {}, fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return 401, {}, fcm_error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR")
        self.messages.append(payload)
        if payload["token"] == "dead-token":
            return 404, {}, fcm_error(404, "NOT_FOUND", "UNREGISTERED")
        return 200, {}, json.dumps({"name": f"projects/{PROJECT}/messages/0:{len(self.messages)}%31bd1c96"}).encode()


def push_consent(user_id: str) -> dict[str, bool]:
    return {"push": True}


def push(message_id: str, token: str = DEVICE) -> object:
    return message(message_id, "push", "push", token, subject="Ada, you reached Gold",
                   body="2x points on coffee until 30 June", data={"offer_id": "gold-coffee", "points": 200})


def test_push_wire_format_is_fcm_v1s_and_dead_tokens_bounce(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    fcm = FcmDouble("ya29.test-access-token")
    sink.respond = fcm
    status = StatusLog()

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        destination = FcmDestination("push", project_id=PROJECT, token=AccessToken("ya29.test-access-token"),
                                     base_url=sink.url)
        dispatcher = Dispatcher(outbox, [(destination, fast_policy())], on_status=status, consent_of=push_consent)
        await dispatcher.start()
        await dispatcher.enqueue([push("m-1"), push("m-2", "dead-token")])
        await eventually(lambda: status.named(MESSAGE_SENT) and status.named(MESSAGE_BOUNCED), what="both outcomes")
        await dispatcher.close()
        [letter] = outbox.dead_letters()
        assert letter.message.message_id == "m-2" and "UNREGISTERED" in letter.reason
        outbox.close()

    run(scenario())
    assert fcm.problems == []
    # Two workers send concurrently: find the live token's message whatever the order.
    [delivered] = [message for message in fcm.messages if message["token"] == DEVICE]
    assert delivered == {
        "token": DEVICE,
        "notification": {"title": "Ada, you reached Gold", "body": "2x points on coffee until 30 June"},
        "data": {"offer_id": "gold-coffee", "points": "200", "message_id": "m-1", "decision_id": "dec-m-1"},
    }
    [sent] = status.named(MESSAGE_SENT)
    # The sink numbers messages in arrival order, which two concurrent workers do not fix.
    assert json.loads(sent.body)["properties"]["provider_message_id"] in {
        f"projects/{PROJECT}/messages/0:{n}%31bd1c96" for n in (1, 2)}


def test_quota_and_auth_errors_are_retried(make_sink) -> None:
    sink = make_sink()
    sink.respond = lambda request: (429, {"Retry-After": "7"}, fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"))

    async def scenario() -> None:
        destination = FcmDestination("push", project_id=PROJECT, token=AccessToken("expired"), base_url=sink.url)
        try:
            with pytest.raises(TransientFailure) as throttled:
                await destination.send(push("m-1"), NOW_MS)
            assert throttled.value.retry_after == 7.0 and "QUOTA_EXCEEDED" in throttled.value.reason
            sink.respond = FcmDouble("fresh")
            with pytest.raises(TransientFailure, match="access token was refused"):
                await destination.send(push("m-1"), NOW_MS)
            sink.respond = lambda request: (400, {}, fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"))
            with pytest.raises(PermanentFailure) as invalid:
                await destination.send(push("m-1"), NOW_MS)
            assert not invalid.value.bounced
        finally:
            await destination.aclose()

    run(scenario())


def test_a_refreshed_token_file_is_picked_up(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    fcm = FcmDouble("first")
    sink.respond = fcm
    token_file = tmp_path / "fcm-token"
    token_file.write_text("first\n")

    async def scenario() -> None:
        destination = FcmDestination("push", project_id=PROJECT, token=AccessToken(path=token_file),
                                     base_url=sink.url)
        try:
            await destination.send(push("m-1"), NOW_MS)
            token_file.write_text("second\n")
            stamp = token_file.stat().st_mtime_ns + 1_000_000
            os.utime(token_file, ns=(stamp, stamp))
            fcm.token = "second"
            await destination.send(push("m-2"), NOW_MS)
        finally:
            await destination.aclose()

    run(scenario())
    assert fcm.tokens_seen == ["Bearer first", "Bearer second"]
