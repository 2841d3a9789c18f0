"""Email open, click and unsubscribe links: signed URLs, HTML rewriting, and the events a hit reports (pure).

Every link carries the message id (``m``), member (``u``) and decision (``d``), the target
(``url``, clicks only) and ``s``: HMAC-SHA256 of those values keyed with the tracking
secret, truncated to 128 bits and base64url-encoded. The server recomputes it with
:meth:`TrackingLinks.verify`, so nobody can forge an open, a click for another member, or
turn the click endpoint into an open redirect (only signed targets are accepted).

The server owns the endpoints (paths below, under the configured public base URL): ``GET``
the open path answers a 1x1 GIF, ``GET`` the click path redirects to ``url``, ``GET`` or
``POST`` (RFC 8058 one-click) the unsubscribe path; each verifies and then appends
:func:`tracking_call`'s event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import msgspec

from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.messages import OutboundMessage
from loyalty_cdp.errors import InvalidInput

OPEN_PATH = "/v1/email/open"
CLICK_PATH = "/v1/email/click"
UNSUBSCRIBE_PATH = "/v1/email/unsubscribe"
ACTIONS = {"open": OPEN_PATH, "click": CLICK_PATH, "unsubscribe": UNSUBSCRIBE_PATH}
EVENTS = {"open": "Email Opened", "click": "Email Link Clicked", "unsubscribe": "Unsubscribed"}

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


class TrackingHit(msgspec.Struct, frozen=True):
    """A verified hit on a tracking link."""

    action: str
    message_id: str
    user_id: str
    decision_id: str
    url: str | None = None


class TrackingLinks:
    """Builds and verifies the signed links of one server (``base_url`` is its public address)."""

    def __init__(self, base_url: str, secret: str) -> None:
        if not base_url.lower().startswith(("http://", "https://")):
            raise InvalidInput("tracking_base_url", "must be an http(s) URL")
        if not secret:
            raise InvalidInput("tracking_secret", "must not be empty")
        self.base_url = base_url.rstrip("/")
        self._key = secret.encode()

    def _signature(self, action: str, message_id: str, user_id: str, decision_id: str, url: str) -> str:
        text = "\x1f".join((action, message_id, user_id, decision_id, url)).encode()
        digest = hmac.new(self._key, text, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, action: str, message: OutboundMessage, target: str | None = None) -> str:
        """The signed link for ``action`` (``open``, ``click`` with ``target``, ``unsubscribe``)."""
        if action not in ACTIONS:
            raise InvalidInput("action", f"must be one of {', '.join(ACTIONS)}")
        params = {"m": message.message_id, "u": message.user_id, "d": message.decision_id}
        if action == "click":
            if not target:
                raise InvalidInput("url", "a click link needs its target")
            params["url"] = target
        params["s"] = self._signature(action, message.message_id, message.user_id, message.decision_id, target or "")
        return f"{self.base_url}{ACTIONS[action]}?{urlencode(params)}"

    def verify(self, action: str, params: Mapping[str, str]) -> TrackingHit:
        """The hit a request's query parameters describe; :class:`InvalidInput` unless correctly signed."""
        if action not in ACTIONS:
            raise InvalidInput("action", f"must be one of {', '.join(ACTIONS)}")
        message_id, user_id, decision_id, signature = (params.get(key) or "" for key in ("m", "u", "d", "s"))
        target = (params.get("url") or "") if action == "click" else ""
        if not (message_id and user_id and decision_id and signature) or (action == "click" and not target):
            raise InvalidInput("s", "the link is incomplete")
        expected = self._signature(action, message_id, user_id, decision_id, target)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogatepass")):
            raise InvalidInput("s", "the link's signature does not match")
        return TrackingHit(action, message_id, user_id, decision_id, target or None)


def rewrite_html(
    document: str, links: TrackingLinks, message: OutboundMessage, *, opens: bool = True, clicks: bool = True
) -> str:
    """``document`` with its http(s) links sent through the click redirect and an open pixel added."""
    if clicks:
        def through_redirect(match: re.Match[str]) -> str:
            target = html.unescape(match.group(3)).strip()
            if not target.lower().startswith(("http://", "https://")):
                return match.group(0)
            quote = match.group(2)
            return f"{match.group(1)}{quote}{html.escape(links.url('click', message, target))}{quote}"

        document = _HREF.sub(through_redirect, document)
    if opens:
        pixel = f'<img src="{html.escape(links.url("open", message))}" width="1" height="1" alt="" style="border:0">'
        found = list(_BODY_END.finditer(document))
        if found:
            at = found[-1].start()
            document = document[:at] + pixel + document[at:]
        else:
            document += pixel
    return document


def tracking_call(hit: TrackingHit, at_ms: int, event_message_id: str) -> dict[str, Any]:
    """The Segment track call a verified hit appends (``Email Opened``, ``Email Link Clicked``, ``Unsubscribed``)."""
    properties: dict[str, Any] = {
        "email_id": hit.message_id, "message_id": hit.message_id, "decision_id": hit.decision_id
    }
    if hit.url is not None:
        properties["link_url"] = hit.url
    return {
        "type": "track",
        "event": EVENTS[hit.action],
        "userId": hit.user_id,
        "messageId": event_message_id,
        "timestamp": format_time(at_ms),
        "properties": properties,
        "context": {"channel": "email"},
    }
