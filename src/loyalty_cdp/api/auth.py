"""Who is calling: API keys from HTTP Basic (Segment's write key as user name), Bearer, or ``writeKey``."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request

from loyalty_cdp.adapters.keystore import ApiKey, KeyStore
from loyalty_cdp.errors import Forbidden, Overloaded, Unauthorized


def key_from_header(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, credentials = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return credentials.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("the Basic credentials are not valid base64 of 'key:'") from None
        return decoded.partition(":")[0] or None
    raise Unauthorized(f"unsupported authorization scheme {scheme!r}; use Basic or Bearer")


def require(keys: KeyStore, key: str | None, scope: str) -> ApiKey:
    """The key's record if it is valid, holds ``scope`` and is within its rate limit (the key
    store's limiter, set by the server: see bootstrap); 401, 403 or 429 otherwise."""
    if not key:
        raise Unauthorized("an API key is required (HTTP Basic user name, Bearer token or writeKey)")
    record = keys.verify(key)
    if record is None:
        raise Unauthorized("the API key is unknown or revoked")
    if scope not in record.scopes:
        raise Forbidden(f"the API key lacks the {scope!r} scope")
    if keys.limiter is not None and not keys.limiter.allow(record.key_id):
        raise Overloaded(retry_after=1)
    return record
