"""Who an event says it came from: the decoded event view, identifier extraction and normalisation.

Identity resolution and the profile fold both read an event's JSON ``body``; it is
decoded once, here, into a :class:`DecodedEvent`. :func:`extract_identifiers` then
lists the identifiers the event carries, normalised, without blocked values, in
priority order. The rules (which keys, which normalisation) are in ``docs/identity.md``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Protocol

import msgspec
import phonenumbers

USER_ID = "user_id"
ANONYMOUS_ID = "anonymous_id"
EMAIL = "email"
PHONE = "phone"
CARD = "card"
POS_CUSTOMER_ID = "pos_customer_id"
DEVICE_ID = "device_id"
EXTERNAL_PREFIX = "ext."

# Merge priority, strongest first; every ``ext.<type>`` kind ranks between devices and
# anonymous ids.
PRIORITY = (USER_ID, CARD, EMAIL, PHONE, POS_CUSTOMER_ID, DEVICE_ID, ANONYMOUS_ID)
_RANK = {kind: rank for rank, kind in enumerate(PRIORITY)}
_EXTERNAL_RANK = _RANK[DEVICE_ID] + 0.5

MAX_IDENTIFIER_CHARS = 256
BLOCKED_VALUES = frozenset({"", "null", "undefined", "anonymous", "none", "nil", "nan", "-1"})
_ZEROS_AND_DASHES = re.compile(r"[0\-\s]+")
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+")
_CARD_SEPARATORS = re.compile(r"[\s\-]+")
_EXTERNAL_TYPE = re.compile(r"[a-z0-9_.\-]{1,64}")

# Keys read from identify ``traits`` and every call's ``context.traits``.
TRAIT_KEYS = {
    EMAIL: ("email",),
    PHONE: ("phone",),
    CARD: ("loyalty_card", "loyalty_card_number", "card_number"),
    POS_CUSTOMER_ID: ("pos_customer_id",),
}
# Keys read from ``properties`` (a payment or gift ``card_number`` is not a loyalty card;
# an ``email`` property may be a friend's, so neither is read there).
PROPERTY_KEYS = {
    CARD: ("loyalty_card", "loyalty_card_number"),
    POS_CUSTOMER_ID: ("pos_customer_id",),
}
# ``context.externalIds[].type`` values that name one of our own kinds.
EXTERNAL_TYPES = {
    "user_id": USER_ID,
    "anonymous_id": ANONYMOUS_ID,
    "email": EMAIL,
    "phone": PHONE,
    "card": CARD,
    "card_number": CARD,
    "loyalty_card": CARD,
    "pos_customer_id": POS_CUSTOMER_ID,
    "device_id": DEVICE_ID,
    "ios.id": DEVICE_ID,
    "android.id": DEVICE_ID,
}


class EventRecord(Protocol):
    """What :func:`decode_event` needs: satisfied by ``Event`` and by the log's ``StoredEvent``."""

    @property
    def message_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def event(self) -> str | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def anonymous_id(self) -> str | None: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def channel(self) -> str | None: ...
    @property
    def body(self) -> bytes: ...


class DecodedEvent(msgspec.Struct, frozen=True, gc=False):
    """The parts of an event that identity and the fold read; ``timestamp`` is epoch ms.

    ``traits`` and ``properties`` are the call's objects; ``context_traits``, ``device``,
    ``external_ids`` and ``consent`` are ``context.traits``, ``context.device``,
    ``context.externalIds`` and ``context.consent`` (the rest of ``context`` is not decoded).
    ``channel`` is ``context.channel``, trimmed and lower-cased.
    """

    message_id: str
    type: str
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    timestamp: int
    channel: str | None
    previous_id: str | None = None
    traits: dict[str, Any] = msgspec.field(default_factory=dict)
    properties: dict[str, Any] = msgspec.field(default_factory=dict)
    context_traits: dict[str, Any] = msgspec.field(default_factory=dict)
    device: dict[str, Any] = msgspec.field(default_factory=dict)
    external_ids: tuple[Any, ...] = ()
    consent: dict[str, Any] = msgspec.field(default_factory=dict)


class _Context(msgspec.Struct, gc=False):
    # Typed, so that a body ``normalise`` wrote needs no shape check per field after decoding.
    traits: dict[str, Any] | None = None
    device: dict[str, Any] | None = None
    externalIds: list[Any] | None = None
    consent: dict[str, Any] | None = None


class _Body(msgspec.Struct, gc=False):
    previousId: Any = None
    context: _Context | None = None
    traits: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None


class _LooseBody(msgspec.Struct, gc=False):
    previousId: Any = None
    context: Any = None
    traits: Any = None
    properties: Any = None


_decode_body = msgspec.json.Decoder(_Body).decode
_decode_loose_body = msgspec.json.Decoder(_LooseBody).decode
_NO_CONTEXT = _Context()


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _decode(body: bytes) -> _Body:
    """The body as :class:`_Body`; a body that ``normalise`` did not write (objects that are
    not objects) is read leniently, dropping what has the wrong shape."""
    try:
        return _decode_body(body)
    except msgspec.ValidationError:
        loose = _decode_loose_body(body)
        context = _object(loose.context)
        external_ids = context.get("externalIds")
        return _Body(
            loose.previousId,
            _Context(_object(context.get("traits")), _object(context.get("device")),
                     external_ids if isinstance(external_ids, list) else None, _object(context.get("consent"))),
            _object(loose.traits),
            _object(loose.properties),
        )


def decode_event(record: EventRecord) -> DecodedEvent:
    """Decode an event's canonical JSON body once, skipping the fields nothing here reads."""
    body = _decode(record.body)
    context = body.context or _NO_CONTEXT
    channel = record.channel
    previous_id = body.previousId
    external_ids = context.externalIds
    return DecodedEvent(
        record.message_id,
        record.type,
        record.event,
        record.user_id,
        record.anonymous_id,
        record.timestamp,
        channel.strip().lower() if channel else None,
        None if previous_id is None else _text(previous_id),
        body.traits or {},
        body.properties or {},
        context.traits or {},
        context.device or {},
        tuple(external_ids) if external_ids else (),
        context.consent or {},
    )


def is_blocked(value: str) -> bool:
    """Whether an identifier value is a filler (null, anonymous, zeros) that must never link two profiles.

    A value holding a NUL character is blocked too: no real identifier has one, and some
    stores (PostgreSQL text) cannot hold it.
    """
    text = value.strip().lower()
    return text in BLOCKED_VALUES or "\x00" in text or _ZEROS_AND_DASHES.fullmatch(text) is not None


def _text(value: Any) -> str | None:
    """An identifier-like JSON value as text: strings and integers only."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def normalise_phone(raw: str, default_region: str | None) -> str | None:
    """A phone number in E.164 (``+14155550123``), or None when it is not a valid number."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=1 << 17)
def _normalise_text(kind: str, text: str, default_region: str | None) -> str | None:
    if len(text) > MAX_IDENTIFIER_CHARS or is_blocked(text):
        return None
    if kind == EMAIL:
        text = text.strip().lower()
        return text if _EMAIL_SHAPE.fullmatch(text) else None
    if kind == PHONE:
        return normalise_phone(text.strip(), default_region)
    if kind == CARD:
        text = _CARD_SEPARATORS.sub("", text).upper()
        return None if is_blocked(text) else text
    return text


def normalise_identifier(kind: str, value: Any, default_region: str | None = None) -> str | None:
    """The canonical form of one identifier, or None when it is unusable or blocked.

    Emails are trimmed and lower-cased and must look like ``local@domain``; phones
    become E.164 (``default_region`` reads national numbers); card numbers lose spaces
    and dashes and are upper-cased; every other kind is kept exactly as sent.
    """
    text = _text(value)
    return None if text is None else _normalise_text(kind, text, default_region)


def identifier_key(kind: str, value: str) -> str:
    """The graph's key for one normalised identifier: ``kind:value``."""
    return f"{kind}:{value}"


def split_key(key: str) -> tuple[str, str]:
    """The (kind, value) of a key made by :func:`identifier_key` (kinds hold no colon)."""
    kind, _, value = key.partition(":")
    return kind, value


def rank(kind: str) -> float:
    """Merge priority of a kind: lower is stronger."""
    return _RANK.get(kind, _EXTERNAL_RANK)


def _external_kind(raw_type: Any) -> str | None:
    if not isinstance(raw_type, str):
        return None
    text = raw_type.strip().lower()
    if text in EXTERNAL_TYPES:
        return EXTERNAL_TYPES[text]
    return EXTERNAL_PREFIX + text if _EXTERNAL_TYPE.fullmatch(text) else None


@lru_cache(maxsize=1 << 17)
def _key_and_rank(kind: str, text: str, default_region: str | None) -> tuple[str, float] | None:
    """The key and rank of one identifier given as text, or None (cached: a batch repeats its
    members' identifiers, and extraction is a large part of replay)."""
    normal = _normalise_text(kind, text, default_region)
    return None if normal is None else (identifier_key(kind, normal), rank(kind))


def _add(found: dict[str, float], kind: str, value: Any, region: str | None) -> None:
    text = value if type(value) is str else _text(value)
    if text is not None and (keyed := _key_and_rank(kind, text, region)) is not None:
        found.setdefault(*keyed)


def _pairs(table: dict[str, tuple[str, ...]]) -> tuple[tuple[str, str], ...]:
    """(source key, kind) for every key of a table, in the table's order: one flat loop per event."""
    return tuple((key, kind) for kind, keys in table.items() for key in keys)


_TRAIT_PAIRS = _pairs(TRAIT_KEYS)
_PROPERTY_PAIRS = _pairs(PROPERTY_KEYS)


def _add_from(found: dict[str, float], source: dict[str, Any], pairs: tuple[tuple[str, str], ...],
              region: str | None) -> None:
    for key, kind in pairs:
        if (value := source.get(key)) is not None:
            _add(found, kind, value, region)


def extract_identifiers(event: DecodedEvent, default_region: str | None = None) -> list[str]:
    """The keys of every usable identifier on ``event``, strongest kind first, no repeats.

    Sources: ``userId``; ``anonymousId`` and an alias's ``previousId`` (an anonymous id);
    email, phone, card and POS customer id from identify ``traits`` and ``context.traits``;
    card and POS customer id from ``properties``; ``context.device.id``; and
    ``context.externalIds`` (``[{id, type, ...}]``, known types mapped to our kinds).
    """
    found: dict[str, float] = {}  # key -> rank
    _add(found, USER_ID, event.user_id, default_region)
    _add(found, ANONYMOUS_ID, event.anonymous_id, default_region)
    if event.type == "alias":
        _add(found, ANONYMOUS_ID, event.previous_id, default_region)
    if event.type == "identify" and event.traits:
        _add_from(found, event.traits, _TRAIT_PAIRS, default_region)
    if event.context_traits:
        _add_from(found, event.context_traits, _TRAIT_PAIRS, default_region)
    if event.properties:
        _add_from(found, event.properties, _PROPERTY_PAIRS, default_region)
    if event.device:
        _add(found, DEVICE_ID, event.device.get("id"), default_region)
    for entry in event.external_ids:
        if isinstance(entry, dict):
            kind = _external_kind(entry.get("type"))
            if kind is not None:
                _add(found, kind, entry.get("id"), default_region)
    if len(found) < 2:
        return list(found)
    return sorted(found, key=found.__getitem__)
