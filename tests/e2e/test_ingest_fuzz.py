"""Property: whatever a client sends to ingest, the answer is 200 or a 4xx with a JSON reason, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loyalty_cdp.testing import ServerProcess

ENDPOINTS = ["identify", "track", "page", "screen", "group", "alias", "batch"]
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=25)
field_names = st.sampled_from(["userId", "anonymousId", "messageId", "event", "type", "timestamp", "sentAt",
                               "context", "properties", "traits", "name", "groupId", "previousId", "writeKey"])
calls = st.dictionaries(field_names, json_values, max_size=9)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, str]]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    with ServerProcess(data_dir) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        yield http, server.create_key("ingest")


def check(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        body = response.json()
        assert body["success"] is False and body["message"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(ENDPOINTS), call=calls)
def test_random_calls_never_get_a_5xx(client: tuple[httpx.Client, str], endpoint: str, call: dict) -> None:
    test_client, key = client
    body = {"batch": [call, {**call, "type": "track"}]} if endpoint == "batch" else call
    check(test_client.post(f"/v1/{endpoint}", content=json.dumps(body), auth=(key, "")))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(ENDPOINTS), raw=st.binary(max_size=300),
       encoding=st.sampled_from([None, "gzip", "deflate", "identity"]))
def test_random_bytes_never_get_a_5xx(client: tuple[httpx.Client, str], endpoint: str, raw: bytes,
                                      encoding: str | None) -> None:
    test_client, key = client
    headers = {"Content-Encoding": encoding} if encoding else {}
    check(test_client.post(f"/v1/{endpoint}", content=raw, headers=headers, auth=(key, "")))
