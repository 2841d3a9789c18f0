"""Local stand-ins for the demo's providers: an SMTP sink, Twilio- and FCM-compatible APIs, a webhook receiver.

``loyalty-cdp serve --demo`` starts them in-process so that the example program's five
destinations (``programs/retail.yaml``) deliver somewhere real: email over SMTP (aiosmtpd,
on ``LOYALTY_CDP_SMTP_HOST``/``LOYALTY_CDP_SMTP_PORT``), SMS to a Twilio-compatible Messages
API, push to an FCM HTTP v1-compatible API, and signed webhooks to a receiver; the audience
export writes files under the data directory. Each sink checks the request the way the
vendor documents it (path, authentication, content type, fields), answers like the vendor
(Twilio ``201`` with an ``SM...`` sid, then a signed ``delivered`` status callback; FCM
``{"name": ...}``), refuses anything else with the vendor's error shape, and logs what it
received. They keep the last :data:`KEPT` items for tests and the demo's curious.
"""

from __future__ import annotations

import abc
import base64
import collections
import hmac
import json
import logging
import os
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

from loyalty_cdp.adapters.destinations.twilio import request_signature
from loyalty_cdp.adapters.destinations.webhook import SIGNATURE_HEADER, verify_signature
from loyalty_cdp.errors import InvalidInput

log = logging.getLogger("loyalty_cdp.demo")

KEPT = 1000
SMTP_PORT = 18025
TWILIO_PORT = 18091
FCM_PORT = 18092
WEBHOOK_PORT = 18093
DEMO_ACCOUNT_SID = "AC00000000000000000000000000000000"
DEMO_PROJECT_ID = "northwind-demo"
STATUS_CALLBACK_DELAY_S = 0.2


@dataclass
class Received:
    """One request a sink accepted (or refused, with ``problem``)."""

    path: str
    headers: dict[str, str]
    body: bytes
    fields: dict[str, Any]
    problem: str | None = None
    at: float = 0.0


Answer = tuple[int, dict[str, str], bytes]


class HttpSink(abc.ABC):
    """A threaded HTTP server on 127.0.0.1 answering every POST with ``handle(path, headers, body)``
    (each vendor's sink says how)."""

    name = "http"

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.received: collections.deque[Received] = collections.deque(maxlen=KEPT)
        self.accepted = 0
        self.refused = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                status, extra, payload = sink.handle(self.path, headers, body)
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **extra}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                payload = json.dumps({"sink": sink.name, "accepted": sink.accepted, "refused": sink.refused}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    @abc.abstractmethod
    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """The status, headers and body to answer a POST with."""

    def _keep(self, item: Received) -> None:
        item.at = time.time()
        with self._lock:
            self.received.append(item)
            if item.problem is None:
                self.accepted += 1
            else:
                self.refused += 1

    def accepted_items(self) -> list[Received]:
        with self._lock:
            return [item for item in self.received if item.problem is None]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


class TwilioSink(HttpSink):
    """Twilio's Messages API (``POST /2010-04-01/Accounts/{sid}/Messages.json``), then signed status callbacks."""

    name = "twilio"

    def __init__(self, port: int = 0, *, account_sid: str = DEMO_ACCOUNT_SID, auth_token: str,
                 callbacks: bool = True) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.callbacks = callbacks
        self.callbacks_sent = 0
        expected = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._authorization = f"Basic {expected}"
        super().__init__(port)

    def _refuse(self, item: Received, status: int, code: int, problem: str) -> Answer:
        item.problem = problem
        self._keep(item)
        log.warning("demo sms sink refused a request: %s", problem)
        return status, {}, json.dumps({"code": code, "message": problem, "status": status}).encode()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        item = Received(path, headers, body, {})
        if path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            return self._refuse(item, 404, 20404, f"unknown resource {path}")
        if not hmac.compare_digest(headers.get("authorization", ""), self._authorization):
            return self._refuse(item, 401, 20003, "authentication failed")
        if headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return self._refuse(item, 400, 20001, "the body must be form-encoded")
        try:
            parsed = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return self._refuse(item, 400, 20001, "the body is not a form")
        form = {key: values[-1] for key, values in parsed.items()}
        item.fields = form
        senders = {"From", "MessagingServiceSid"} & set(form)
        if not form.get("To") or not form.get("Body") or len(senders) != 1:
            return self._refuse(item, 400, 21604, "To, Body and exactly one of From and MessagingServiceSid")
        unknown = set(form) - {"To", "Body", "StatusCallback", *senders}
        if unknown:
            return self._refuse(item, 400, 20001, f"unknown parameters {sorted(unknown)}")
        sid = "SM" + secrets.token_hex(16)
        form["MessageSid"] = sid
        self._keep(item)
        log.info("demo sms sink: SMS to %s: %s", form["To"], form["Body"][:80])
        if self.callbacks and form.get("StatusCallback"):
            timer = threading.Timer(STATUS_CALLBACK_DELAY_S, self._deliver, args=(form["StatusCallback"], sid, form))
            timer.daemon = True
            timer.start()
        answer = {"sid": sid, "account_sid": self.account_sid, "to": form["To"], "from": form.get("From"),
                  "messaging_service_sid": form.get("MessagingServiceSid"), "body": form["Body"],
                  "status": "queued", "num_segments": "1", "direction": "outbound-api", "error_code": None}
        return 201, {}, json.dumps(answer).encode()

    def _deliver(self, url: str, sid: str, form: Mapping[str, str]) -> None:
        """Post the ``delivered`` status callback, signed with ``X-Twilio-Signature`` as Twilio signs it."""
        params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": self.account_sid, "MessageStatus": "delivered",
                  "SmsStatus": "delivered", "To": form["To"], "From": form.get("From", ""), "ApiVersion": "2010-04-01"}
        data = urlencode(params).encode()
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": request_signature(self.auth_token, url, params),
        })
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
            self.callbacks_sent += 1
        except OSError as exc:
            log.warning("demo sms sink: status callback to %s failed: %s", url.split("?")[0], exc)


class FcmSink(HttpSink):
    """FCM HTTP v1 (``POST /v1/projects/{project}/messages:send``, Bearer token, ``{"message": ...}``)."""

    name = "fcm"

    def __init__(self, port: int = 0, *, project_id: str = DEMO_PROJECT_ID, access_token: str) -> None:
        self.project_id = project_id
        self.access_token = access_token
        super().__init__(port)

    def _refuse(self, item: Received, status: int, kind: str, problem: str) -> Answer:
        item.problem = problem
        self._keep(item)
        log.warning("demo push sink refused a request: %s", problem)
        error = {"error": {"code": status, "message": problem, "status": kind,
                           "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                        "errorCode": kind}]}}
        return status, {}, json.dumps(error).encode()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        item = Received(path, headers, body, {})
        if path != f"/v1/projects/{self.project_id}/messages:send":
            return self._refuse(item, 404, "NOT_FOUND", f"unknown resource {path}")
        if not hmac.compare_digest(headers.get("authorization", ""), f"Bearer {self.access_token}"):
            return self._refuse(item, 401, "UNAUTHENTICATED", "the access token is missing or wrong")
        if headers.get("content-type", "").split(";")[0] != "application/json":
            return self._refuse(item, 400, "INVALID_ARGUMENT", "the body must be JSON")
        try:
            document = json.loads(body)
        except ValueError:
            return self._refuse(item, 400, "INVALID_ARGUMENT", "the body is not JSON")
        message = document.get("message") if isinstance(document, dict) else None
        if not isinstance(message, dict) or set(document) != {"message"}:
            return self._refuse(item, 400, "INVALID_ARGUMENT", "the body must be {\"message\": {...}}")
        token = message.get("token")
        if not isinstance(token, str) or not token:
            return self._refuse(item, 400, "INVALID_ARGUMENT", "message.token is required")
        notification = message.get("notification", {})
        if not isinstance(notification, dict) or set(notification) - {"title", "body", "image"} or not all(
                isinstance(v, str) for v in notification.values()):
            return self._refuse(item, 400, "INVALID_ARGUMENT", "message.notification must hold title/body strings")
        data = message.get("data", {})
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return self._refuse(item, 400, "INVALID_ARGUMENT", "message.data values must be strings")
        item.fields = message
        self._keep(item)
        log.info("demo push sink: push to %s...: %s", token[:12], notification.get("title", ""))
        return 200, {}, json.dumps({"name": f"projects/{self.project_id}/messages/{secrets.token_hex(8)}"}).encode()


class WebhookReceiver(HttpSink):
    """A webhook receiver that verifies the signature and timestamp and drops repeated ids."""

    name = "webhook"

    def __init__(self, port: int = 0, *, secret: str, header: str = SIGNATURE_HEADER) -> None:
        self.secret = secret
        self.header = header.lower()
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.repeats = 0
        super().__init__(port)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        item = Received(path, headers, body, {})
        try:
            verify_signature(self.secret, headers.get(self.header, ""), body, time.time())
            payload = json.loads(body)
        except (InvalidInput, ValueError) as exc:
            item.problem = f"refused: {exc}"
            self._keep(item)
            log.warning("demo webhook receiver refused a request: %s", exc)
            return 400, {}, json.dumps({"error": str(exc)}).encode()
        identifier = str(payload.get("id", ""))
        with self._lock:
            repeat = identifier in self.seen
            self.seen[identifier] = None
            while len(self.seen) > KEPT:
                self.seen.popitem(last=False)
        if repeat:
            self.repeats += 1
            return 200, {}, b'{"duplicate": true}'
        item.fields = payload
        self._keep(item)
        data = payload.get("data", {})
        log.info("demo webhook receiver: decision %s for %s: offer %s on %s", payload.get("decision_id"),
                 payload.get("user_id"), data.get("offer_id"), data.get("channel"))
        return 200, {"X-Request-Id": secrets.token_hex(8)}, b'{"received": true}'


class SmtpSink:
    """An in-process SMTP server (aiosmtpd) that keeps and logs every email it accepts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError:  # a dev dependency: `uv sync` (make demo) installs it
            raise InvalidInput("aiosmtpd", "the demo's SMTP sink needs the aiosmtpd package "
                                           "(installed by `make demo` / `uv sync`)") from None
        if port == 0:
            from loyalty_cdp.testing import free_port

            port = free_port()
        self.messages: collections.deque[EmailMessage] = collections.deque(maxlen=KEPT)
        self.arrivals: collections.deque[tuple[float, tuple[str, ...]]] = collections.deque(maxlen=KEPT)
        self.accepted = 0
        self.host, self.port = host, port
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                email = message_from_bytes(envelope.content, policy=policy.default)
                assert isinstance(email, EmailMessage)
                sink.messages.append(email)
                sink.arrivals.append((time.time(), tuple(envelope.rcpt_tos)))
                sink.accepted += 1
                log.info("demo email sink: to %s: %s", ", ".join(envelope.rcpt_tos), email.get("Subject", ""))
                return "250 Message accepted for delivery"

        self._controller = Controller(Handler(), hostname=host, port=port)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class DemoSinks:
    """Every demo sink, started together; :meth:`stop` stops them all."""

    def __init__(self, smtp: SmtpSink, twilio: TwilioSink, fcm: FcmSink, webhook: WebhookReceiver) -> None:
        self.smtp, self.twilio, self.fcm, self.webhook = smtp, twilio, fcm, webhook

    @classmethod
    def start(cls, *, twilio_auth_token: str, fcm_access_token: str, webhook_secret: str,
              smtp_host: str = "127.0.0.1", smtp_port: int = 0, twilio_port: int = 0, fcm_port: int = 0,
              webhook_port: int = 0, twilio_callbacks: bool = True) -> DemoSinks:
        """Start the four sinks (port 0: a free port each; ``twilio_callbacks=False``: the SMS sink sends no
        status callbacks); if one cannot start, stop those already started and re-raise (``OSError``, or
        aiosmtpd's ``RuntimeError`` for a taken port)."""
        opened: list[Any] = []
        try:
            opened.append(SmtpSink(smtp_host, smtp_port))
            opened.append(TwilioSink(twilio_port, auth_token=twilio_auth_token, callbacks=twilio_callbacks))
            opened.append(FcmSink(fcm_port, access_token=fcm_access_token))
            opened.append(WebhookReceiver(webhook_port, secret=webhook_secret))
        except BaseException:
            for sink in opened:
                sink.stop()
            raise
        return cls(*opened)

    def counts(self) -> tuple[int, int, int, int]:
        """What the email, SMS, push and webhook sinks accepted so far."""
        return self.smtp.accepted, self.twilio.accepted, self.fcm.accepted, self.webhook.accepted

    def summary(self) -> str:
        return "email {}, sms {}, push {}, webhooks {}".format(*self.counts())

    def stop(self) -> None:
        for sink in (self.twilio, self.fcm, self.webhook):
            sink.stop()
        self.smtp.stop()


def start_demo_sinks(environ: dict[str, str] | None = None,
                     started: Callable[[str], None] | None = None) -> DemoSinks:
    """Start the sinks the example program's destinations point at, and export the SMTP address.

    The email sink listens on ``LOYALTY_CDP_SMTP_HOST``/``LOYALTY_CDP_SMTP_PORT`` (set to
    127.0.0.1 and 18025 when unset); the others on the ports ``retail.yaml`` names. Secrets
    are the environment's, else the example program's demo values.
    """
    from loyalty_cdp.services.activation import EXAMPLE_SECRETS

    env = os.environ if environ is None else environ
    env.setdefault("LOYALTY_CDP_SMTP_HOST", "127.0.0.1")
    env.setdefault("LOYALTY_CDP_SMTP_PORT", str(SMTP_PORT))
    for variable, value in EXAMPLE_SECRETS.items():
        env.setdefault(variable, value)
    try:
        smtp_port = int(env["LOYALTY_CDP_SMTP_PORT"])
    except ValueError:
        raise InvalidInput("LOYALTY_CDP_SMTP_PORT", "must be a port number") from None
    try:
        sinks = DemoSinks.start(twilio_auth_token=env["LOYALTY_CDP_TWILIO_AUTH_TOKEN"],
                                fcm_access_token=env["LOYALTY_CDP_FCM_ACCESS_TOKEN"],
                                webhook_secret=env["LOYALTY_CDP_WEBHOOK_SECRET"],
                                smtp_host=env["LOYALTY_CDP_SMTP_HOST"], smtp_port=smtp_port,
                                twilio_port=TWILIO_PORT, fcm_port=FCM_PORT, webhook_port=WEBHOOK_PORT)
    except (OSError, RuntimeError) as exc:  # aiosmtpd reports a taken port as a RuntimeError
        raise InvalidInput("--demo", f"cannot start the demo sinks (is a port taken?): {exc}") from None
    if started is not None:
        started(f"demo sinks: email smtp://{sinks.smtp.host}:{sinks.smtp.port}, sms {sinks.twilio.url}, "
                f"push {sinks.fcm.url}, webhook {sinks.webhook.url}")
    return sinks
