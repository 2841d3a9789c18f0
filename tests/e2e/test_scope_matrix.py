"""Every endpoint of the server's OpenAPI document against no key, a revoked key and a key of each scope:
401 or 403 exactly when they should be, and never a 5xx."""

from __future__ import annotations

from typing import Any

import httpx

from loyalty_cdp.adapters.keystore import KeyStore
from loyalty_cdp.testing import ServerProcess

SCOPES = ("ingest", "read", "loyalty", "admin", "privacy")
PUBLIC = None
# The scope each endpoint requires. An endpoint the server documents and this table lacks fails the
# test, so no new endpoint escapes the matrix.
REQUIRED: dict[tuple[str, str], str | None] = {
    **{("POST", f"/v1/{name}"): "ingest" for name in ("identify", "track", "page", "screen", "group", "alias",
                                                         "batch")},
    ("GET", "/v1/members/lookup"): "read",
    ("GET", "/v1/members/{user_id}"): "read",
    ("GET", "/v1/members/{user_id}/identities"): "read",
    ("GET", "/v1/members/{user_id}/events"): "read",
    ("GET", "/v1/members/{user_id}/ledger"): "read",
    ("GET", "/v1/members/{user_id}/offers"): "read",
    ("POST", "/v1/members/{user_id}/redemptions"): "loyalty",
    ("POST", "/v1/members/{user_id}/adjustments"): "loyalty",
    ("GET", "/v1/reports/liability"): "admin",
    ("GET", "/v1/reports/liability/erased"): "admin",
    ("POST", "/v1/privacy/requests"): "privacy",
    ("GET", "/v1/privacy/requests"): "privacy",
    ("GET", "/v1/privacy/requests/{request_id}"): "privacy",
    ("GET", "/v1/privacy/requests/{request_id}/export"): "privacy",
    ("POST", "/v1/members/{user_id}/consent"): "privacy",
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/v1/segments"): "read",
    ("POST", "/v1/segments"): "admin",
    ("POST", "/v1/segments/preview"): "read",
    ("GET", "/v1/segments/{segment_id}"): "read",
    ("GET", "/v1/segments/{segment_id}/members"): "read",
    ("DELETE", "/v1/segments/{segment_id}"): "admin",
    ("GET", "/v1/decisions/{decision_id}"): "read",
    ("POST", "/v1/decisions/{decision_id}/outcome"): "ingest",
    ("GET", "/v1/members/{user_id}/decisions"): "read",
    ("GET", "/v1/reports/uplift"): "admin",
    # Public like an email provider's links and Twilio's webhooks: signed links, X-Twilio-Signature.
    ("GET", "/v1/email/open"): PUBLIC,
    ("GET", "/v1/email/click"): PUBLIC,
    ("GET", "/v1/email/unsubscribe"): PUBLIC,
    ("POST", "/v1/email/unsubscribe"): PUBLIC,
    ("POST", "/v1/sms/inbound"): PUBLIC,
    ("POST", "/v1/sms/status"): PUBLIC,
}
# Values for the parameters endpoints require, so that a call with the right key reaches the endpoint itself.
PATH_VALUES = {"user_id": "matrix-member", "request_id": "pr_0000000000000000", "segment_id": "at-risk",
               "decision_id": "dec-00000000000000000000000000000000"}
QUERY_VALUES = {"type": "email", "value": "matrix@example.com", "channel": "web", "m": "msg_x", "u": "u", "d": "d",
                "s": "x", "url": "https://example.com/", "message_id": "msg_x"}


def keys(server: ServerProcess) -> tuple[dict[str, str], str]:
    """A key of each scope, and a key holding every scope that is then revoked."""
    store = KeyStore(server.data_dir / "keys.db")
    try:
        scoped = {scope: store.create(frozenset({scope}))[0] for scope in SCOPES}
        revoked, record = store.create(frozenset(SCOPES))
        store.revoke(record.key_id)
    finally:
        store.close()
    return scoped, revoked


def request_of(path: str, operation: dict[str, Any]) -> tuple[str, dict[str, str]]:
    url = path
    query: dict[str, str] = {}
    for parameter in operation.get("parameters", []):
        name, place = parameter["name"], parameter["in"]
        if place == "path":
            assert name in PATH_VALUES, f"add a value for path parameter {name!r} to PATH_VALUES"
            url = url.replace("{" + name + "}", PATH_VALUES[name])
        elif place == "query" and parameter.get("required"):
            assert name in QUERY_VALUES, f"add a value for query parameter {name!r} to QUERY_VALUES"
            query[name] = QUERY_VALUES[name]
    return url, query


def test_every_endpoint_answers_401_403_exactly_when_it_should_and_never_5xx(server: ServerProcess) -> None:
    scoped, revoked = keys(server)
    document = httpx.get(server.url + "/openapi.json").json()
    documented = {(method.upper(), path): operation for path, operations in document["paths"].items()
                  for method, operation in operations.items()}
    missing = sorted(set(documented) - set(REQUIRED))
    assert not missing, f"endpoints without an expected scope in REQUIRED: {missing}"
    assert not sorted(set(REQUIRED) - set(documented)), "REQUIRED lists endpoints the server no longer has"

    wrong: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for (method, path), operation in sorted(documented.items()):
            url, query = request_of(path, operation)
            required = REQUIRED[(method, path)]
            callers: list[tuple[str, str | None, set[int] | None]] = [
                ("no key", None, {401} if required else None),
                ("revoked key", revoked, {401} if required else None),
            ]
            callers += [(f"{scope} key", key, {403} if required not in (scope, None) else None)
                        for scope, key in scoped.items()]
            for who, key, expected in callers:
                headers = {} if key is None else {"Authorization": f"Bearer {key}"}
                body = {} if method == "POST" else None
                status = client.request(method, url, params=query, json=body, headers=headers).status_code
                if status >= 500 or (expected is not None and status not in expected) or (
                        expected is None and status in (401, 403)):
                    wrong.append(f"{method} {path} with {who}: {status} (expected {expected or 'not 401/403'})")
    assert not wrong, "\n".join(wrong)
