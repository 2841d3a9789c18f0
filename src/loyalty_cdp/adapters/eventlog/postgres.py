"""The scale-out event log: one PostgreSQL table, batches loaded with binary COPY.

Durability point: ``append`` returns after its transaction commits with
``synchronous_commit=on``. Each append COPYs the batch into a temporary staging table,
then inserts the first version of every id not yet stored, in batch order, and counts
conflicts by comparing payload hashes with the versions kept. Appends hold
``pg_advisory_xact_lock`` while they draw offsets from the identity column and until they
commit, so transactions commit in offset order: a reader that has seen offset ``n`` will
never later find a committed event below ``n`` (guarantee 3 of ``base.py``). One
connection writes (behind a lock) and another reads, so replay does not wait for ingest.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from msgspec.structs import astuple

from loyalty_cdp.adapters.eventlog.base import AppendResult, MemberReads, StoredEvent
from loyalty_cdp.core.events import Event
from loyalty_cdp.errors import InvalidInput, StorageUnavailable

SCHEMA_VERSION = 1
# "lcdp_log" in ASCII: the advisory lock every append of every process takes.
APPEND_LOCK = 7810196612590628711

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS event_log (
        "offset"     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id   TEXT NOT NULL UNIQUE,
        type         TEXT NOT NULL,
        event        TEXT,
        user_id      TEXT,
        anonymous_id TEXT,
        timestamp    BIGINT NOT NULL,
        received_at  BIGINT NOT NULL,
        channel      TEXT,
        body         BYTEA NOT NULL,
        payload_hash BYTEA NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS event_log_user_id ON event_log (user_id) WHERE user_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS event_log_anonymous_id ON event_log (anonymous_id) "
    "WHERE anonymous_id IS NOT NULL",
    # One row: the schema version and the number of events stored (count() in O(1)).
    """CREATE TABLE IF NOT EXISTS event_log_state (
        singleton      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
        schema_version INTEGER NOT NULL,
        stored         BIGINT NOT NULL
    )""",
)

_EVENT_COLUMNS = (
    "message_id, type, event, user_id, anonymous_id, timestamp, received_at, channel, body, "
    "payload_hash"
)
# The types of Event's fields, in order, for binary COPY.
_EVENT_TYPES = ("text",) * 5 + ("int8", "int8", "text", "bytea", "bytea")
_STAGING = """CREATE TEMPORARY TABLE IF NOT EXISTS event_log_staging (
    position     INTEGER NOT NULL,
    message_id   TEXT NOT NULL,
    type         TEXT NOT NULL,
    event        TEXT,
    user_id      TEXT,
    anonymous_id TEXT,
    timestamp    BIGINT NOT NULL,
    received_at  BIGINT NOT NULL,
    channel      TEXT,
    body         BYTEA NOT NULL,
    payload_hash BYTEA NOT NULL
) ON COMMIT DELETE ROWS"""
# The anti-join keeps known ids from drawing offsets; ON CONFLICT makes a writer that does
# not take the advisory lock (a manual INSERT) harmless rather than an error.
_INSERT_FIRST_VERSIONS = f"""
INSERT INTO event_log ({_EVENT_COLUMNS})
SELECT {_EVENT_COLUMNS} FROM (
    SELECT DISTINCT ON (message_id) * FROM event_log_staging ORDER BY message_id, position
) AS first_seen
WHERE NOT EXISTS (SELECT FROM event_log e WHERE e.message_id = first_seen.message_id)
ORDER BY position
ON CONFLICT (message_id) DO NOTHING
"""
# Every staged row now has a kept version; those that differ from it are the conflicts.
_COUNT_CONFLICTS = """
SELECT count(*) FROM event_log_staging s JOIN event_log e USING (message_id)
WHERE e.payload_hash <> s.payload_hash
"""
_COLUMNS = (
    '"offset", message_id, type, event, user_id, anonymous_id, timestamp, received_at, '
    "channel, body"
)
_OF_MEMBER = "(user_id = ANY(%s) OR anonymous_id = ANY(%s))"


@contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise StorageUnavailable(f"event log on PostgreSQL: {what}: {exc}".strip()) from exc


class PostgresEventLog(MemberReads):
    """:class:`~loyalty_cdp.adapters.eventlog.base.EventLog` in a PostgreSQL database.

    The constructor only remembers ``dsn``; connections and the schema are created on
    first use, and a broken connection is replaced on the next call. Safe to share
    between threads.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._open_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._writer: psycopg.Connection | None = None
        self._reader: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection:
        with _storage_errors("cannot connect"):
            return psycopg.connect(self._dsn, autocommit=True)

    def _create_schema(self, conn: psycopg.Connection) -> None:
        with _storage_errors("cannot create the schema"), conn.transaction():
            # Serialise schema creation between processes starting together.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO event_log_state (schema_version, stored) VALUES (%s, 0) "
                "ON CONFLICT (singleton) DO NOTHING",
                (SCHEMA_VERSION,),
            )
            row = conn.execute("SELECT schema_version FROM event_log_state").fetchone()
        if row is None or row[0] > SCHEMA_VERSION:
            raise StorageUnavailable(
                f"the event log has schema version {row and row[0]}; this version of "
                f"loyalty-cdp reads up to {SCHEMA_VERSION}"
            )

    def _connections(self) -> tuple[psycopg.Connection, psycopg.Connection]:
        with self._open_lock:
            if self._writer is None or self._writer.closed:
                writer = self._connect()
                try:
                    self._create_schema(writer)
                    with _storage_errors("cannot prepare the writer"):
                        writer.execute("SET synchronous_commit TO on")
                        writer.execute(_STAGING)
                except StorageUnavailable:
                    writer.close()
                    raise
                self._writer = writer
            if self._reader is None or self._reader.closed:
                self._reader = self._connect()
            return self._writer, self._reader

    def append(self, events: Sequence[Event]) -> AppendResult:
        """Store the events whose message id is new, in order, in one committed transaction.

        A repeated id (stored earlier or seen earlier in ``events``) is a duplicate; it is
        also a conflict when its payload hash differs from the version kept.
        """
        if not events:
            return AppendResult(appended=0, duplicates=0, conflicts=0)
        writer, _ = self._connections()
        with self._write_lock, _storage_errors("append failed"), writer.transaction():
            cursor = writer.cursor()
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (APPEND_LOCK,))
            with cursor.copy(
                f"COPY event_log_staging (position, {_EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(("int4", *_EVENT_TYPES))
                for position, event in enumerate(events):
                    copy.write_row((position, *astuple(event)))
            # Never prepared: a plan cached while the log was small would scan it forever.
            cursor.execute(_INSERT_FIRST_VERSIONS, prepare=False)
            appended = cursor.rowcount
            (conflicts,) = cursor.execute(_COUNT_CONFLICTS, prepare=False).fetchone() or (0,)
            if appended:
                cursor.execute("UPDATE event_log_state SET stored = stored + %s", (appended,))
        return AppendResult(
            appended=appended, duplicates=len(events) - appended, conflicts=conflicts
        )

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        _, reader = self._connections()
        with self._read_lock, _storage_errors("read failed"):
            return reader.cursor(binary=True).execute(sql, params).fetchall()

    def known(self, message_ids: Collection[str]) -> set[str]:
        if not message_ids:
            return set()
        rows = self._query("SELECT message_id FROM event_log WHERE message_id = ANY(%s)", (list(message_ids),))
        return {message_id for (message_id,) in rows}

    def read(self, after: int = 0, limit: int = 10_000) -> list[StoredEvent]:
        if limit < 1:
            raise InvalidInput("limit", f"must be at least 1, got {limit}")
        rows = self._query(
            f'SELECT {_COLUMNS} FROM event_log WHERE "offset" > %s ORDER BY "offset" LIMIT %s',
            (after, limit),
        )
        return [StoredEvent(*row) for row in rows]

    def _read_any(self, user_ids: set[str], anonymous_ids: set[str], through: int) -> list[StoredEvent]:
        """One query for the union of the members' ids."""
        rows = self._query(
            f'SELECT {_COLUMNS} FROM event_log WHERE {_OF_MEMBER} AND "offset" <= %s ORDER BY "offset"',
            (list(user_ids), list(anonymous_ids), through),
        )
        return [StoredEvent(*row) for row in rows]

    def delete_member(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        """Delete the member's events, then VACUUM so their tuples and index entries go too.

        VACUUM makes the space reusable; PostgreSQL does not overwrite it at once, nor its
        WAL segments until they are recycled (see ``docs/eventlog.md``).
        """
        if not user_ids and not anonymous_ids:
            return 0
        writer, reader = self._connections()
        with self._write_lock, _storage_errors("erasure failed"):
            with writer.transaction():
                deleted = writer.execute(
                    f"DELETE FROM event_log WHERE {_OF_MEMBER}",
                    (list(user_ids), list(anonymous_ids)),
                ).rowcount
                writer.execute("UPDATE event_log_state SET stored = stored - %s", (deleted,))
            if deleted:
                with self._read_lock:
                    reader.execute("VACUUM event_log")
        return deleted

    def last_offset(self) -> int:
        (row,) = self._query('SELECT coalesce(max("offset"), 0) FROM event_log', ())
        return int(row[0])

    def count(self) -> int:
        (row,) = self._query("SELECT stored FROM event_log_state", ())
        return int(row[0])

    def size_bytes(self) -> int:
        """Table, TOAST and index bytes of the event log."""
        (row,) = self._query("SELECT pg_total_relation_size('event_log')", ())
        return int(row[0])

    def close(self) -> None:
        """Close both connections; the log reopens them if it is used again."""
        with self._open_lock, self._write_lock, self._read_lock:
            for conn in (self._writer, self._reader):
                if conn is not None:
                    conn.close()
            self._writer = self._reader = None
