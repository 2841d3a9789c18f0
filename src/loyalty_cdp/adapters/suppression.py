"""The suppression list: keyed hashes of erased people's identifiers, checked before every append.

An erased person's identifiers are stored only as HMAC-SHA256 of ``kind:normalised value``
under a secret kept in ``<data-dir>/secret.key`` (32 random bytes, created on first use with
mode 0600), so the list itself (``suppressed`` in ``<data-dir>/privacy.db``) reveals no
identifier, not even to someone who can guess emails, without the secret.

The ingest hot path asks :meth:`SuppressionList.suppressed` about each batch: it decodes
each event's identifiers exactly as identity resolution does
(:func:`~loyalty_cdp.core.identifiers.extract_identifiers`), hashes each distinct one once
(hashes are cached), and looks them up in an in-memory set. The processor, which extracts
every event's identifiers for identity resolution anyway, asks :meth:`SuppressionList.suppressed_keys`
about them instead, so that it does not decode the events twice. The set is reloaded whenever
SQLite's ``data_version`` says another connection (another process's erasure) changed the
table, so a suppression made anywhere takes effect on the next batch. An empty list costs
one ``PRAGMA`` per batch and nothing per event.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT_S, switch_to_wal
from loyalty_cdp.core.identifiers import (
    EventRecord,
    decode_event,
    extract_identifiers,
    identifier_key,
    normalise_identifier,
)
from loyalty_cdp.errors import ConfigError, InvalidInput

SECRET_FILE = "secret.key"
PRIVACY_DB = "privacy.db"
SECRET_BYTES = 32
DIGEST_CACHE_ENTRIES = 1 << 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressed (
    digest BLOB PRIMARY KEY,
    added_at INTEGER NOT NULL
) WITHOUT ROWID;
"""


def _read_secret(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise ConfigError(str(path), f"must hold exactly {SECRET_BYTES} bytes; restore it from the backup")
    return secret


def load_or_create_secret(data_dir: Path) -> bytes:
    """The data directory's secret, created (0600, atomically, once even under races) on first use.

    Losing the file makes every stored identifier hash unmatchable: back it up with the data.
    """
    path = data_dir / SECRET_FILE
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    temporary = data_dir / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(SECRET_BYTES))
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process created it first: use theirs
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return _read_secret(path)


def identifier_digest(secret: bytes, key: str) -> bytes:
    """HMAC-SHA256 of an identifier key (``kind:normalised value``) under ``secret``."""
    return hmac.digest(secret, key.encode("utf-8", "surrogatepass"), "sha256")


def normalised_key(kind: str, value: str, default_region: str | None) -> str | None:
    """``kind:value`` with the value normalised as identity resolution does; None when unusable."""
    normal = normalise_identifier(kind, value, default_region)
    return None if normal is None else identifier_key(kind, normal)


def open_privacy_db(data_dir: Path) -> sqlite3.Connection:
    """A connection to ``<data-dir>/privacy.db`` with the settings every privacy store uses."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(data_dir / PRIVACY_DB, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    switch_to_wal(db)
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA secure_delete=ON")
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` when the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class SuppressionList:
    """The suppressed identifier hashes of ``<data-dir>/privacy.db``; safe to share between threads."""

    def __init__(self, data_dir: Path, default_region: str | None = "US") -> None:
        self._secret = load_or_create_secret(data_dir)
        self.region = default_region
        self._db = open_privacy_db(data_dir)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._digests: frozenset[bytes] = frozenset()
        self._seen_version: int | None = None
        self._cache: dict[str, bytes] = {}
        with self._lock:
            self._refresh()

    def add(self, identifiers: Iterable[tuple[str, str]], now_ms: int | None = None) -> int:
        """Suppress ``(kind, value)`` identifiers (values normalised here); answers how many were new.

        Durable when it returns, and effective at once in this process.
        """
        digests = []
        for kind, value in identifiers:
            key = normalised_key(kind, value, self.region)
            if key is None:
                raise InvalidInput("identifier", f"a {kind} value is not a usable identifier (malformed or blocked)")
            digests.append(identifier_digest(self._secret, key))
        at = now_ms if now_ms is not None else int(time.time() * 1000)
        with self._lock:
            before = self._db.total_changes
            with transaction(self._db):
                self._db.executemany(
                    "INSERT OR IGNORE INTO suppressed (digest, added_at) VALUES (?, ?)", [(d, at) for d in digests]
                )
            added = self._db.total_changes - before
            self._digests = self._digests.union(digests)
        return added

    def is_suppressed(self, kind: str, value: str) -> bool:
        """Whether the identifier (normalised here) is suppressed; an unusable one never is."""
        key = normalised_key(kind, value, self.region)
        if key is None:
            return False
        with self._lock:
            self._refresh()
        return identifier_digest(self._secret, key) in self._digests

    def suppressed(self, events: Sequence[EventRecord]) -> set[int]:
        """Indices of the events that carry any suppressed identifier (drop them before the append)."""
        with self._lock:
            self._refresh()
        digests = self._digests
        if not digests or not events:
            return set()
        digest_of = self._cached_digest
        hits: set[int] = set()
        for index, event in enumerate(events):
            for key in extract_identifiers(decode_event(event), self.region):
                if digest_of(key) in digests:
                    hits.add(index)
                    break
        return hits

    def suppressed_keys(self, keys: Iterable[str]) -> set[str]:
        """The suppressed ones among identifier keys (``kind:normalised value``, as the identity graph
        holds them): for a stage that has extracted the identifiers already, such as the processor."""
        with self._lock:
            self._refresh()
        digests = self._digests
        if not digests:
            return set()
        return {key for key in keys if self._cached_digest(key) in digests}

    def _cached_digest(self, key: str) -> bytes:
        digest = self._cache.get(key)
        if digest is None:
            if len(self._cache) >= DIGEST_CACHE_ENTRIES:
                self._cache.clear()
            digest = self._cache[key] = identifier_digest(self._secret, key)
        return digest

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
        return len(self._digests)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _refresh(self) -> None:
        """Reload the set if another connection changed the file (call with the lock held)."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        if version == self._seen_version:
            return
        rows = self._db.execute("SELECT digest FROM suppressed").fetchall()
        self._digests = frozenset(row[0] for row in rows)
        self._seen_version = version
