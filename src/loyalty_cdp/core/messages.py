"""Outbound messages and their delivery-status events (pure: no I/O, no clock).

An :class:`OutboundMessage` is one rendered, personalised message for one recipient on
one destination. Its ``message_id`` is the idempotency key of the send: the outbox keeps
it at most once, every destination passes it to the provider (``Message-ID`` header,
``Idempotency-Key`` header, webhook body ``id``, push data), and the delivery-status events
derive their own ``messageId`` from it, so the event log stores each status once however
often a crash makes the dispatcher repeat itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec
import phonenumbers

from loyalty_cdp.core.events import Event, format_time, normalise
from loyalty_cdp.errors import InvalidInput

EMAIL: Final = "email"
SMS: Final = "sms"
PUSH: Final = "push"
WEBHOOK: Final = "webhook"
CHANNELS = frozenset({EMAIL, SMS, PUSH, WEBHOOK})

MESSAGE_SENT: Final = "Message Sent"
MESSAGE_DELIVERED: Final = "Message Delivered"
MESSAGE_FAILED: Final = "Message Failed"
MESSAGE_BOUNCED: Final = "Message Bounced"
STATUS_EVENTS = (MESSAGE_SENT, MESSAGE_DELIVERED, MESSAGE_FAILED, MESSAGE_BOUNCED)

# The consent purpose each channel needs by default (the purpose names of ``core/consent.py``);
# a destination's configuration may name another purpose, or none for transactional messages.
DEFAULT_CONSENT_PURPOSES: Mapping[str, str | None] = {
    EMAIL: "email_marketing",
    SMS: "sms",
    PUSH: "push",
    WEBHOOK: None,
}

MAX_MESSAGE_ID_CHARS = 64  # leaves room for the status suffix under Segment's 100-character limit
_MESSAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")
_EMAIL = re.compile(r"[^@\s<>\",]+@[^@\s<>\",]+\.[^@\s<>\",]+")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_URL = re.compile(r"https?://[^\s]+", re.IGNORECASE)


class OutboundMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One rendered message for one recipient on one destination.

    ``recipient`` is an email address (``email``), an E.164 phone number (``sms``), a
    device registration token (``push``) or an ``http(s)`` URL (``webhook``; empty to use
    the destination's configured URL). Email uses ``subject``, ``html`` and ``text``; SMS
    uses ``body``; push uses ``subject`` as the title, ``body`` and ``data``; webhooks send
    ``data`` (and ``body`` when set). ``timezone`` is the recipient's IANA zone, used by
    SMS quiet hours. ``created_at`` is epoch milliseconds.
    """

    message_id: str
    decision_id: str
    user_id: str
    destination: str
    channel: str
    recipient: str
    created_at: int
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    body: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    timezone: str | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(OutboundMessage).decode


def encode_message(message: OutboundMessage) -> bytes:
    return _encode(message)


def decode_message(blob: bytes) -> OutboundMessage:
    return _decode(blob)


def message_id_for(decision_id: str, destination: str) -> str:
    """The idempotency key of the message a decision sends to a destination (stable across retries)."""
    digest = hashlib.blake2b(f"{decision_id}\x1f{destination}".encode(), digest_size=16).hexdigest()
    return f"msg_{digest}"


def is_e164(number: str) -> bool:
    """Whether ``number`` is written in E.164 (``+`` and up to 15 digits) and is a valid number."""
    if not _E164.fullmatch(number):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return False


def _recipient_problem(channel: str, recipient: str) -> str | None:
    if channel == EMAIL and not _EMAIL.fullmatch(recipient):
        return "must be an email address"
    if channel == SMS and not is_e164(recipient):
        return "must be a valid phone number in E.164 form, such as +14155550123"
    if channel == PUSH and (not recipient or len(recipient) > 4096 or any(c.isspace() for c in recipient)):
        return "must be a device registration token"
    if channel == WEBHOOK and recipient and not _URL.fullmatch(recipient):
        return "must be empty or an http(s) URL"
    return None


def validate_message(message: OutboundMessage) -> OutboundMessage:
    """``message`` itself when it can be sent; otherwise :class:`InvalidInput` naming the field."""
    if not _MESSAGE_ID.fullmatch(message.message_id):
        raise InvalidInput("message_id", f"must be 1-{MAX_MESSAGE_ID_CHARS} characters of A-Z a-z 0-9 _ . : -")
    for field in ("decision_id", "user_id", "destination"):
        if not getattr(message, field):
            raise InvalidInput(field, "must not be empty")
    if message.channel not in CHANNELS:
        raise InvalidInput("channel", f"must be one of {', '.join(sorted(CHANNELS))}, got {message.channel!r}")
    problem = _recipient_problem(message.channel, message.recipient)
    if problem:
        raise InvalidInput("recipient", problem)
    if message.channel == EMAIL and (not message.subject or not (message.html or message.text)):
        raise InvalidInput("subject", "an email needs a subject and an html or text part")
    if message.channel == SMS and not message.body:
        raise InvalidInput("body", "an SMS needs a body")
    if message.channel == PUSH and not (message.subject or message.body or message.data):
        raise InvalidInput("body", "a push needs a title (subject), a body or data")
    return message


def consent_refusal(purpose: str | None, consent: Mapping[str, Any]) -> str | None:
    """Why a message needing consent for ``purpose`` must not be sent, or None when it may.

    ``consent`` maps purposes (``email``, ``sms``, ``push``, ...) to ``True`` when the member
    granted them; anything else (absent, ``False``, ``None``) refuses: consent is opt-in.
    """
    if purpose is None:
        return None
    if consent.get(purpose) is True:
        return None
    return f"no {purpose} consent"


def _status_slug(status: str, replays: int) -> str:
    slug = status.removeprefix("Message ").lower()
    # A replayed dead letter can fail again: each replay round gets its own failure event.
    return f"{slug}.{replays}" if status == MESSAGE_FAILED else slug


def status_call(
    message: OutboundMessage,
    status: str,
    at_ms: int,
    *,
    attempts: int,
    replays: int = 0,
    reason: str | None = None,
    provider_id: str | None = None,
    suppressed: bool = False,
) -> dict[str, Any]:
    """The Segment track call that reports ``status`` of ``message`` at ``at_ms``."""
    if status not in STATUS_EVENTS:
        raise InvalidInput("status", f"must be one of {', '.join(STATUS_EVENTS)}")
    properties: dict[str, Any] = {
        "message_id": message.message_id,
        "decision_id": message.decision_id,
        "destination": message.destination,
        "channel": message.channel,
        "attempts": attempts,
        "latency_ms": max(0, at_ms - message.created_at),
    }
    if reason is not None:
        properties["reason"] = reason
    if provider_id is not None:
        properties["provider_message_id"] = provider_id
    if suppressed:
        properties["suppressed"] = True
    return {
        "type": "track",
        "event": status,
        "userId": message.user_id,
        "messageId": f"{message.message_id}:{_status_slug(status, replays)}",
        "timestamp": format_time(at_ms),
        "properties": properties,
        "context": {"library": {"name": "loyalty-cdp-dispatcher"}},
    }


def status_event(message: OutboundMessage, status: str, at_ms: int, **details: Any) -> Event:
    """:func:`status_call` normalised into the canonical event the event log stores."""
    call = status_call(message, status, at_ms, **details)
    return normalise(call, call_type="track", received_at=at_ms, default_message_id=call["messageId"])
