"""API keys in SQLite: hashed at rest, scoped, revocable at once across connections."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from loyalty_cdp.adapters.keystore import KeyStore, parse_scopes
from loyalty_cdp.errors import InvalidInput, NotFound


def test_create_verify_and_scopes(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create(frozenset({"ingest", "read"}))
    assert key.startswith("lcdp_") and len(key) > 40
    verified = store.verify(key)
    assert verified is not None and verified.scopes == {"ingest", "read"}
    assert store.verify(key + "x") is None
    assert store.verify("") is None
    store.close()


def test_only_the_digest_is_stored(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create(frozenset({"admin"}))
    store.close()
    for file in tmp_path.iterdir():
        assert key.encode() not in file.read_bytes()


def test_revocation_by_another_process_takes_effect_on_the_next_verify(tmp_path: Path) -> None:
    server_side = KeyStore(tmp_path / "keys.db")
    key, record = server_side.create(frozenset({"ingest"}))
    assert server_side.verify(key) is not None
    cli_side = KeyStore(tmp_path / "keys.db")
    revoked = cli_side.revoke(record.key_id)
    assert revoked.revoked_at is not None
    cli_side.close()
    assert server_side.verify(key) is None
    server_side.close()


def test_last_use_is_recorded(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create(frozenset({"read"}))
    store.verify(key)
    store.flush_usage()
    [listed] = store.list()
    assert listed.last_used_at is not None
    store.close()
    (count,) = sqlite3.connect(tmp_path / "keys.db").execute("SELECT count(*) FROM api_keys").fetchone()
    assert count == 1


def test_unknown_key_id_and_bad_scopes(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    with pytest.raises(NotFound):
        store.revoke("nope")
    store.close()
    with pytest.raises(InvalidInput, match="unknown scope"):
        parse_scopes("ingest,superuser")
    with pytest.raises(InvalidInput, match="at least one"):
        parse_scopes(" , ")
    assert parse_scopes("ingest, read") == {"ingest", "read"}


def test_rate_limiter_allows_the_burst_then_the_rate() -> None:
    from loyalty_cdp.adapters.keystore import RateLimiter

    limiter = RateLimiter(rate=10, burst=20)
    assert all(limiter.allow("k1", now=100.0) for _ in range(20))
    assert not limiter.allow("k1", now=100.0)
    assert limiter.allow("k2", now=100.0)  # every key has its own bucket
    assert sum(limiter.allow("k1", now=101.0) for _ in range(15)) == 10  # a second buys ten requests
    assert sum(limiter.allow("k1", now=110.0) for _ in range(50)) == 20  # refilled to the burst, no more
