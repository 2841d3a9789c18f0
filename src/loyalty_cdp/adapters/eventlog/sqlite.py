"""The embedded event log: one SQLite file in WAL mode, append-only, fsync'd on every append.

Durability point: ``append`` commits with ``synchronous=FULL``, so the WAL is fsync'd
before it returns and the batch survives SIGKILL or a power cut. ``stage`` splits an append
in two: it inserts under the write lock and returns a :class:`StagedAppend` whose ``commit``
(the fsync, and the checkpoint that SQLite runs now and then) may run in another thread, so
that a writer prepares its next batch meanwhile; the next append waits for that commit.

Rows go in with multi-row ``INSERT`` statements (64 rows a statement; measured about 20%
less CPU than one statement a row), into 16 KiB pages for a log created by this version
(fewer page changes and WAL frames per event; an existing file keeps its page size).

Why no B-tree index on ``message_id``, ``user_id`` or ``anonymous_id``: a random key
dirties about one index page per event once the log outgrows a batch, and that page
goes to the WAL and again to the database at checkpoint. Measured on the 2-core
development machine, three such indexes took 1,000-event appends from ~110,000 to under
20,000 events/s by the 600,000th event. So both tables grow in offset order only:
``events`` holds the events, and ``batches`` one row per append with packed fingerprints
of what that append stored, the event at ``first_offset + i`` at position ``i``.
Deduplication probes an in-memory sorted array of message-id
fingerprints (16 bytes per event, rebuilt from ``batches`` on open) and confirms every
hit against the stored row, so a fingerprint collision can cost a lookup but never an
event. Member reads scan the member fingerprints (8 bytes per event) with numpy, then
fetch the matching rows by offset.

Writers take ``BEGIN IMMEDIATE`` and first fold in the batches other processes may have
appended, so an import running beside the server cannot break deduplication. Before that they
queue for :class:`_WriteLock`, which wakes the next writer (thread or process) the moment the
lock is free: several writer processes can then share the file without SQLite's busy wait. Erasure
runs with ``secure_delete=ON``, zeroes the erased events' fingerprints, and truncates
the WAL, so no byte of an erased event stays in the file, its free pages or the WAL.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
import zlib
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import msgspec
import numpy as np
from msgspec.structs import astuple

from loyalty_cdp.adapters.eventlog.base import MAX_OFFSET, AppendResult, MemberReads, StoredEvent
from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT, switch_to_wal
from loyalty_cdp.core.events import Event
from loyalty_cdp.errors import InvalidInput, StorageUnavailable

SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        "offset"     INTEGER PRIMARY KEY,
        message_id   TEXT NOT NULL,
        type         TEXT NOT NULL,
        event        TEXT,
        user_id      TEXT,
        anonymous_id TEXT,
        timestamp    INTEGER NOT NULL,
        received_at  INTEGER NOT NULL,
        channel      TEXT,
        body         BLOB NOT NULL,
        payload_hash BLOB NOT NULL
    )""",
    # Member keys come first so that member scans stop reading before the message keys.
    """CREATE TABLE IF NOT EXISTS batches (
        first_offset   INTEGER PRIMARY KEY,
        size           INTEGER NOT NULL,
        stored         INTEGER NOT NULL,
        user_keys      BLOB NOT NULL,
        anonymous_keys BLOB NOT NULL,
        message_keys   BLOB NOT NULL
    )""",
)

# Settings of each connection; journal_mode=WAL is stored in the file itself.
_PRAGMAS = (
    BUSY_TIMEOUT,
    "PRAGMA synchronous = FULL",
    "PRAGMA secure_delete = ON",
    "PRAGMA cache_size = -65536",  # 64 MiB
    "PRAGMA journal_size_limit = 67108864",  # a checkpointed WAL shrinks back to 64 MiB
)

# Set before the file's first table: a log created earlier keeps its page size.
_PAGE_SIZE = "PRAGMA page_size = 16384"

_COLUMNS = (
    '"offset", message_id, type, event, user_id, anonymous_id, timestamp, received_at, '
    "channel, body"
)
# Columns in the order of Event's fields, so that a row is (offset, *astuple(event)).
_INSERT_INTO = (
    'INSERT INTO events ("offset", message_id, type, event, user_id, anonymous_id, timestamp, '
    "received_at, channel, body, payload_hash) VALUES "
)
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ROW_WIDTH = 11
_ROWS_PER_INSERT = 64  # 704 variables a statement, far below SQLite's limit
_INSERT = _INSERT_INTO + _ROW
# Positions of Event's fields in astuple(event).
_USER_ID = Event.__struct_fields__.index("user_id")
_ANONYMOUS_ID = Event.__struct_fields__.index("anonymous_id")
_INSERT_MANY = _INSERT_INTO + ", ".join([_ROW] * _ROWS_PER_INSERT)
# Lists travel as one JSON array parameter, so no batch meets SQLite's variable limit.
_AT_OFFSETS = '"offset" IN (SELECT value FROM json_each(?))'
_OF_MEMBER = (
    "(user_id IN (SELECT value FROM json_each(?)) "
    "OR anonymous_id IN (SELECT value FROM json_each(?)))"
)

# sqlite3 binds int, float, str and bytearray directly; for any other value, None and bytes
# included, it first looks for an adapter, and its look-up raises and clears an AttributeError
# (about 0.3 us a value, three values an event). Adapters that return the value as it is bind
# it exactly as before, found with one dictionary look-up. They apply to every sqlite3
# connection of the process, which gains the same.
sqlite3.register_adapter(bytes, bytes)
sqlite3.register_adapter(type(None), lambda value: value)

_MESSAGE_KEY = np.dtype("<u8")
_MEMBER_KEY = np.dtype("<u4")
# The dtypes of the fingerprint blobs of a batches row, in column order.
_BLOB_DTYPES: tuple[np.dtype, ...] = (_MEMBER_KEY, _MEMBER_KEY, _MESSAGE_KEY)
_encode_json = msgspec.json.Encoder().encode


def _message_keys(message_ids: Iterable[str]) -> np.ndarray:
    """64-bit fingerprints of message ids (a filter only: hits are confirmed on the row)."""
    digests = [hashlib.blake2b(i.encode(), digest_size=8).digest() for i in message_ids]
    return np.frombuffer(b"".join(digests), _MESSAGE_KEY)


def _new_versions(
    events: Sequence[Event], keys: np.ndarray, kept: dict[str, bytes]
) -> tuple[list[int] | None, int]:
    """Positions in ``events`` of the versions to store (None: all of them), and the conflicts.

    ``kept`` maps the stored message ids that may be among ``events`` to their payload hashes.
    Usually none is, and distinct fingerprints mean distinct ids: then every event is new,
    known without a look-up per event.
    """
    if not kept:
        ordered = np.sort(keys)
        if not (ordered[1:] == ordered[:-1]).any():
            return None, 0
    fresh: list[int] = []
    conflicts = 0
    for position, event in enumerate(events):
        kept_hash = kept.get(event.message_id)
        if kept_hash is None:
            kept[event.message_id] = event.payload_hash
            fresh.append(position)
        elif kept_hash != event.payload_hash:
            conflicts += 1
    return fresh, conflicts


def _member_keys(identifiers: Iterable[str | None]) -> np.ndarray:
    """32-bit fingerprints of user or anonymous ids; 0 stands for no identifier."""
    return np.array(
        [0 if i is None else zlib.crc32(i.encode()) or 1 for i in identifiers], _MEMBER_KEY
    )


class _FingerprintIndex:
    """Sorted message-id fingerprints with their offsets: a large base and a small recent run.

    Each batch of new keys merges into the recent run, which merges into the base once its
    size passes sqrt(1024 * base size): that balances copying the recent run on every
    batch against copying the base, to about 2 * 16 * sqrt(base size / 1024) bytes a key.
    """

    def __init__(self) -> None:
        empty = (np.empty(0, _MESSAGE_KEY), np.empty(0, np.int64))
        self._runs = [empty, empty]

    def add(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        base, recent = self._runs
        recent = _merge(recent, (keys[order], offsets[order]))
        if len(recent[0]) ** 2 > 1024 * len(base[0]):
            base, recent = _merge(base, recent), (recent[0][:0], recent[1][:0])
        self._runs = [base, recent]

    def candidates(self, keys: np.ndarray) -> list[int]:
        """Offsets of stored events whose fingerprint equals one of ``keys``."""
        found: list[int] = []
        for run_keys, run_offsets in self._runs:
            starts = np.searchsorted(run_keys, keys, side="left")
            ends = np.searchsorted(run_keys, keys, side="right")
            for hit in np.flatnonzero(ends > starts):
                found.extend(run_offsets[starts[hit] : ends[hit]].tolist())
        return found


def _merge(
    run: tuple[np.ndarray, np.ndarray], new: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    at = np.searchsorted(run[0], new[0])
    return np.insert(run[0], at, new[0]), np.insert(run[1], at, new[1])


@contextmanager
def _immediate_transaction(conn: sqlite3.Connection, path: Path) -> Iterator[None]:
    """Hold the database's write lock from the first read; SQLite failures become 503s."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        finally:
            _roll_back(conn)
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"event log {path}: {exc}") from exc


def _roll_back(conn: sqlite3.Connection) -> None:
    """End a transaction that did not commit (a no-op once it has)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _offsets_of(first_offsets: Sequence[int], sizes: Sequence[int]) -> np.ndarray:
    """The offset of every position of the given batches, concatenated."""
    firsts = np.asarray(first_offsets, dtype=np.int64)
    counts = np.asarray(sizes, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    return np.repeat(firsts - starts, counts) + np.arange(int(counts.sum()), dtype=np.int64)


class _WriteLock:
    """The log's write lock, between the threads of a process and between processes.

    SQLite's own lock serialises writers too, but a writer that finds it taken polls it, asleep
    for 1, 2, 5, 10, 15 ... ms between tries (its busy handler): with two writer processes
    appending in turn, every append would wait out such a sleep. So writers first queue here:
    a thread lock within the process, then ``flock`` on a lock file beside the database, which
    the kernel hands to the next process the moment it is released, and releases itself if its
    holder dies. Any thread may release it (a writer commits in another thread than it staged).
    SQLite's lock remains what makes appends correct; this one only orders who asks for it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.threads = threading.Lock()  # alone, it guards the lock file's descriptor (see close)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.threads.acquire()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            self.threads.release()
            raise StorageUnavailable(f"cannot lock {self.path}: {exc}") from exc
        except BaseException:
            self.threads.release()
            raise

    def release(self) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self.threads.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *_: object) -> None:
        self.release()

    def close(self) -> None:
        """Close the lock file (``threads`` held, the lock itself not)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SqliteEventLog(MemberReads):
    """:class:`~loyalty_cdp.adapters.eventlog.base.EventLog` in one SQLite file.

    The constructor only remembers ``path``; the file, its directory and the schema are
    created on first use. Safe to share between threads: one connection appends and
    deletes (behind a lock), a second one reads, so replay never waits for ingest.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._open_lock = threading.Lock()
        self._write_lock = _WriteLock(self.path.with_name(self.path.name + "-lock"))
        self._read_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        # Fingerprints of every batch below ``_next_offset``; both change under the index lock (and
        # the write lock too, except when ``known`` catches up on what other processes appended).
        self._index_lock = threading.Lock()
        self._index = _FingerprintIndex()
        self._next_offset = 1

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            for pragma in _PRAGMAS:
                conn.execute(pragma)
            if writer:
                conn.execute(_PAGE_SIZE)
                mode = switch_to_wal(conn)
                if mode != "wal":
                    raise sqlite3.OperationalError(f"journal_mode is {mode}, WAL is required")
            else:
                conn.execute("PRAGMA query_only = ON")
        except (OSError, sqlite3.Error) as exc:
            raise StorageUnavailable(f"cannot open event log {self.path}: {exc}") from exc
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        with _immediate_transaction(conn, self.path):
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StorageUnavailable(
                    f"event log {self.path} has schema version {version}; this version of "
                    f"loyalty-cdp reads up to {SCHEMA_VERSION}"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connections(self) -> tuple[sqlite3.Connection, sqlite3.Connection]:
        with self._open_lock:
            if self._writer is None or self._reader is None:
                writer = self._connect(writer=True)
                self._create_schema(writer)
                self._writer, self._reader = writer, self._connect(writer=False)
            return self._writer, self._reader

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        """Index the batches appended since ``_next_offset`` (by any process, or at open)."""
        with self._index_lock:
            rows = conn.execute(
                "SELECT first_offset, size, message_keys FROM batches WHERE first_offset >= ? "
                "ORDER BY first_offset",
                (self._next_offset,),
            ).fetchall()
            if not rows:
                return
            firsts, sizes, blobs = zip(*rows, strict=True)
            keys = np.frombuffer(b"".join(blobs), _MESSAGE_KEY)
            self._index.add(keys, _offsets_of(firsts, sizes))
            self._next_offset = firsts[-1] + sizes[-1]

    def append(self, events: Sequence[Event]) -> AppendResult:
        """Store the events whose message id is new, in order, in one fsync'd transaction.

        A repeated id (stored earlier or seen earlier in ``events``) is a duplicate; it is
        also a conflict when its payload hash differs from the version kept.
        """
        return self.stage(events).commit()

    def stage(self, events: Sequence[Event]) -> StagedAppend:
        """The first half of :meth:`append`: take the write lock, deduplicate and insert.

        Nothing is durable, or visible to readers, until the returned append's ``commit``,
        which any thread may call and which must be called (it releases the write lock that
        every later append waits for). A failure here rolls back and raises
        :class:`StorageUnavailable`, leaving the log as it was.
        """
        if not events:
            return StagedAppend(self, None, AppendResult(appended=0, duplicates=0, conflicts=0))
        writer, _ = self._connections()
        keys = _message_keys(e.message_id for e in events)
        self._write_lock.acquire()
        try:
            writer.execute("BEGIN IMMEDIATE")
            self._catch_up(writer)
            kept = self._stored_hashes(writer, self._index.candidates(keys))
            fresh, conflicts = _new_versions(events, keys, kept)
            stored = events if fresh is None else [events[i] for i in fresh]
            stored_keys = keys if fresh is None else keys[fresh]
            first = self._next_offset
            if stored:
                self._insert(writer, first, stored, stored_keys)
        except BaseException as exc:
            try:
                with suppress(sqlite3.Error):  # a broken connection's transaction died with it
                    _roll_back(writer)
            finally:
                self._write_lock.release()
            if isinstance(exc, sqlite3.Error):
                raise StorageUnavailable(f"event log {self.path}: {exc}") from exc
            raise
        result = AppendResult(appended=len(stored), duplicates=len(events) - len(stored), conflicts=conflicts)
        return StagedAppend(self, (writer, stored_keys, first), result)

    def _committed(self, keys: np.ndarray, first: int) -> None:
        """After a commit (the write lock still held): index what it stored."""
        if len(keys):
            with self._index_lock:
                if first < self._next_offset:  # ``known`` indexed it from the reader already
                    return
                self._index.add(keys, first + np.arange(len(keys)))
                self._next_offset = first + len(keys)

    @staticmethod
    def _insert(
        conn: sqlite3.Connection, first: int, events: Sequence[Event], keys: np.ndarray
    ) -> None:
        # The statements' parameters, row after row, filled a column at a time (slice assignments
        # instead of a Python step per field).
        columns = list(zip(*map(astuple, events), strict=True))
        values: list[object] = [None] * (len(events) * _ROW_WIDTH)
        values[0::_ROW_WIDTH] = range(first, first + len(events))
        for position, column in enumerate(columns, 1):
            values[position::_ROW_WIDTH] = column
        whole = len(events) - len(events) % _ROWS_PER_INSERT
        step = _ROW_WIDTH * _ROWS_PER_INSERT
        if whole:
            conn.executemany(_INSERT_MANY, [values[at : at + step] for at in range(0, whole * _ROW_WIDTH, step)])
        if whole < len(events):
            conn.executemany(
                _INSERT, [values[at : at + _ROW_WIDTH] for at in range(whole * _ROW_WIDTH, len(values), _ROW_WIDTH)]
            )
        conn.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?)",
            (
                first,
                len(events),
                len(events),
                _member_keys(columns[_USER_ID]).tobytes(),
                _member_keys(columns[_ANONYMOUS_ID]).tobytes(),
                keys.tobytes(),
            ),
        )

    @staticmethod
    def _stored_hashes(conn: sqlite3.Connection, offsets: list[int]) -> dict[str, bytes]:
        if not offsets:
            return {}
        return dict(
            conn.execute(
                f"SELECT message_id, payload_hash FROM events WHERE {_AT_OFFSETS}",
                (_encode_json(offsets),),
            ).fetchall()
        )

    def known(self, message_ids: Collection[str]) -> set[str]:
        """Looked up in the fingerprint index, brought up to the last commit first; each hit is
        confirmed on its row."""
        if not message_ids:
            return set()
        _, reader = self._connections()
        with self._read_lock:
            self._catch_up(reader)
            offsets = self._index.candidates(_message_keys(message_ids))
            if not offsets:
                return set()
            stored = reader.execute(
                f"SELECT message_id FROM events WHERE {_AT_OFFSETS}", (_encode_json(offsets),)
            ).fetchall()
        return {message_id for (message_id,) in stored}.intersection(message_ids)

    def read(self, after: int = 0, limit: int = 10_000) -> list[StoredEvent]:
        if limit < 1:
            raise InvalidInput("limit", f"must be at least 1, got {limit}")
        _, reader = self._connections()
        with self._read_lock:
            rows = reader.execute(
                f'SELECT {_COLUMNS} FROM events WHERE "offset" > ? ORDER BY "offset" LIMIT ?',
                (after, limit),
            ).fetchall()
        return [StoredEvent(*row) for row in rows]

    def _member_offsets(
        self, conn: sqlite3.Connection, user_ids: Collection[str], anonymous_ids: Collection[str],
        through: int = MAX_OFFSET,
    ) -> list[int]:
        """Offsets up to ``through`` whose member fingerprints match (a superset of the member's
        events); the batches after ``through`` are not scanned."""
        wanted_users = _member_keys(user_ids)
        wanted_anonymous = _member_keys(anonymous_ids)
        found: list[int] = []
        cursor = conn.execute(
            "SELECT first_offset, size, user_keys, anonymous_keys FROM batches WHERE stored > 0 "
            "AND first_offset <= ? ORDER BY first_offset",
            (through,),
        )
        while chunk := cursor.fetchmany(256):
            firsts, sizes, user_blobs, anonymous_blobs = zip(*chunk, strict=True)
            users = np.frombuffer(b"".join(user_blobs), _MEMBER_KEY)
            anonymous = np.frombuffer(b"".join(anonymous_blobs), _MEMBER_KEY)
            hits = np.isin(users, wanted_users) | np.isin(anonymous, wanted_anonymous)
            if hits.any():
                offsets = _offsets_of(firsts, sizes)[hits]
                found.extend(offsets[offsets <= through].tolist())
        return found

    def _read_any(self, user_ids: set[str], anonymous_ids: set[str], through: int) -> list[StoredEvent]:
        """One scan of the member fingerprints for the union of the members' ids, one SELECT."""
        _, reader = self._connections()
        with self._read_lock:
            offsets = self._member_offsets(reader, user_ids, anonymous_ids, through)
            if not offsets:
                return []
            rows = reader.execute(
                f"SELECT {_COLUMNS} FROM events WHERE {_AT_OFFSETS} AND {_OF_MEMBER} "
                'ORDER BY "offset"',
                (
                    _encode_json(offsets),
                    _encode_json(list(user_ids)),
                    _encode_json(list(anonymous_ids)),
                ),
            ).fetchall()
        return [StoredEvent(*row) for row in rows]

    def delete_member(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        """Delete the member's events and their fingerprints, then truncate the WAL.

        Raises :class:`StorageUnavailable` if another process keeps the WAL from being
        truncated; the events are deleted by then, and calling again finishes the purge.
        """
        if not user_ids and not anonymous_ids:
            return 0
        writer, _ = self._connections()
        with self._write_lock, self._read_lock:
            with _immediate_transaction(writer, self.path):
                offsets = self._member_offsets(writer, user_ids, anonymous_ids)
                deleted = [
                    offset
                    for (offset,) in writer.execute(
                        f"DELETE FROM events WHERE {_AT_OFFSETS} AND {_OF_MEMBER} "
                        'RETURNING "offset"',
                        (
                            _encode_json(offsets),
                            _encode_json(list(user_ids)),
                            _encode_json(list(anonymous_ids)),
                        ),
                    ).fetchall()
                ]
                self._forget(writer, deleted)
            (busy, _, _) = writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise StorageUnavailable(
                f"event log {self.path}: deleted {len(deleted)} events but another process "
                "is reading, so the WAL still holds copies; retry the erasure"
            )
        return len(deleted)

    @staticmethod
    def _forget(conn: sqlite3.Connection, offsets: list[int]) -> None:
        """Zero the fingerprints of deleted events and lower their batches' ``stored``."""
        if not offsets:
            return
        batches = conn.execute(
            "SELECT first_offset, size, user_keys, anonymous_keys, message_keys FROM batches "
            "WHERE first_offset IN (SELECT (SELECT max(first_offset) FROM batches "
            "WHERE first_offset <= value) FROM json_each(?))",
            (_encode_json(offsets),),
        ).fetchall()
        erased = np.asarray(offsets, dtype=np.int64)
        for first, size, *blobs in batches:
            positions = erased[(erased >= first) & (erased < first + size)] - first
            keys = [
                np.frombuffer(blob, dtype).copy()
                for blob, dtype in zip(blobs, _BLOB_DTYPES, strict=True)
            ]
            for array in keys:
                array[positions] = 0
            conn.execute(
                "UPDATE batches SET stored = stored - ?, user_keys = ?, anonymous_keys = ?, "
                "message_keys = ? WHERE first_offset = ?",
                (len(positions), *(array.tobytes() for array in keys), first),
            )

    def last_offset(self) -> int:
        _, reader = self._connections()
        with self._read_lock:
            (offset,) = reader.execute('SELECT coalesce(max("offset"), 0) FROM events').fetchone()
        return int(offset)

    def count(self) -> int:
        _, reader = self._connections()
        with self._read_lock:
            (total,) = reader.execute("SELECT coalesce(sum(stored), 0) FROM batches").fetchone()
        return int(total)

    def size_bytes(self) -> int:
        """Database pages plus the WAL file."""
        _, reader = self._connections()
        with self._read_lock:
            (pages,) = reader.execute("PRAGMA page_count").fetchone()
            (page_size,) = reader.execute("PRAGMA page_size").fetchone()
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            wal_bytes = wal.stat().st_size
        except FileNotFoundError:
            wal_bytes = 0
        return int(pages) * int(page_size) + wal_bytes

    def close(self) -> None:
        """Close both connections; the log reopens them if it is used again."""
        with self._open_lock, self._write_lock.threads, self._read_lock:
            self._write_lock.close()
            for conn in (self._writer, self._reader):
                if conn is not None:
                    conn.close()
            self._writer = self._reader = None
            self._index = _FingerprintIndex()
            self._next_offset = 1


class StagedAppend:
    """An append inserted but not yet committed (see :meth:`SqliteEventLog.stage`)."""

    def __init__(
        self,
        log: SqliteEventLog,
        pending: tuple[sqlite3.Connection, np.ndarray, int] | None,
        result: AppendResult,
    ) -> None:
        self._log = log
        self._pending = pending  # None: nothing to commit (no events), or committed already
        self.result = result

    def commit(self) -> AppendResult:
        """Make the append durable (fsync'd) and release the write lock; then index it.

        Raises :class:`StorageUnavailable` if the commit fails: the append is rolled back,
        and the lock released, either way.
        """
        if self._pending is None:
            return self.result
        (conn, keys, first), self._pending = self._pending, None
        try:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with suppress(sqlite3.Error):  # a broken connection's transaction died with it
                    _roll_back(conn)
                raise StorageUnavailable(f"event log {self._log.path}: {exc}") from exc
            # Only once committed: a failed append must leave the index as it was.
            self._log._committed(keys, first)
        finally:
            self._log._write_lock.release()
        return self.result
