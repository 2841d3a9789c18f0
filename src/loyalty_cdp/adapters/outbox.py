"""The transactional outbox and dead-letter store: outbound messages on disk in SQLite (``<data-dir>/outbox.db``).

Atomicity with the decision that produced a message. SQLite commits atomically within one
database file only (across ``ATTACH``-ed files in WAL mode a crash can keep one file's
half), so a decision and its messages are atomic when they are written in one transaction
on one file. Two ways to get that:

- write the decision rows in the outbox's own file: ``with outbox.transaction() as conn:``
  insert the decision rows on ``conn``, then ``stage(conn, messages, now_ms)``; both commit
  together (``synchronous=FULL``) or neither does;
- keep the outbox tables in the decision store's file: call :func:`create_schema` and
  :func:`stage` on the decision store's connection inside its transaction, and open
  :class:`Outbox` on that file for the dispatcher.

Delivery guarantee, in the order it happens: a message is staged at most once per
``message_id`` (a repeat, even after delivery or dead-lettering, changes nothing); the
dispatcher *claims* due messages with a lease (a claimed row is invisible to other claims
until the lease ends, so a crashed dispatcher's messages come back by themselves); after the
send it records the outcome and the status events in one transaction. A crash between the
provider's acceptance and that record resends the message with the same idempotency key:
delivery is at least once. Outcome records use ``synchronous=NORMAL`` (a power cut may undo
the last few, which again only means a resend); staging uses ``FULL``.

Memory: nothing is held here; readers page through the tables with ``LIMIT``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msgspec

from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT, switch_to_wal
from loyalty_cdp.core.events import Event
from loyalty_cdp.core.messages import OutboundMessage, decode_message, encode_message, validate_message
from loyalty_cdp.errors import InvalidInput, StorageUnavailable

OUTBOX_FILE = "outbox.db"  # in the data directory

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox_messages (
        message_id      TEXT PRIMARY KEY,
        destination     TEXT NOT NULL,
        body            BLOB NOT NULL,
        enqueued_at     INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        lease_until     INTEGER NOT NULL DEFAULT 0,
        attempts        INTEGER NOT NULL DEFAULT 0,
        replays         INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_messages_due ON outbox_messages (destination, next_attempt_at)",
    """CREATE TABLE IF NOT EXISTS outbox_dead_letters (
        message_id  TEXT PRIMARY KEY,
        destination TEXT NOT NULL,
        body        BLOB NOT NULL,
        reason      TEXT NOT NULL,
        attempts    INTEGER NOT NULL,
        replays     INTEGER NOT NULL,
        failed_at   INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_dead_letters_by_destination ON outbox_dead_letters (destination, failed_at)",
    """CREATE TABLE IF NOT EXISTS outbox_finished (
        message_id  TEXT PRIMARY KEY,
        destination TEXT NOT NULL,
        outcome     TEXT NOT NULL,
        finished_at INTEGER NOT NULL,
        provider_id TEXT,
        reason      TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_finished_at ON outbox_finished (finished_at)",
    "CREATE TABLE IF NOT EXISTS outbox_status_events (seq INTEGER PRIMARY KEY, event BLOB NOT NULL)",
)

_STAGE = """
INSERT INTO outbox_messages (message_id, destination, body, enqueued_at, next_attempt_at)
SELECT ?1, ?2, ?3, ?4, max(?4, ?5)
WHERE NOT EXISTS (SELECT 1 FROM outbox_finished WHERE message_id = ?1)
  AND NOT EXISTS (SELECT 1 FROM outbox_dead_letters WHERE message_id = ?1)
ON CONFLICT (message_id) DO NOTHING
"""
_CLAIM = """
UPDATE outbox_messages SET lease_until = :until
WHERE message_id IN (
    SELECT message_id FROM outbox_messages
    WHERE destination = :destination AND next_attempt_at <= :now AND lease_until <= :now
    ORDER BY next_attempt_at, rowid LIMIT :limit)
RETURNING body, attempts, replays, next_attempt_at, rowid
"""
_REPLAY_WHERE = (
    "(:destination IS NULL OR destination = :destination) "
    "AND (:ids IS NULL OR message_id IN (SELECT value FROM json_each(:ids)))"
)

_encode_event = msgspec.msgpack.Encoder().encode
_decode_event = msgspec.msgpack.Decoder(Event).decode
_encode_json = msgspec.json.Encoder().encode

FINISHED_OUTCOMES = ("sent", "delivered", "suppressed")


class Pending(msgspec.Struct, frozen=True):
    """A claimed message with its history: attempts made so far and times it was replayed."""

    message: OutboundMessage
    attempts: int
    replays: int


class DeadLetter(msgspec.Struct, frozen=True):
    message: OutboundMessage
    reason: str
    attempts: int
    replays: int
    failed_at: int


class Finished(msgspec.Struct, frozen=True):
    outcome: str
    finished_at: int
    provider_id: str | None
    reason: str | None


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the outbox tables on ``conn`` if they are missing (safe inside a transaction)."""
    for statement in SCHEMA:
        conn.execute(statement)


def stage(conn: sqlite3.Connection, messages: Iterable[OutboundMessage], now_ms: int) -> int:
    """Add ``messages`` to the outbox on ``conn`` within the caller's open transaction.

    Returns how many were new; a ``message_id`` already staged, delivered or dead-lettered
    is skipped. A message is due at its ``created_at`` (a send the contact policy moved out
    of quiet hours is created for later), or now if that has passed. Raises
    :class:`InvalidInput` (and stages nothing) if a message is invalid.
    """
    rows = [(m.message_id, m.destination, encode_message(validate_message(m)), now_ms, m.created_at)
            for m in messages]
    before = conn.total_changes
    conn.executemany(_STAGE, rows)
    return conn.total_changes - before


class Outbox:
    """The outbox tables of one SQLite file; safe to share between threads (one lock, two connections)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._durable = self._connect("FULL")
            self._fast = self._connect("NORMAL")
            with self._transaction(self._durable):
                create_schema(self._durable)
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise StorageUnavailable(f"cannot open outbox {self.path}: {exc}") from exc

    def _connect(self, synchronous: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(BUSY_TIMEOUT)
        switch_to_wal(conn)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA secure_delete = ON")  # an erased person's messages leave no bytes behind
        return conn

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"outbox {self.path}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A durable write transaction on the outbox file: write your own rows and :func:`stage` together."""
        with self._lock, self._transaction(self._durable) as conn:
            yield conn

    def enqueue(self, messages: Sequence[OutboundMessage], now_ms: int) -> int:
        """Stage ``messages`` in a transaction of their own; returns how many were new."""
        with self.transaction() as conn:
            return stage(conn, messages, now_ms)

    def claim(self, destination: str, now_ms: int, limit: int, lease_ms: int) -> list[Pending]:
        """Lease up to ``limit`` due messages of ``destination``, oldest due first."""
        with self._lock, self._transaction(self._fast) as conn:
            rows = conn.execute(
                _CLAIM,
                {"until": now_ms + lease_ms, "destination": destination, "now": now_ms, "limit": limit},
            ).fetchall()
        rows.sort(key=lambda row: (row[3], row[4]))
        return [Pending(decode_message(body), attempts, replays) for body, attempts, replays, _, _ in rows]

    def next_due_at(self, destination: str) -> int | None:
        """When the earliest message of ``destination`` becomes claimable (epoch ms), or None if none wait."""
        with self._lock:
            (due,) = self._fast.execute(
                "SELECT min(max(next_attempt_at, lease_until)) FROM outbox_messages WHERE destination = ?",
                (destination,),
            ).fetchone()
        return None if due is None else int(due)

    def release(self, message_ids: Iterable[str]) -> None:
        """End the leases of messages claimed but not attempted (on shutdown), so they are due at once."""
        ids = _encode_json(list(message_ids))
        with self._lock, self._transaction(self._fast) as conn:
            conn.execute(
                "UPDATE outbox_messages SET lease_until = 0 WHERE message_id IN (SELECT value FROM json_each(?))",
                (ids,),
            )

    def finish(
        self, message_id: str, outcome: str, at_ms: int, *, provider_id: str | None = None,
        reason: str | None = None, status_events: Sequence[Event] = (),
    ) -> None:
        """Record that the message is done (sent, delivered or suppressed) with its status events."""
        if outcome not in FINISHED_OUTCOMES:
            raise InvalidInput("outcome", f"must be one of {', '.join(FINISHED_OUTCOMES)}")
        with self._lock, self._transaction(self._fast) as conn:
            row = conn.execute(
                "DELETE FROM outbox_messages WHERE message_id = ? RETURNING destination", (message_id,)
            ).fetchone()
            if row is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO outbox_finished VALUES (?, ?, ?, ?, ?, ?)",
                    (message_id, row[0], outcome, at_ms, provider_id, reason),
                )
                self._add_status(conn, status_events)

    def retry_later(self, message_id: str, attempts: int, next_attempt_at: int, error: str) -> None:
        """Record a failed attempt; the message is due again at ``next_attempt_at``."""
        with self._lock, self._transaction(self._fast) as conn:
            conn.execute(
                "UPDATE outbox_messages SET attempts = ?, next_attempt_at = ?, lease_until = 0, last_error = ? "
                "WHERE message_id = ?",
                (attempts, next_attempt_at, error, message_id),
            )

    def defer(self, message_id: str, until_ms: int, reason: str) -> None:
        """Hold the message until ``until_ms`` without counting an attempt (quiet hours)."""
        with self._lock, self._transaction(self._fast) as conn:
            conn.execute(
                "UPDATE outbox_messages SET next_attempt_at = ?, lease_until = 0, last_error = ? WHERE message_id = ?",
                (until_ms, reason, message_id),
            )

    def dead_letter(
        self, message_id: str, reason: str, attempts: int, at_ms: int, status_events: Sequence[Event] = ()
    ) -> None:
        """Move the message to the dead-letter store with why it failed and how many attempts it had."""
        with self._lock, self._transaction(self._fast) as conn:
            moved = conn.execute(
                "INSERT OR REPLACE INTO outbox_dead_letters "
                "SELECT message_id, destination, body, ?, ?, replays, ? FROM outbox_messages WHERE message_id = ?",
                (reason, attempts, at_ms, message_id),
            ).rowcount
            conn.execute("DELETE FROM outbox_messages WHERE message_id = ?", (message_id,))
            if moved:
                self._add_status(conn, status_events)

    def dead_letters(self, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, newest first."""
        with self._lock:
            rows = self._fast.execute(
                "SELECT body, reason, attempts, replays, failed_at FROM outbox_dead_letters "
                "WHERE ?1 IS NULL OR destination = ?1 ORDER BY failed_at DESC, message_id LIMIT ?2",
                (destination, limit),
            ).fetchall()
        return [DeadLetter(decode_message(body), *rest) for body, *rest in rows]

    def replay(self, now_ms: int, destination: str | None = None, message_ids: Sequence[str] | None = None) -> int:
        """Put dead letters (all, one destination's, or the given ids) back in the outbox, due now.

        Each gets a fresh attempt budget; its ``replays`` count goes up by one.
        """
        params = {
            "destination": destination, "now": now_ms,
            "ids": None if message_ids is None else _encode_json(list(message_ids)),
        }
        with self._lock, self._transaction(self._durable) as conn:
            moved = conn.execute(
                "INSERT OR IGNORE INTO outbox_messages "
                "(message_id, destination, body, enqueued_at, next_attempt_at, attempts, replays, last_error) "
                "SELECT message_id, destination, body, :now, :now, 0, replays + 1, reason "
                f"FROM outbox_dead_letters WHERE {_REPLAY_WHERE}",
                params,
            ).rowcount
            conn.execute(f"DELETE FROM outbox_dead_letters WHERE {_REPLAY_WHERE}", params)
        return moved

    def pending(self, destination: str | None = None) -> int:
        """Messages waiting in the outbox (due or not, leased or not)."""
        with self._lock:
            (count,) = self._fast.execute(
                "SELECT count(*) FROM outbox_messages WHERE ?1 IS NULL OR destination = ?1", (destination,)
            ).fetchone()
        return int(count)

    def finished(self, message_id: str) -> Finished | None:
        with self._lock:
            row = self._fast.execute(
                "SELECT outcome, finished_at, provider_id, reason FROM outbox_finished WHERE message_id = ?",
                (message_id,),
            ).fetchone()
        return None if row is None else Finished(*row)

    def prune_finished(self, before_ms: int) -> int:
        """Forget outcomes older than ``before_ms``; a message staged again after that is sent again."""
        with self._lock, self._transaction(self._fast) as conn:
            return conn.execute("DELETE FROM outbox_finished WHERE finished_at < ?", (before_ms,)).rowcount

    def status_backlog(self, limit: int = 500) -> list[tuple[int, Event]]:
        """Status events not yet handed over, oldest first, with the sequence numbers to acknowledge."""
        with self._lock:
            rows = self._fast.execute(
                "SELECT seq, event FROM outbox_status_events ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [(seq, _decode_event(blob)) for seq, blob in rows]

    def acknowledge_status(self, through_seq: int) -> None:
        """Drop the status events up to ``through_seq``: their receiver has stored them."""
        with self._lock, self._transaction(self._fast) as conn:
            conn.execute("DELETE FROM outbox_status_events WHERE seq <= ?", (through_seq,))

    @staticmethod
    def _add_status(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
        conn.executemany("INSERT INTO outbox_status_events (event) VALUES (?)", [(_encode_event(e),) for e in events])

    def close(self) -> None:
        with self._lock:
            for name in ("_durable", "_fast"):
                conn = getattr(self, name, None)
                if conn is not None:
                    conn.close()
                    setattr(self, name, None)
