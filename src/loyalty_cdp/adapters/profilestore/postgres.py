"""The scale-out profile store: the processor's graph, profiles and offset in PostgreSQL tables.

Each :meth:`PostgresProfileStore.commit` is one transaction committed with
``synchronous_commit=on``: the identifier index's changes, removals, then the members and
profiles written (upserts batched with ``executemany``, which psycopg sends as one pipeline),
the history renames, the new history records (binary COPY) and last the offset. Commits hold
``pg_advisory_xact_lock`` until they end, so two stores on one database never interleave: the
later commit wins whole. :meth:`load` reads in one ``REPEATABLE READ`` transaction, so the
offset it answers always matches the state.

Schema version 2 added ``member_identifiers`` (identifier key -> member id, the index of
``member_identities``); a version 1 store gets it built from ``member_identities`` when a
store object first connects.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import msgspec
import psycopg

from loyalty_cdp.adapters.profilestore.base import Changes, IdentityRecord, Snapshot, index_changes, member_keys
from loyalty_cdp.core.identity import Member
from loyalty_cdp.errors import StorageUnavailable

SCHEMA_VERSION = 2
# "lcdp_prf" in ASCII: the advisory lock that every commit, reset and schema creation takes.
COMMIT_LOCK = 7810196612590891622

_SCHEMA = (
    # One row: the schema version and the offset of the last event folded into the state.
    """CREATE TABLE IF NOT EXISTS profile_store_state (
        singleton      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
        schema_version INTEGER NOT NULL,
        log_offset     BIGINT NOT NULL,
        shared         BYTEA
    )""",
    "CREATE TABLE IF NOT EXISTS member_identities (member_id TEXT PRIMARY KEY, identities BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS member_profiles (member_id TEXT PRIMARY KEY, state BYTEA NOT NULL)",
    # ``key`` is UTF-8 in BYTEA, as the history's ``value`` (an identifier may hold NUL).
    "CREATE TABLE IF NOT EXISTS member_identifiers (key BYTEA PRIMARY KEY, member_id TEXT NOT NULL)",
    # ``position`` keeps insertion order, the tie-break between records of one timestamp.
    # ``value`` is UTF-8 in BYTEA: an identifier from client data (a trait's email, say) may
    # hold NUL, which TEXT refuses; every other column holds ids the ingest checks, or ours.
    """CREATE TABLE IF NOT EXISTS identity_history (
        position   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        member_id  TEXT NOT NULL,
        action     TEXT NOT NULL,
        message_id TEXT NOT NULL,
        timestamp  BIGINT NOT NULL,
        kind       TEXT NOT NULL,
        value      BYTEA NOT NULL,
        other_id   TEXT,
        reason     TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS identity_history_member ON identity_history (member_id, timestamp, position)",
)

_HISTORY_COLUMNS = "member_id, action, message_id, timestamp, kind, value, other_id, reason"
# The types of the history columns, in order, for binary COPY.
_HISTORY_TYPES = ("text", "text", "text", "int8", "text", "bytea", "text", "text")
_UPSERT_MEMBER = (
    "INSERT INTO member_identities (member_id, identities) VALUES (%s, %b) "
    "ON CONFLICT (member_id) DO UPDATE SET identities = EXCLUDED.identities"
)
_UPSERT_PROFILE = (
    "INSERT INTO member_profiles (member_id, state) VALUES (%s, %b) "
    "ON CONFLICT (member_id) DO UPDATE SET state = EXCLUDED.state"
)

_UPSERT_IDENTIFIER = (
    "INSERT INTO member_identifiers (key, member_id) VALUES (%b, %s) "
    "ON CONFLICT (key) DO UPDATE SET member_id = EXCLUDED.member_id"
)

_encode = msgspec.msgpack.Encoder().encode
_decode_identities = msgspec.msgpack.Decoder(dict[str, list[str]]).decode


@contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise StorageUnavailable(f"profile store on PostgreSQL: {what}: {exc}".strip()) from exc


class PostgresProfileStore:
    """:class:`~loyalty_cdp.adapters.profilestore.base.ProfileStore` in a PostgreSQL database.

    The constructor only remembers ``dsn``; the connection and the schema are created on
    first use, and a broken connection is replaced on the next call. Safe to share between
    threads (calls take turns on the one connection).
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        """The open connection, connecting and creating the schema first if needed (hold the lock)."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        with _storage_errors("cannot connect"):
            conn = psycopg.connect(self._dsn, autocommit=True)
        try:
            with _storage_errors("cannot create the schema"):
                conn.execute("SET synchronous_commit TO on")
                with conn.transaction():
                    # Serialise schema creation between processes starting together.
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (COMMIT_LOCK,))
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO profile_store_state (schema_version, log_offset) VALUES (%s, 0) "
                        "ON CONFLICT (singleton) DO NOTHING",
                        (SCHEMA_VERSION,),
                    )
                    row = conn.execute("SELECT schema_version FROM profile_store_state").fetchone()
                    if row is not None and row[0] < SCHEMA_VERSION:
                        _index_every_member(conn)
                        conn.execute("UPDATE profile_store_state SET schema_version = %s", (SCHEMA_VERSION,))
            if row is None or row[0] > SCHEMA_VERSION:
                raise StorageUnavailable(
                    f"the profile store has schema version {row and row[0]}; this version of "
                    f"loyalty-cdp reads up to {SCHEMA_VERSION}"
                )
        except StorageUnavailable:
            conn.close()
            raise
        self._conn = conn
        return conn

    def load(self, members: bool = True, profiles: bool = True) -> Snapshot:
        with self._lock, _storage_errors("load failed"):
            conn = self._connection()
            with conn.transaction():
                cursor = conn.cursor(binary=True)
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                offset, shared = cursor.execute("SELECT log_offset, shared FROM profile_store_state").fetchone()
                graph = [
                    Member(id=member_id, identities=_decode_identities(blob))
                    for member_id, blob in cursor.execute("SELECT member_id, identities FROM member_identities")
                ] if members else []
                blobs = dict(cursor.execute("SELECT member_id, state FROM member_profiles")) if profiles else {}
        return Snapshot(offset=offset, members=graph, profiles=blobs, shared=shared)

    def owner(self, key: str) -> str | None:
        with self._lock, _storage_errors("identifier read failed"):
            row = self._connection().execute("SELECT member_id FROM member_identifiers WHERE key = %b",
                                             (key.encode(),)).fetchone()
        return None if row is None else row[0]

    def members_owning(self, keys: Iterable[str]) -> list[Member]:
        with self._lock, _storage_errors("member read failed"):
            cursor = self._connection().cursor(binary=True)
            rows = cursor.execute(
                "SELECT member_id, identities FROM member_identities WHERE member_id IN "
                "(SELECT member_id FROM member_identifiers WHERE key = ANY(%s))", ([key.encode() for key in keys],)
            ).fetchall()
        return [Member(id=member_id, identities=_decode_identities(blob)) for member_id, blob in rows]

    def member(self, member_id: str) -> Member | None:
        with self._lock, _storage_errors("member read failed"):
            row = self._connection().cursor(binary=True).execute(
                "SELECT identities FROM member_identities WHERE member_id = %s", (member_id,)).fetchone()
        return None if row is None else Member(id=member_id, identities=_decode_identities(row[0]))

    def commit(self, changes: Changes) -> None:
        with self._lock, _storage_errors("commit failed"):
            conn = self._connection()
            with conn.transaction():
                cursor = conn.cursor()
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (COMMIT_LOCK,))
                drop, add = index_changes(_identities(cursor, {*changes.removed_members,
                                                                *(m.id for m in changes.members)}), changes)
                cursor.executemany("DELETE FROM member_identifiers WHERE key = %b AND member_id = %s",
                                   [(key.encode(), member_id) for key, member_id in drop])
                cursor.executemany(_UPSERT_IDENTIFIER, [(key.encode(), member_id) for key, member_id in add])
                if changes.removed_members:
                    cursor.execute("DELETE FROM member_identities WHERE member_id = ANY(%s)",
                                   (list(changes.removed_members),))
                if changes.removed_profiles:
                    cursor.execute("DELETE FROM member_profiles WHERE member_id = ANY(%s)",
                                   (list(changes.removed_profiles),))
                cursor.executemany(_UPSERT_MEMBER, [(m.id, _encode(m.identities)) for m in changes.members])
                cursor.executemany(_UPSERT_PROFILE, list(changes.profiles.items()))
                # One statement per rename, in order, as a chain of renames needs.
                cursor.executemany("UPDATE identity_history SET member_id = %s WHERE member_id = %s",
                                   [(new, old) for old, new in changes.renamed.items()])
                if changes.history:
                    with cursor.copy(f"COPY identity_history ({_HISTORY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(_HISTORY_TYPES)
                        for r in changes.history:
                            copy.write_row((r.member_id, r.action, r.message_id, r.timestamp, r.kind,
                                            r.value.encode(), r.other_id, r.reason))
                cursor.execute("UPDATE profile_store_state SET log_offset = %s", (changes.offset,))
                if changes.shared is not None:
                    cursor.execute("UPDATE profile_store_state SET shared = %s", (changes.shared,))

    def history(self, member_id: str) -> list[IdentityRecord]:
        with self._lock, _storage_errors("history read failed"):
            rows = self._connection().execute(
                f"SELECT {_HISTORY_COLUMNS} FROM identity_history WHERE member_id = %s ORDER BY timestamp, position",
                (member_id,),
            ).fetchall()
        return [
            IdentityRecord(member_id, action, message_id, timestamp, kind, value.decode(), other_id, reason)
            for member_id, action, message_id, timestamp, kind, value, other_id, reason in rows
        ]

    def iter_profiles(self) -> Iterator[tuple[str, bytes]]:
        with self._lock, _storage_errors("profile scan failed"):
            cursor = self._connection().cursor(binary=True)
            rows = cursor.execute("SELECT member_id, state FROM member_profiles ORDER BY member_id").fetchall()
        yield from rows

    def erase_member(self, member_id: str) -> None:
        """Delete in one transaction, then VACUUM the four tables so the dead rows leave the heap."""
        with self._lock, _storage_errors("erasure failed"):
            conn = self._connection()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (COMMIT_LOCK,))
                identities = _identities(conn.cursor(), {member_id}).get(member_id, {})
                conn.cursor().executemany("DELETE FROM member_identifiers WHERE key = %b AND member_id = %s",
                                          [(key.encode(), member_id) for key in member_keys(identities)])
                conn.execute("DELETE FROM member_identities WHERE member_id = %s", (member_id,))
                conn.execute("DELETE FROM member_profiles WHERE member_id = %s", (member_id,))
                conn.execute("DELETE FROM identity_history WHERE member_id = %s", (member_id,))
            autocommit = conn.autocommit
            conn.autocommit = True
            try:
                conn.execute("VACUUM member_identities, member_identifiers, member_profiles, identity_history")
            finally:
                conn.autocommit = autocommit

    def reset(self) -> None:
        """Empty every table (TRUNCATE: the space is freed at once) and set the offset to 0."""
        with self._lock, _storage_errors("reset failed"):
            conn = self._connection()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (COMMIT_LOCK,))
                conn.execute("TRUNCATE member_identities, member_identifiers, member_profiles, identity_history "
                             "RESTART IDENTITY")
                conn.execute("UPDATE profile_store_state SET log_offset = 0, shared = NULL")

    def close(self) -> None:
        """Close the connection; the store reconnects if it is used again."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


def _identities(cursor: psycopg.Cursor, member_ids: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """The committed identities of these members (those that exist), read in the cursor's transaction."""
    rows = cursor.execute("SELECT member_id, identities FROM member_identities WHERE member_id = ANY(%s)",
                          (list(member_ids),)).fetchall()
    return {member_id: _decode_identities(blob) for member_id, blob in rows}


def _index_every_member(conn: psycopg.Connection) -> None:
    """Fill ``member_identifiers`` from ``member_identities`` (a version 1 store), in the caller's transaction."""
    rows = conn.cursor(binary=True).execute("SELECT member_id, identities FROM member_identities").fetchall()
    conn.cursor().executemany(_UPSERT_IDENTIFIER, [(key.encode(), member_id) for member_id, blob in rows
                                                   for key in member_keys(_decode_identities(blob))])
