"""Webhooks: a JSON POST to any URL, signed as Stripe signs its webhooks, refusing private networks.

Signature. Every request carries ``LoyaltyCDP-Signature: t=<unix seconds>,v1=<hex>`` where
``<hex>`` is HMAC-SHA256, keyed with the shared secret, of ``"<t>.<raw body>"``. Receivers
check it with :func:`verify_signature` (or the same few lines in their language): recompute
the HMAC over the raw body, compare in constant time, and refuse timestamps further than
the tolerance (5 minutes) from their clock; that refusal is the replay protection. Within
the tolerance a captured request could be resent, so receivers also keep the ``id`` (the
same value as the ``Idempotency-Key`` header) of what they processed for that long and
ignore repeats, which also absorbs our own at-least-once retries.

Server-side request forgery. Before each send the host is resolved and every address is
checked: loopback, private, link-local, multicast, reserved and other non-public addresses
(IPv4-mapped and 6to4 IPv6 forms included) are refused unless they fall in
``allow_networks``. The connection then goes to the checked address itself (the ``Host``
header and TLS server name keep the original host name), so a DNS answer that changes
between the check and the connect cannot redirect it. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec

from loyalty_cdp.adapters.destinations.base import (
    USER_AGENT,
    PermanentFailure,
    Receipt,
    TransientFailure,
    http_failure,
    post,
)
from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.messages import WEBHOOK, OutboundMessage
from loyalty_cdp.errors import InvalidInput

SIGNATURE_HEADER = "LoyaltyCDP-Signature"
DEFAULT_TOLERANCE_S = 300

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_encode = msgspec.json.Encoder().encode


class WebhookSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``settings:`` of a ``webhook`` destination."""

    url: str
    secret_env: str
    allow_networks: list[str] = []
    signature_header: str = SIGNATURE_HEADER


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, now_s: float, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> int:
    """Check a signature header against the raw ``body``; returns its timestamp.

    Accepts any of several ``v1`` values (sent during a secret rotation). Raises
    :class:`InvalidInput` when the header is malformed, the timestamp is further than
    ``tolerance_s`` from ``now_s``, or no signature matches.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise InvalidInput("signature", "expected t=<unix seconds>,v1=<hex HMAC-SHA256>")
    if abs(now_s - timestamp) > tolerance_s:
        raise InvalidInput("signature", f"timestamp is more than {tolerance_s:g}s away from now (possible replay)")
    expected = _digest(secret, timestamp, body)
    if not any(hmac.compare_digest(expected.encode(), c.encode("utf-8", "surrogatepass")) for c in candidates):
        raise InvalidInput("signature", "does not match the body")
    return timestamp


def parse_networks(values: Sequence[str]) -> list[IPNetwork]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise InvalidInput("allow_networks", f"{value!r} is not a network such as 10.0.0.0/8") from None
    return networks


def address_refusal(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why a webhook must not connect to ``address``, or None when it may."""
    if any(address in network for network in allowed):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return address_refusal(embedded, allowed)
    for check, label in (
        ("is_loopback", "loopback"), ("is_link_local", "link-local"), ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"), ("is_reserved", "reserved"), ("is_private", "private"),
    ):
        if getattr(address, check):
            return f"{address} is a {label} address"
    if not address.is_global:
        return f"{address} is not a public address"
    return None


async def resolve_allowed(host: str, port: int, allowed: Sequence[IPNetwork] = ()) -> IPAddress:
    """The first address of ``host`` a webhook may connect to; :class:`PermanentFailure` if none."""
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise TransientFailure(f"cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    refusals = []
    for address in addresses:
        refusal = address_refusal(address, allowed)
        if refusal is None:
            return address
        refusals.append(refusal)
    raise PermanentFailure(f"refused {host}: {'; '.join(refusals)} (allow it in allow_networks)")


def webhook_body(message: OutboundMessage) -> bytes:
    """The JSON body posted for ``message``; ``id`` is its idempotency key."""
    payload: dict[str, Any] = {
        "id": message.message_id,
        "type": "message",
        "created": format_time(message.created_at),
        "decision_id": message.decision_id,
        "user_id": message.user_id,
        "destination": message.destination,
        "channel": message.channel,
        "data": message.data,
    }
    for field in ("subject", "text", "body"):
        value = getattr(message, field)
        if value is not None:
            payload[field] = value
    return _encode(payload)


class WebhookDestination:
    """POSTs each message as signed JSON to ``url`` (or to the message's own URL recipient)."""

    channel = WEBHOOK

    def __init__(
        self, name: str, url: str, secret: str, *, allow_networks: Sequence[str] = (),
        signature_header: str = SIGNATURE_HEADER, consent_purpose: str | None = None, timeout_s: float = 10.0,
    ) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise InvalidInput("url", "must be an http(s) URL")
        if not secret:
            raise InvalidInput("secret", "must not be empty")
        self.name = name
        self.url = url
        self.consent_purpose = consent_purpose
        self._secret = secret
        self._allowed = parse_networks(allow_networks)
        self._header = signature_header
        self._client = httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, trust_env=False, headers={"User-Agent": USER_AGENT}
        )

    async def send(self, message: OutboundMessage, now_ms: int) -> Receipt:
        url = httpx.URL(message.recipient or self.url)
        if url.scheme not in ("http", "https") or not url.host:
            raise PermanentFailure(f"not an http(s) URL: {str(url)[:200]}")
        return await self._post_signed(url, webhook_body(message), message.message_id, now_ms)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- deletion requests (erasure) ------------------------------------------------------------

    async def send_erasure(self, event_id: str, request_id: str, user_ids: Sequence[str], now_ms: int) -> Receipt:
        """POST a signed ``member.erased`` event to ``url``: the receiver must delete what it holds about them.

        ``event_id`` is the event's ``id`` and ``Idempotency-Key`` (the same for every retry of
        one erasure, so the receiver can drop repeats). Raises :class:`TransientFailure` or
        :class:`PermanentFailure` like :meth:`send`.
        """
        return await self._post_signed(httpx.URL(self.url), erasure_body(event_id, request_id, user_ids, now_ms),
                                       event_id, now_ms)

    async def _post_signed(self, url: httpx.URL, body: bytes, idempotency_key: str, now_ms: int) -> Receipt:
        """POST ``body`` signed, to the checked address of ``url`` (see the module docstring on SSRF)."""
        port = url.port or (443 if url.scheme == "https" else 80)
        address = await resolve_allowed(url.host, port, self._allowed)
        headers = {
            "Content-Type": "application/json",
            "Host": url.netloc.decode("ascii"),
            "Idempotency-Key": idempotency_key,
            self._header: sign(self._secret, now_ms // 1000, body),
        }
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        response = await post(
            self._client, url.copy_with(host=str(address)), content=body, headers=headers, extensions=extensions
        )
        if response.is_success:
            return Receipt(provider_id=response.headers.get("X-Request-Id"), delivered=True)
        raise http_failure(response)


MEMBER_ERASED = "member.erased"


def erasure_body(event_id: str, request_id: str, user_ids: Sequence[str], now_ms: int) -> bytes:
    """The JSON body of a ``member.erased`` event: whom to delete (the user ids the messages carried), nothing else."""
    ordered = sorted(set(user_ids))
    return _encode({
        "id": event_id,
        "type": MEMBER_ERASED,
        "created": format_time(now_ms),
        "request_id": request_id,
        "user_id": ordered[0] if ordered else None,
        "user_ids": ordered,
    })
