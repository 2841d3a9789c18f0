"""The suppression list: keyed hashes only, identifiers found wherever identity finds them, fast, seen across processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from loyalty_cdp.adapters.suppression import (
    PRIVACY_DB,
    SECRET_FILE,
    SuppressionList,
    load_or_create_secret,
)
from loyalty_cdp.core.events import Event, normalise
from loyalty_cdp.core.identifiers import decode_event, extract_identifiers
from loyalty_cdp.errors import ConfigError, InvalidInput


def event(call: dict[str, Any], message_id: str = "m") -> Event:
    return normalise(call, call_type=None, received_at=1_767_225_600_000, default_message_id=message_id)


def test_the_secret_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: load_or_create_secret(tmp_path), range(16)))
    assert len(secrets) == 1 and len(next(iter(secrets))) == 32
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]
    assert load_or_create_secret(tmp_path) in secrets


def test_a_readable_secret_is_tightened_and_a_damaged_one_refused(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path)
    os.chmod(tmp_path / SECRET_FILE, 0o644)
    assert load_or_create_secret(tmp_path) == secret
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    (tmp_path / SECRET_FILE).write_bytes(b"short")
    with pytest.raises(ConfigError):
        load_or_create_secret(tmp_path)


def test_identifiers_are_normalised_and_stored_only_as_keyed_hashes(tmp_path: Path) -> None:
    suppression = SuppressionList(tmp_path)
    assert suppression.add([("email", " Ann.Lee@Example.com "), ("phone", "+1 (415) 555-0123"), ("user_id", "u-ann")]) == 3
    assert suppression.add([("email", "ann.lee@example.com")]) == 0
    assert len(suppression) == 3
    assert suppression.is_suppressed("email", "ANN.LEE@example.com")
    assert suppression.is_suppressed("phone", "415-555-0123")  # national number, default region US
    assert not suppression.is_suppressed("email", "bob@example.com")
    assert not suppression.is_suppressed("user_id", "undefined")
    with pytest.raises(InvalidInput):
        suppression.add([("email", "bob@example.com"), ("email", "not an email")])
    assert not suppression.is_suppressed("email", "bob@example.com")  # nothing of a refused call is kept
    suppression.close()
    for file in tmp_path.iterdir():
        content = file.read_bytes().lower()
        for plain in (b"ann.lee", b"4155550123", b"u-ann"):
            assert plain not in content, (file.name, plain)


def test_events_are_matched_on_every_identifier_identity_reads(tmp_path: Path) -> None:
    suppression = SuppressionList(tmp_path)
    suppression.add([("email", "ann@example.com"), ("anonymous_id", "anon-ann"), ("card", "LC-1234-5678"),
                     ("device_id", "dev-ann"), ("ext.shopify_id", "8812")])
    events = [
        event({"type": "identify", "userId": "new-account", "traits": {"email": "ANN@example.com"}}),  # 0
        event({"type": "track", "event": "Order Completed", "anonymousId": "anon-ann"}),  # 1
        event({"type": "track", "event": "Order Completed", "userId": "bob", "properties": {"loyalty_card": "lc 1234 5678"}}),  # 2
        event({"type": "page", "userId": "someone", "context": {"traits": {"email": "ann@example.com"}}}),  # 3
        event({"type": "screen", "anonymousId": "x", "context": {"device": {"id": "dev-ann"}}}),  # 4
        event({"type": "track", "event": "Cart Viewed", "userId": "y",
               "context": {"externalIds": [{"id": "8812", "type": "shopify_id", "collection": "users"}]}}),  # 5
        event({"type": "alias", "userId": "z", "previousId": "anon-ann"}),  # 6
        event({"type": "track", "event": "Order Completed", "userId": "bob",
               "properties": {"email": "ann@example.com"}}),  # 7: a property email is not the sender's
        event({"type": "identify", "userId": "carol", "traits": {"email": "carol@example.com"}}),  # 8
    ]
    assert suppression.suppressed(events) == {0, 1, 2, 3, 4, 5, 6}
    assert suppression.suppressed([]) == set()
    keys = {"email:ann@example.com", "user_id:bob", "card:LC12345678", "anonymous_id:anon-ann"}
    assert suppression.suppressed_keys(keys) == keys - {"user_id:bob"}
    suppression.close()


def test_a_suppression_from_another_process_is_effective_within_a_second(tmp_path: Path) -> None:
    server_side = SuppressionList(tmp_path)
    batch = [event({"type": "track", "event": "Product Viewed", "userId": "u-late"})]
    assert server_side.suppressed(batch) == set()
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from loyalty_cdp.adapters.suppression import SuppressionList
        SuppressionList(Path({str(tmp_path)!r})).add([("user_id", "u-late")])
        print(time.time(), flush=True)
        time.sleep(5)
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as other:
        try:
            assert other.stdout is not None
            committed_at = float(other.stdout.readline())
            while not server_side.suppressed(batch):
                assert time.time() - committed_at < 1.0, "the suppression was not seen within one second"
                time.sleep(0.005)
        finally:
            other.kill()
    server_side.close()


def _per_event_seconds(run: Any, events: list[Event], batch: int = 500) -> float:
    """Best of five runs over ``events`` in batches, per event (the best run is the least disturbed one)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for start in range(0, len(events), batch):
            run(events[start:start + batch])
        best = min(best, time.perf_counter() - started)
    return best / len(events)


def test_the_batch_check_costs_a_few_microseconds_per_event(tmp_path: Path) -> None:
    events = [
        event({"type": "track", "event": "Order Completed", "userId": f"u{i % 700}", "anonymousId": f"anon-{i % 900}",
               "context": {"channel": "web", "traits": {"email": f"m{i % 700}@example.com"}},
               "properties": {"order_id": f"o{i}", "total": 25.0, "currency": "USD",
                              "products": [{"product_id": "p1", "sku": "s1", "category": "coffee", "price": 25.0, "quantity": 1}]}},
              f"m{i}")
        for i in range(5000)
    ]
    suppression = SuppressionList(tmp_path)
    empty = _per_event_seconds(suppression.suppressed, events)
    suppression.add([("email", f"gone{i}@example.com") for i in range(2000)] + [("user_id", "u7")])
    check = _per_event_seconds(suppression.suppressed, events)
    identity = _per_event_seconds(lambda batch: [extract_identifiers(decode_event(e), "US") for e in batch], events)
    print(f"\nsuppression check: {check * 1e6:.2f} µs/event with 2,001 suppressed identifiers, "
          f"{empty * 1e6:.3f} µs/event with none; identifier extraction alone {identity * 1e6:.2f} µs/event")
    assert suppression.suppressed(events) == {i for i in range(5000) if i % 700 == 7}
    assert empty < 0.2e-6  # one PRAGMA per batch, nothing per event
    # Beyond reading the identifiers (which identity resolution does anyway), a set lookup per identifier.
    assert check < identity * 1.5 + 1e-6
    assert check < 25e-6
    suppression.close()


def test_the_list_survives_reopening(tmp_path: Path) -> None:
    first = SuppressionList(tmp_path)
    first.add([("user_id", "u1")])
    first.close()
    assert (tmp_path / PRIVACY_DB).exists()
    reopened = SuppressionList(tmp_path)
    assert reopened.is_suppressed("user_id", "u1") and len(reopened) == 1
    reopened.close()
