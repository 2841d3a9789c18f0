"""The embedded profile store: ``<data-dir>/profiles.db``, SQLite in WAL mode.

Besides the processor's connection (commits, loads, erasure), every thread that reads single
profiles or identifiers (:meth:`SqliteProfileStore.read_profile` and :meth:`SqliteProfileStore.owner`,
the member view's reads) gets a read-only connection of its own: in WAL mode a reader sees the
last commit and never waits for a writer.

The ``identifiers`` table (identifier key -> member id) is the index of the ``members`` table,
written in the same transaction; a store from before it existed gets it built from ``members``
when it is first opened.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec

from loyalty_cdp.adapters.profilestore.base import Changes, IdentityRecord, Snapshot, index_changes, member_keys
from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT, switch_to_wal
from loyalty_cdp.core.identity import Member
from loyalty_cdp.errors import StorageUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS members (member_id TEXT PRIMARY KEY, identities BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (member_id TEXT PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS processor (
    id INTEGER PRIMARY KEY CHECK (id = 1), log_offset INTEGER NOT NULL, shared BLOB
);
INSERT OR IGNORE INTO processor (id, log_offset) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS identity_history (
    member_id TEXT NOT NULL, action TEXT NOT NULL, message_id TEXT NOT NULL, timestamp INTEGER NOT NULL,
    kind TEXT NOT NULL, value TEXT NOT NULL, other_id TEXT, reason TEXT
);
CREATE INDEX IF NOT EXISTS identity_history_member ON identity_history (member_id);
"""
_IDENTIFIERS = "CREATE TABLE identifiers (key TEXT PRIMARY KEY, member_id TEXT NOT NULL) WITHOUT ROWID"

_encode = msgspec.msgpack.Encoder().encode
_decode_identities = msgspec.msgpack.Decoder(dict[str, list[str]]).decode
SCAN_CHUNK = 500  # profiles read per statement by scan_profiles (no read transaction spans a scan)
IN_CHUNK = 500  # ids or keys bound per ``IN (...)`` statement (SQLite caps the parameters of one)


class SqliteProfileStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            switch_to_wal(self._db)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute(BUSY_TIMEOUT)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"profile store {path}: {exc}") from exc
        self._lock = threading.Lock()
        self._create_identifiers()
        self._local = threading.local()  # each reading thread's own connection
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    def _reader(self) -> sqlite3.Connection:
        """The calling thread's read-only connection (opened on first use)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._readers_lock:
                if self._closed:
                    raise StorageUnavailable(f"profile store {self.path}: closed")
                with self._storage_errors():
                    conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                    conn.execute("PRAGMA query_only=ON")
                    conn.execute(BUSY_TIMEOUT)
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    def _create_identifiers(self) -> None:
        """Create the identifier index, filled from ``members`` (a store written before it existed).
        Checked again in the write transaction: a store opened by two processes at once builds it once."""
        exists = "SELECT 1 FROM sqlite_master WHERE name = 'identifiers'"
        with self._storage_errors():
            if self._db.execute(exists).fetchone():
                return
        with self._write_transaction():
            if self._db.execute(exists).fetchone():
                return
            self._db.execute(_IDENTIFIERS)
            self._db.executemany(
                "INSERT OR REPLACE INTO identifiers (key, member_id) VALUES (?, ?)",
                ((key, member_id) for member_id, blob in self._db.execute("SELECT member_id, identities FROM members")
                 for key in member_keys(_decode_identities(blob))))

    def owner(self, key: str) -> str | None:
        """The member owning an identifier key as last committed (any thread; never waits for a commit)."""
        with self._storage_errors():
            rows = self._reader().execute("SELECT member_id FROM identifiers WHERE key = ?", (key,)).fetchall()
        return rows[0][0] if rows else None

    def members_owning(self, keys: Iterable[str]) -> list[Member]:
        wanted = list(keys)
        found: dict[str, Member] = {}
        with self._lock, self._storage_errors():
            for start in range(0, len(wanted), IN_CHUNK):
                chunk = wanted[start:start + IN_CHUNK]
                rows = self._db.execute(
                    "SELECT member_id, identities FROM members WHERE member_id IN "
                    f"(SELECT member_id FROM identifiers WHERE key IN ({','.join('?' * len(chunk))}))", chunk)
                found.update((member_id, Member(id=member_id, identities=_decode_identities(blob)))
                             for member_id, blob in rows if member_id not in found)
        return list(found.values())

    def member(self, member_id: str) -> Member | None:
        with self._lock, self._storage_errors():
            row = self._db.execute("SELECT identities FROM members WHERE member_id = ?", (member_id,)).fetchone()
        return None if row is None else Member(id=member_id, identities=_decode_identities(row[0]))

    def _identities(self, member_ids: Sequence[str]) -> dict[str, dict[str, list[str]]]:
        """The committed identities of these members (those that exist), in the current transaction."""
        found: dict[str, dict[str, list[str]]] = {}
        for start in range(0, len(member_ids), IN_CHUNK):
            chunk = member_ids[start:start + IN_CHUNK]
            rows = self._db.execute(
                f"SELECT member_id, identities FROM members WHERE member_id IN ({','.join('?' * len(chunk))})", chunk)
            found.update((member_id, _decode_identities(blob)) for member_id, blob in rows)
        return found

    def read_profile(self, member_id: str) -> bytes | None:
        """One member's encoded profile as last committed, or None (any thread; never waits for a commit)."""
        with self._storage_errors():
            rows = self._reader().execute("SELECT state FROM profiles WHERE member_id = ?", (member_id,)).fetchall()
        return rows[0][0] if rows else None

    def scan_profiles(self) -> Iterator[tuple[str, bytes]]:
        """Every committed (member id, encoded profile) in member id order, read ``SCAN_CHUNK`` at a
        time on the calling thread's connection, so that a long walk holds no read transaction."""
        after = ""
        while True:
            with self._storage_errors():
                rows = self._reader().execute(
                    "SELECT member_id, state FROM profiles WHERE member_id > ? ORDER BY member_id LIMIT ?",
                    (after, SCAN_CHUNK)).fetchall()
            yield from rows
            if len(rows) < SCAN_CHUNK:
                return
            after = rows[-1][0]

    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"profile store {self.path}: {exc}") from exc

    @contextmanager
    def _write_transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back if anything inside raises."""
        with self._storage_errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            finally:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")

    def load(self, members: bool = True, profiles: bool = True) -> Snapshot:
        """Read in one transaction: another connection's commit cannot land between the reads."""
        with self._lock, self._storage_errors():
            self._db.execute("BEGIN")
            try:
                offset, shared = self._db.execute("SELECT log_offset, shared FROM processor").fetchone()
                graph = [
                    Member(id=member_id, identities=_decode_identities(blob))
                    for member_id, blob in self._db.execute("SELECT member_id, identities FROM members")
                ] if members else []
                blobs = dict(self._db.execute("SELECT member_id, state FROM profiles")) if profiles else {}
            finally:
                self._db.execute("COMMIT")
        return Snapshot(offset=offset, members=graph, profiles=blobs, shared=shared)

    def commit(self, changes: Changes) -> None:
        with self._lock, self._write_transaction():
            drop, add = index_changes(
                self._identities([*{*changes.removed_members, *(m.id for m in changes.members)}]), changes)
            self._db.executemany("DELETE FROM identifiers WHERE key = ? AND member_id = ?", drop)
            self._db.executemany("INSERT OR REPLACE INTO identifiers (key, member_id) VALUES (?, ?)", add)
            if changes.removed_members:
                self._db.executemany("DELETE FROM members WHERE member_id = ?",
                                     [(m,) for m in changes.removed_members])
            if changes.removed_profiles:
                self._db.executemany("DELETE FROM profiles WHERE member_id = ?",
                                     [(m,) for m in changes.removed_profiles])
            self._db.executemany(
                "INSERT OR REPLACE INTO members (member_id, identities) VALUES (?, ?)",
                [(m.id, _encode(m.identities)) for m in changes.members],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO profiles (member_id, state) VALUES (?, ?)",
                list(changes.profiles.items()),
            )
            self._db.executemany(
                "UPDATE identity_history SET member_id = ? WHERE member_id = ?",
                [(new, old) for old, new in changes.renamed.items()],
            )
            self._db.executemany(
                "INSERT INTO identity_history VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [msgspec.structs.astuple(record) for record in changes.history],
            )
            self._db.execute("UPDATE processor SET log_offset = ?", (changes.offset,))
            if changes.shared is not None:
                self._db.execute("UPDATE processor SET shared = ?", (changes.shared,))

    def history(self, member_id: str) -> list[IdentityRecord]:
        with self._lock, self._storage_errors():
            rows = self._db.execute(
                "SELECT * FROM identity_history WHERE member_id = ? ORDER BY timestamp, rowid", (member_id,)
            ).fetchall()
        return [IdentityRecord(*row) for row in rows]

    def iter_profiles(self) -> Iterator[tuple[str, bytes]]:
        """In chunks (:meth:`scan_profiles`): a walk over every member holds ``SCAN_CHUNK`` profiles at a time."""
        return self.scan_profiles()

    def erase_member(self, member_id: str) -> None:
        with self._lock:
            with self._write_transaction():
                identities = self._identities([member_id]).get(member_id, {})
                self._db.executemany("DELETE FROM identifiers WHERE key = ? AND member_id = ?",
                                     [(key, member_id) for key in member_keys(identities)])
                self._db.execute("DELETE FROM members WHERE member_id = ?", (member_id,))
                self._db.execute("DELETE FROM profiles WHERE member_id = ?", (member_id,))
                self._db.execute("DELETE FROM identity_history WHERE member_id = ?", (member_id,))
            with self._storage_errors():  # secure_delete zeroed the pages; this empties the WAL
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def reset(self) -> None:
        with self._lock:
            with self._write_transaction():
                self._db.execute("DELETE FROM members")
                self._db.execute("DELETE FROM identifiers")
                self._db.execute("DELETE FROM profiles")
                self._db.execute("DELETE FROM identity_history")
                self._db.execute("UPDATE processor SET log_offset = 0, shared = NULL")
            with self._storage_errors():
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._db.close()
        with self._readers_lock:
            self._closed = True
            for conn in self._readers:
                conn.close()
            self._readers.clear()
