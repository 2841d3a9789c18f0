"""Email over SMTP: a multipart HTML and text message with unsubscribe headers and tracking links.

Each message becomes ``multipart/alternative`` (text, then HTML) with ``Message-ID``
``<message_id@sender-domain>`` (the idempotency key, so receiving systems can drop a
repeat), ``List-Unsubscribe`` (the signed one-click URL and/or a ``mailto:``) and, with an
https URL, ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058). With
tracking configured, HTML links go through the signed click redirect and an open pixel is
added (see :mod:`.email_tracking`).

Connections: plain, STARTTLS or implicit TLS, optional AUTH; host and port come from the
configuration, else from ``LOYALTY_CDP_SMTP_HOST`` / ``LOYALTY_CDP_SMTP_PORT``, else
``localhost`` and the security mode's usual port. smtplib is blocking, so sends run on the
destination's own threads (one per concurrent send), each keeping its connection open for
the next message.

Outcomes: a 5xx refusal of the recipient is a bounce; other 5xx answers are permanent
failures, except those that say TLS or AUTH is required or refused (our configuration: fixing
it lets the retries through); 4xx answers, disconnects and timeouts are transient.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import smtplib
import ssl
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from html.parser import HTMLParser
from typing import Literal

import msgspec

from loyalty_cdp.adapters.destinations.base import PermanentFailure, Receipt, TransientFailure
from loyalty_cdp.adapters.destinations.email_tracking import TrackingLinks, rewrite_html
from loyalty_cdp.core.messages import EMAIL, OutboundMessage
from loyalty_cdp.errors import InvalidInput

Security = Literal["none", "starttls", "tls"]
DEFAULT_PORTS: Mapping[str, int] = {"none": 25, "starttls": 587, "tls": 465}
HOST_VARIABLE = "LOYALTY_CDP_SMTP_HOST"
PORT_VARIABLE = "LOYALTY_CDP_SMTP_PORT"
CONFIGURATION_CODES = frozenset({530, 534, 535, 538})


class SmtpSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``settings:`` of an ``smtp`` destination."""

    from_address: str
    from_name: str | None = None
    reply_to: str | None = None
    host: str | None = None
    port: int | None = None
    security: Security = "starttls"
    username: str | None = None
    password_env: str | None = None
    ca_file: str | None = None
    unsubscribe_mailto: str | None = None
    tracking_base_url: str | None = None
    tracking_secret_env: str | None = None
    track_opens: bool = True
    track_clicks: bool = True


def smtp_address(settings: SmtpSettings, environ: Mapping[str, str]) -> tuple[str, int]:
    """Host and port: the configuration's, else the environment's, else localhost and the usual port."""
    host = settings.host or environ.get(HOST_VARIABLE) or "localhost"
    if settings.port is not None:
        return host, settings.port
    raw = environ.get(PORT_VARIABLE)
    if raw is None:
        return host, DEFAULT_PORTS[settings.security]
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise InvalidInput(PORT_VARIABLE, f"must be a port number, got {raw!r}")
    return host, int(raw)


class _TextOfHtml(HTMLParser):
    """The readable text of an HTML part, for a message that came without a text part."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head"):
            self._skipping += 1
        elif tag in ("br", "p", "div", "tr", "li", "h1", "h2", "h3"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head") and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(document: str) -> str:
    parser = _TextOfHtml()
    parser.feed(document)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def build_email(
    message: OutboundMessage, *, sender: str, sender_name: str | None = None, reply_to: str | None = None,
    links: TrackingLinks | None = None, unsubscribe_mailto: str | None = None, now_ms: int,
    track_opens: bool = True, track_clicks: bool = True,
) -> EmailMessage:
    """The MIME message for ``message`` (raises :class:`PermanentFailure` if a header cannot be encoded)."""
    email = EmailMessage()
    try:
        email["From"] = formataddr((sender_name, sender)) if sender_name else sender
        email["To"] = message.recipient
        email["Subject"] = message.subject or ""
        if reply_to:
            email["Reply-To"] = reply_to
        domain = Address(addr_spec=sender).domain
        email["Message-ID"] = f"<{message.message_id}@{domain}>"
        email["Date"] = format_datetime(datetime.fromtimestamp(now_ms / 1000, tz=UTC))
        unsubscribe = []
        one_click = links.url("unsubscribe", message) if links is not None else None
        if one_click:
            unsubscribe.append(f"<{one_click}>")
        if unsubscribe_mailto:
            unsubscribe.append(f"<mailto:{unsubscribe_mailto}?subject=unsubscribe>")
        if unsubscribe:
            email["List-Unsubscribe"] = ", ".join(unsubscribe)
        if one_click and one_click.startswith("https://"):
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    except (ValueError, TypeError) as exc:  # e.g. a line break in the subject
        raise PermanentFailure(f"cannot build the email headers: {exc}") from None
    document = message.html
    if document and links is not None:
        document = rewrite_html(document, links, message, opens=track_opens, clicks=track_clicks)
    email.set_content(message.text if message.text else html_to_text(document or ""))
    if document:
        email.add_alternative(document, subtype="html")
    return email


def _text(answer: bytes | str) -> str:
    return answer.decode(errors="replace") if isinstance(answer, bytes) else answer


def _failure(exc: OSError) -> Exception:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, answer = next(iter(exc.recipients.values()))
        text = f"recipient refused: {code} {_text(answer)}"[:300]
        return PermanentFailure(text, bounced=True) if code >= 500 else TransientFailure(text)
    if isinstance(exc, smtplib.SMTPResponseException):
        text = f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}"[:300]
        # 530/534/535/538 (TLS or AUTH required or refused) are our configuration, not the message: retry.
        permanent = exc.smtp_code >= 500 and exc.smtp_code not in CONFIGURATION_CODES
        return PermanentFailure(text) if permanent else TransientFailure(text)
    return TransientFailure(f"{type(exc).__name__}: {exc}"[:300])


class SmtpDestination:
    """Sends email through one SMTP server."""

    channel = EMAIL

    def __init__(
        self, name: str, *, host: str, port: int, sender: str, sender_name: str | None = None,
        reply_to: str | None = None, security: Security = "starttls", username: str | None = None,
        password: str | None = None, ca_file: str | None = None, links: TrackingLinks | None = None,
        unsubscribe_mailto: str | None = None, track_opens: bool = True, track_clicks: bool = True,
        consent_purpose: str | None = "email_marketing", timeout_s: float = 10.0, concurrency: int = 4,
    ) -> None:
        if links is None and not unsubscribe_mailto:
            raise InvalidInput("unsubscribe_mailto", "set it or tracking_base_url: every email needs an unsubscribe")
        if username and not password:
            raise InvalidInput("password_env", "a username needs a password")
        self.name = name
        self.consent_purpose = consent_purpose
        self._host, self._port, self._security = host, port, security
        self._credentials = (username, password) if username and password else None
        self._tls = ssl.create_default_context(cafile=ca_file) if security != "none" else None
        self._build = functools.partial(
            build_email, sender=sender, sender_name=sender_name, reply_to=reply_to, links=links,
            unsubscribe_mailto=unsubscribe_mailto, track_opens=track_opens, track_clicks=track_clicks,
        )
        try:
            self._ehlo_name = Address(addr_spec=sender).domain
        except (ValueError, IndexError, HeaderParseError):
            self._ehlo_name = ""
        if not self._ehlo_name:
            raise InvalidInput("from_address", f"{sender!r} is not an email address")
        self._timeout = timeout_s
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"smtp-{name}")
        self._idle: queue.SimpleQueue[smtplib.SMTP] = queue.SimpleQueue()

    def _connect(self) -> smtplib.SMTP:
        if self._security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                self._host, self._port, self._ehlo_name, timeout=self._timeout, context=self._tls
            )
        else:
            client = smtplib.SMTP(self._host, self._port, self._ehlo_name, timeout=self._timeout)
        try:
            client.ehlo()
            if self._security == "starttls":
                client.starttls(context=self._tls)
                client.ehlo()
            if self._credentials is not None:
                client.login(*self._credentials)
        except BaseException:
            client.close()
            raise
        return client

    def _deliver(self, email: EmailMessage, recipient: str) -> None:
        """Send on an idle connection, else a new one; an idle one that went stale is replaced once."""
        try:
            client, reused = self._idle.get_nowait(), True
        except queue.Empty:
            client, reused = self._connect(), False
        while True:
            try:
                client.send_message(email, to_addrs=[recipient])
            except (smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException):
                self._idle.put(client)  # the server answered (and smtplib reset the session): still usable
                raise
            except OSError:  # disconnected, timed out, broken pipe
                client.close()
                if not reused:
                    raise
                client, reused = self._connect(), False
                continue
            self._idle.put(client)
            return

    async def send(self, message: OutboundMessage, now_ms: int) -> Receipt:
        email = self._build(message, now_ms=now_ms)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._deliver, email, message.recipient)
        except (smtplib.SMTPException, OSError) as exc:
            raise _failure(exc) from None
        return Receipt(provider_id=str(email["Message-ID"]))

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._close_all)

    def _close_all(self) -> None:
        self._executor.shutdown(wait=True)
        while True:
            try:
                client = self._idle.get_nowait()
            except queue.Empty:
                return
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
