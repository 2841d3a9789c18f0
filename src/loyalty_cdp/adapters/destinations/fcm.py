"""App push through Firebase Cloud Messaging's HTTP v1 API (or any service with its request shape).

Wire format, as Firebase documents it: ``POST {base_url}/v1/projects/{project_id}/messages:send``
with ``Authorization: Bearer <OAuth 2.0 access token>`` and a JSON body
``{"message": {"token": ..., "notification": {"title": ..., "body": ...}, "data": {...}}}``
(``data`` values must be strings); ``200`` answers ``{"name": "projects/.../messages/..."}``.
The message's ``subject`` is the title; ``data`` also carries ``message_id`` (the idempotency
key, for the app to drop a repeat, as FCM has none of its own) and ``decision_id``.

Errors answer ``{"error": {"status": ..., "details": [{"errorCode": ...}]}}``: ``UNREGISTERED``
and ``SENDER_ID_MISMATCH`` mean the token is dead (a bounce); ``INVALID_ARGUMENT`` is a
permanent failure; ``QUOTA_EXCEEDED`` (429), ``UNAVAILABLE`` and ``INTERNAL`` are retried,
honouring ``Retry-After``; ``UNAUTHENTICATED`` is retried with a freshly read token.

Access tokens live an hour. The token is read from an environment variable (for short runs
and tests) or from a file that is re-read whenever it changes, so a sidecar that refreshes
it (``gcloud auth print-access-token``, a workload-identity agent) keeps pushes flowing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import msgspec

from loyalty_cdp.adapters.destinations.base import (
    USER_AGENT,
    PermanentFailure,
    Receipt,
    TransientFailure,
    http_failure,
    json_object,
    post,
)
from loyalty_cdp.core.messages import PUSH, OutboundMessage
from loyalty_cdp.errors import InvalidInput

API_BASE_URL = "https://fcm.googleapis.com"
DEAD_TOKEN_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
_encode = msgspec.json.Encoder().encode


class FcmSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``settings:`` of an ``fcm`` destination: set one of ``access_token_env`` and ``access_token_file``."""

    project_id: str
    access_token_env: str | None = None
    access_token_file: str | None = None
    base_url: str = API_BASE_URL


class AccessToken:
    """A bearer token from a fixed value or a file re-read when its modification time changes."""

    def __init__(self, value: str | None = None, path: Path | None = None) -> None:
        if (value is None) == (path is None):
            raise InvalidInput("access_token_env", "set exactly one of access_token_env and access_token_file")
        self._value = value
        self._path = path
        self._stamp: int | None = None

    def get(self) -> str:
        if self._path is None:
            return self._value or ""
        try:
            stamp = os.stat(self._path).st_mtime_ns
            if stamp != self._stamp:
                self._value, self._stamp = self._path.read_text().strip(), stamp
        except OSError as exc:
            raise TransientFailure(f"cannot read the access token file: {exc}") from None
        return self._value or ""


def fcm_body(message: OutboundMessage) -> bytes:
    """The JSON body that sends ``message`` to one device token."""
    data = {str(key): v if isinstance(v, str) else _encode(v).decode() for key, v in message.data.items()}
    data["message_id"] = message.message_id
    data["decision_id"] = message.decision_id
    payload: dict[str, Any] = {"token": message.recipient, "data": data}
    notification = {key: value for key, value in (("title", message.subject), ("body", message.body)) if value}
    if notification:
        payload["notification"] = notification
    return _encode({"message": payload})


def _error_code(detail: dict[str, Any]) -> tuple[str, str]:
    error = detail.get("error")
    if not isinstance(error, dict):
        return "", ""
    status = str(error.get("status", ""))
    for item in error.get("details") or ():
        if isinstance(item, dict) and item.get("errorCode"):
            return status, str(item["errorCode"])
    return status, status


class FcmDestination:
    """Sends push notifications through an FCM HTTP v1-compatible API."""

    channel = PUSH

    def __init__(
        self, name: str, *, project_id: str, token: AccessToken, base_url: str = API_BASE_URL,
        consent_purpose: str | None = "push", timeout_s: float = 10.0,
    ) -> None:
        if not project_id:
            raise InvalidInput("project_id", "must not be empty")
        self.name = name
        self.consent_purpose = consent_purpose
        self._url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self._token = token
        self._client = httpx.AsyncClient(timeout=timeout_s, headers={"User-Agent": USER_AGENT})

    async def send(self, message: OutboundMessage, now_ms: int) -> Receipt:
        headers = {
            "Authorization": f"Bearer {self._token.get()}",
            "Content-Type": "application/json",
            "Idempotency-Key": message.message_id,
        }
        response = await post(self._client, self._url, content=fcm_body(message), headers=headers)
        detail = dict(json_object(response))
        if response.is_success:
            name = detail.get("name")
            return Receipt(provider_id=name if isinstance(name, str) else None)
        status, code = _error_code(detail)
        text = f"FCM {code or status or response.status_code}"
        if code in DEAD_TOKEN_CODES:
            raise PermanentFailure(f"{text}: the device token is no longer valid", bounced=True)
        if response.status_code == 401:
            raise TransientFailure(f"{text}: the access token was refused")
        raise http_failure(response, text)

    async def aclose(self) -> None:
        await self._client.aclose()
