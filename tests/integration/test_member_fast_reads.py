"""The fast path of the member reads (``FastReads``) answers exactly what the routes answer, and
hands every request it should not answer (errors, odd parameters, the rate limit) to them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from starlette.requests import Request

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.keystore import KeyStore, RateLimiter
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.adapters.program_yaml import load_program
from loyalty_cdp.adapters.scorestore import ScoreStore
from loyalty_cdp.api import members
from loyalty_cdp.core.events import normalise, parse_time
from loyalty_cdp.core.loyalty import LoyaltyEngine
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.services.member_answers import MemberAnswers
from loyalty_cdp.services.processor import Processor

NOW_S = 1_790_000_000.0
CALLS: list[dict[str, Any]] = [
    {"type": "identify", "userId": "u-1", "anonymousId": "a-1", "timestamp": "2026-05-01T09:00:00Z",
     "traits": {"email": "Ann.Lee@Example.com", "first_name": "Ann", "card_number": "7000 1234 5678"},
     "context": {"channel": "web"}},
    {"type": "track", "userId": "u-1", "event": "Order Completed", "timestamp": "2026-05-03T17:30:00Z",
     "context": {"channel": "pos"},
     "properties": {"order_id": "o-1", "total": 42.0, "currency": "USD",
                    "products": [{"product_id": "p-1", "sku": "P-1", "category": "Coffee", "brand": "Acme",
                                  "price": 42.0, "quantity": 1}]}},
    {"type": "track", "anonymousId": "a-2", "event": "Product Viewed", "timestamp": "2026-05-04T08:00:00Z",
     "context": {"channel": "web"}, "properties": {"product_id": "p-2", "category": "Tea"}},
]


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    log = SqliteEventLog(tmp_path / "events.db")
    log.append([normalise(call, call_type=None, received_at=parse_time(call["timestamp"], "timestamp"),
                          default_message_id=f"m-{n}") for n, call in enumerate(CALLS)])
    store = SqliteProfileStore(tmp_path / "profiles.db")
    processor = Processor(log, store, loyalty=LoyaltyEngine(load_program(retail_program_path())))
    processor.catch_up()
    keys = KeyStore(tmp_path / "keys.db")
    application = FastAPI()
    application.include_router(members.router)
    scores = ScoreStore(tmp_path)
    application.state.components = SimpleNamespace(processor=processor, keys=keys, scores=scores,
                                                   answers=MemberAnswers(processor, scores))
    application.state.read_key = keys.create(frozenset({"read"}))[0]
    application.state.ingest_key = keys.create(frozenset({"ingest"}))[0]
    monkeypatch.setattr(members.time, "time", lambda: NOW_S)  # both paths answer as of the same instant
    yield application
    keys.close()
    store.close()
    log.close()


def scope(app: Any, path: str, query: dict[str, str] | str = "", key: str | None = None,
          scheme: str = "Bearer", method: str = "GET") -> dict[str, Any]:
    headers = [(b"host", b"test")]
    if key is not None:
        headers.append((b"authorization", f"{scheme} {key}".encode()))
    query_string = query if isinstance(query, str) else urlencode(query)
    return {"type": "http", "method": method, "path": path, "root_path": "", "query_string": query_string.encode(),
            "headers": headers, "app": app}


def through(app: Any, request_scope: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """(messages FastReads sent, whether it handed the request to the app behind it)."""
    sent: list[dict[str, Any]] = []
    passed: list[bool] = []

    async def behind(scope: Any, receive: Any, send: Any) -> None:
        passed.append(True)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(members.FastReads(behind)(request_scope, receive, send))
    return sent, bool(passed)


def route_answer(app: Any, request_scope: dict[str, Any], endpoint: Any, **params: str) -> Any:
    return asyncio.run(endpoint(Request(request_scope), **params))


@pytest.mark.parametrize(("kind", "value"), [("email", " ann.lee@example.COM"), ("card", "7000-1234-5678"),
                                             ("card_number", "700012345678"), ("anonymous_id", "a-1"),
                                             ("user_id", "u-1"), ("anonymous_id", "a-2")])
def test_a_lookup_answers_byte_for_byte_what_the_route_answers(app: Any, kind: str, value: str) -> None:
    request_scope = scope(app, "/v1/members/lookup", {"type": kind, "value": value}, app.state.read_key)
    sent, passed = through(app, request_scope)
    assert not passed
    expected = route_answer(app, request_scope, members.lookup, type=kind, value=value)
    assert sent[0] == {"type": "http.response.start", "status": expected.status_code, "headers": expected.raw_headers}
    assert sent[1] == {"type": "http.response.body", "body": expected.body}
    assert request_scope["route"].path == "/v1/members/lookup"  # what the timing middleware records


def test_a_member_answers_byte_for_byte_what_the_route_answers(app: Any) -> None:
    request_scope = scope(app, "/v1/members/u-1", key=app.state.read_key)
    sent, passed = through(app, request_scope)
    assert not passed
    expected = route_answer(app, request_scope, members.member, user_id="u-1")
    assert sent[0]["headers"] == expected.raw_headers and sent[0]["status"] == 200
    assert sent[1]["body"] == expected.body
    assert b'"user_id":"u-1"' in expected.body
    assert request_scope["route"].path == "/v1/members/{user_id}"


@pytest.mark.parametrize("case", ["no key", "unknown key", "ingest key", "basic scheme", "unknown member",
                                  "unknown type", "value too long", "empty value", "extra parameter",
                                  "repeated parameter", "member with query", "sub-resource", "post", "empty id"])
def test_everything_else_goes_to_the_routes(app: Any, case: str) -> None:
    read, lookup = app.state.read_key, "/v1/members/lookup"
    request_scope = {
        "no key": scope(app, lookup, {"type": "email", "value": "ann.lee@example.com"}),
        "unknown key": scope(app, lookup, {"type": "email", "value": "ann.lee@example.com"}, "nope"),
        "ingest key": scope(app, "/v1/members/u-1", key=app.state.ingest_key),
        "basic scheme": scope(app, "/v1/members/u-1", key=read, scheme="Basic"),
        "unknown member": scope(app, "/v1/members/u-404", key=read),
        "unknown type": scope(app, lookup, {"type": "shoe_size", "value": "9"}, read),
        "value too long": scope(app, lookup, {"type": "anonymous_id", "value": "a" * 257}, read),
        "empty value": scope(app, lookup, {"type": "anonymous_id", "value": ""}, read),
        "extra parameter": scope(app, lookup, {"type": "user_id", "value": "u-1", "x": "1"}, read),
        "repeated parameter": scope(app, lookup, "type=user_id&value=u-1&value=u-1", read),
        "member with query": scope(app, "/v1/members/u-1", {"x": "1"}, read),
        "sub-resource": scope(app, "/v1/members/u-1/identities", key=read),
        "post": scope(app, "/v1/members/u-1", key=read, method="POST"),
        "empty id": scope(app, "/v1/members/", key=read),
    }[case]
    sent, passed = through(app, request_scope)
    assert passed and sent == []


def test_the_rate_limit_takes_one_token_per_answered_request_only(app: Any) -> None:
    keys = app.state.components.keys
    keys.limiter = RateLimiter(rate=0.001, burst=1)
    unknown = scope(app, "/v1/members/u-404", key=app.state.read_key)
    assert through(app, unknown)[1]  # handed on (a 404): no token taken here
    sent, passed = through(app, scope(app, "/v1/members/u-1", key=app.state.read_key))
    assert not passed and sent[0]["status"] == 200  # the one token
    sent, passed = through(app, scope(app, "/v1/members/u-1", key=app.state.read_key))
    assert passed and sent == []  # out of tokens: the route answers (429)
