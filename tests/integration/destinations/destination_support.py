"""Helpers of the destination tests: an HTTP sink (``http.server`` in a thread), an SMTP recorder, fast policies."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from loyalty_cdp.adapters.destinations.base import DeliveryPolicy
from loyalty_cdp.core.events import Event
from loyalty_cdp.core.messages import OutboundMessage

T = TypeVar("T")
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float = field(default_factory=time.monotonic)


Answer = tuple[int, dict[str, str], bytes]


class HttpSink:
    """An HTTP server that records every request and answers with ``respond(request)``.

    ``respond`` may return ``None`` to hang until the sink stops or ``hang_s`` passes
    (a destination that times out).
    """

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self.respond: Callable[[Request], Answer | None] = lambda request: (200, {}, b"{}")
        self.hang_s = 5.0
        self._stopping = threading.Event()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)
                )
                sink.requests.append(request)
                answer = sink.respond(request)
                if answer is None:
                    sink._stopping.wait(sink.hang_s)
                    self.close_connection = True
                    return
                status, headers, body = answer
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


class MailRecorder:
    """An aiosmtpd handler keeping every accepted message; ``refuse`` lists recipients answered 550."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.refuse: set[str] = set()
        self.logins: list[tuple[str, bool]] = []

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        """Accepts ``mailer`` / ``s3cret`` only (the authenticator of the STARTTLS server)."""
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", b"s3cret")
        self.logins.append((data.login.decode() if isinstance(data, LoginPassword) else "", ok))
        return AuthResult(success=ok, handled=False)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def fast_policy(**overrides: Any) -> DeliveryPolicy:
    """Delivery settings scaled down so that outages, retries and breakers play out in a second."""
    values: dict[str, Any] = {
        "concurrency": 2, "queue_size": 8, "timeout_s": 0.3, "max_attempts": 50, "backoff_base_s": 0.02,
        "backoff_cap_s": 0.1, "breaker_failures": 3, "breaker_reset_s": 0.2, "lease_s": 5.0, "poll_s": 0.05,
    }
    values.update(overrides)
    return DeliveryPolicy(**values)


def message(
    message_id: str, destination: str, channel: str, recipient: str, *, user_id: str = "member-1", **fields: Any
) -> OutboundMessage:
    return OutboundMessage(
        message_id=message_id, decision_id=f"dec-{message_id}", user_id=user_id, destination=destination,
        channel=channel, recipient=recipient, created_at=fields.pop("created_at", NOW_MS), **fields,
    )


class StatusLog:
    """Collects the status events the dispatcher hands over (standing in for the event log)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, events: list[Event]) -> None:
        self.events.extend(events)

    def named(self, name: str) -> list[Event]:
        return [event for event in self.events if event.event == name]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    """Wait (in the event loop) until ``condition()`` holds; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)


ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "twilio-auth-token"
API_KEY_SID = "SK0123456789abcdef0123456789abcdef"
MEMBER_PHONE = "+14155550123"
SHOP_PHONE = "+14155550100"


class TwilioDouble:
    """Answers like Twilio's Messages API, and lists every way a request departs from its documented shape."""

    def __init__(self, username: str, password: str) -> None:
        self.problems: list[str] = []
        self.forms: list[dict[str, str]] = []
        self.expected_auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.answer_error: tuple[int, dict] | None = None

    def __call__(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        problems = []
        if request.method != "POST" or request.path != f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json":
            problems.append(f"{request.method} {request.path}")
        if request.headers.get("authorization") != self.expected_auth:
            problems.append(f"authorization {request.headers.get('authorization')}")
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            problems.append(f"content-type {request.headers.get('content-type')}")
        fields = parse_qs(request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        if any(len(values) != 1 for values in fields.values()):
            problems.append("repeated fields")
        form = {key: values[0] for key, values in fields.items()}
        senders = {"From", "MessagingServiceSid"} & set(form)
        if len(senders) != 1 or not {"To", "Body"} <= set(form) or set(form) - {"To", "Body", "StatusCallback", *senders}:
            problems.append(f"fields {sorted(form)}")
        if problems:
            self.problems.extend(problems)
            return 400, {}, json.dumps({"code": 20001, "message": "; ".join(problems), "status": 400}).encode()
        self.forms.append(form)
        if self.answer_error is not None:
            status, detail = self.answer_error
            return status, {}, json.dumps(detail).encode()
        sid = f"SM{len(self.forms):032x}"
        answer = {"sid": sid, "status": "queued", "to": form["To"], "from": form.get("From"), "body": form["Body"],
                  "account_sid": ACCOUNT_SID, "num_segments": "1"}
        return 201, {}, json.dumps(answer).encode()
