"""API keys: created with scopes, stored hashed in SQLite, verified in constant time, revocable at once.

A key is ``lcdp_`` followed by 43 URL-safe random characters (256 bits). Only its SHA-256
digest is stored: with that much entropy a slow password hash would add latency to every
request and no security. Verification compares digests with :func:`hmac.compare_digest`.

The server keeps the keys in memory and reloads them whenever SQLite's ``data_version``
says another connection (a ``loyalty-cdp keys revoke`` in another process) changed the
file, so revocation takes effect on the very next request. Last-use times are collected in
memory and written in one statement at most once a second, never on the request path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT_S, switch_to_wal
from loyalty_cdp.errors import InvalidInput, NotFound

SCOPES = ("ingest", "read", "loyalty", "admin", "privacy")
KEY_PREFIX = "lcdp_"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at INTEGER
);
"""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    scopes: frozenset[str]
    created_at: int
    last_used_at: int | None
    revoked_at: int | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def parse_scopes(text: str) -> frozenset[str]:
    """``"ingest,read"`` -> the scopes, rejecting unknown or empty ones."""
    scopes = frozenset(part.strip() for part in text.split(",") if part.strip())
    if not scopes:
        raise InvalidInput("scopes", f"at least one scope is required ({', '.join(SCOPES)})")
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise InvalidInput("scopes", f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return scopes


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)

    def allow(self, key_id: str, now: float | None = None) -> bool:
        at = time.monotonic() if now is None else now
        tokens, then = self._buckets.get(key_id, (self.burst, at))
        tokens = min(self.burst, tokens + (at - then) * self.rate)
        if tokens < 1.0:
            self._buckets[key_id] = (tokens, at)
            return False
        self._buckets[key_id] = (tokens - 1.0, at)
        return True


class KeyStore:
    """The key table of ``<data-dir>/keys.db``; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        switch_to_wal(self._db)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.limiter: RateLimiter | None = None  # set by the server (per-key rate limits)
        self._by_digest: dict[bytes, ApiKey] = {}
        self._seen_version = -1
        self._used: dict[str, int] = {}
        self._flushed_at = 0.0

    def create(self, scopes: frozenset[str], now_ms: int | None = None) -> tuple[str, ApiKey]:
        """A new key and its record; the key itself is never stored and cannot be shown again."""
        unknown = scopes - set(SCOPES)
        if not scopes or unknown:
            raise InvalidInput("scopes", f"unknown or empty scopes: {sorted(unknown)}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            key_id=secrets.token_hex(6),
            scopes=scopes,
            created_at=now_ms if now_ms is not None else int(time.time() * 1000),
            last_used_at=None,
            revoked_at=None,
        )
        with self._lock:
            self._db.execute(
                "INSERT INTO api_keys (key_id, digest, scopes, created_at) VALUES (?, ?, ?, ?)",
                (record.key_id, _digest(key), ",".join(sorted(scopes)), record.created_at),
            )
        return key, record

    def list(self) -> list[ApiKey]:
        self.flush_usage(force=True)
        with self._lock:
            rows = self._db.execute(
                "SELECT key_id, scopes, created_at, last_used_at, revoked_at FROM api_keys"
                " ORDER BY created_at, key_id"
            ).fetchall()
        return [self._record(*row) for row in rows]

    def revoke(self, key_id: str, now_ms: int | None = None) -> ApiKey:
        at = now_ms if now_ms is not None else int(time.time() * 1000)
        with self._lock:
            cursor = self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (at, key_id),
            )
            if cursor.rowcount == 0:
                exists = self._db.execute(
                    "SELECT 1 FROM api_keys WHERE key_id = ?", (key_id,)
                ).fetchone()
                if not exists:
                    raise NotFound(f"no API key with id {key_id!r}")
        return next(k for k in self.list() if k.key_id == key_id)

    def verify(self, key: str) -> ApiKey | None:
        """The active key record for ``key``, or None; records the use."""
        digest = _digest(key)
        with self._lock:
            self._refresh()
            record = self._by_digest.get(digest)
        if record is None or not record.active:
            return None
        # The dict lookup found the digest; compare again in constant time so that
        # a timing difference can never tell an attacker how much of a digest matched.
        if not hmac.compare_digest(digest, _digest(key)):
            return None
        self._used[record.key_id] = int(time.time() * 1000)
        if time.monotonic() - self._flushed_at > 1.0:
            self.flush_usage()
        return record

    def flush_usage(self, force: bool = False) -> None:
        """Write the collected last-use times in one statement."""
        if not self._used and not force:
            return
        used, self._used = self._used, {}
        self._flushed_at = time.monotonic()
        if used:
            with self._lock:
                self._db.executemany(
                    "UPDATE api_keys SET last_used_at = ? WHERE key_id = ?",
                    [(at, key_id) for key_id, at in used.items()],
                )

    def close(self) -> None:
        self.flush_usage()
        with self._lock:
            self._db.close()

    def _refresh(self) -> None:
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        total = self._db.execute("SELECT total_changes()").fetchone()[0]
        marker = version * 1_000_003 + total
        if marker == self._seen_version:
            return
        rows = self._db.execute(
            "SELECT key_id, digest, scopes, created_at, last_used_at, revoked_at FROM api_keys"
        ).fetchall()
        self._by_digest = {row[1]: self._record(row[0], *row[2:]) for row in rows}
        self._seen_version = marker

    @staticmethod
    def _record(
        key_id: str, scopes: str, created_at: int, last_used_at: int | None, revoked_at: int | None
    ) -> ApiKey:
        return ApiKey(key_id, frozenset(scopes.split(",")), created_at, last_used_at, revoked_at)
