"""The score store: ``<data-dir>/scores.db`` (member scores, SQLite in WAL mode) and the versioned
model artefacts in ``<data-dir>/models/``.

One row per member holds the latest run's scores (JSON), their plain-language explanation
(JSON), whether the member was scored for targeting, the model version, the as-of time and the
scoring time. A run replaces every row in one write transaction (the new rows go to a side table that then
takes the old one's name), so a reader (the member API, another process) sees either the whole
previous run or the whole new one, never a mix, and WAL mode never makes it wait for the writer.
An erasure (:meth:`ScoreStore.delete_members`) issued during a run waits for the run to commit,
so a run cannot bring an erased member's row back. :meth:`ScoreStore.get` is one primary-key read on its own connection.
:meth:`ScoreStore.update_member` rewrites one member's row after an incremental refresh, only if
the row is still the one the refresh read (same model version and as-of time), on a connection of
its own that waits at most :data:`UPDATE_WAIT_MS` for a running replacement (it then reports
that nothing was written: the run's scores are newer anyway); an erased member stays erased.

Model artefacts are ``models/<version>.json``, written to a temporary file, fsync'd and renamed,
so a crash never leaves half an artefact under a version's name.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import msgspec

from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT, switch_to_wal
from loyalty_cdp.core.events import format_time
from loyalty_cdp.errors import InvalidInput, NotFound, StorageUnavailable

# The member index is built after a run's rows are in: one sort instead of a B-tree insert per row.
_SCORES_TABLE = """CREATE TABLE {name} (
    member_id     TEXT NOT NULL,
    targeting     INTEGER NOT NULL,
    lapse_risk    REAL,
    model_version TEXT NOT NULL,
    as_of         INTEGER NOT NULL,
    scored_at     INTEGER NOT NULL,
    scores        BLOB NOT NULL,
    explanation   BLOB NOT NULL
)"""
_SCHEMA = f"""
{_SCORES_TABLE.format(name="IF NOT EXISTS scores")};
CREATE UNIQUE INDEX IF NOT EXISTS scores_member ON scores (member_id);
CREATE TABLE IF NOT EXISTS runs (
    run           INTEGER PRIMARY KEY,
    model_version TEXT NOT NULL,
    as_of         INTEGER NOT NULL,
    scored_at     INTEGER NOT NULL,
    members       INTEGER NOT NULL,
    metrics       BLOB NOT NULL
);
"""
_PRAGMAS = (
    BUSY_TIMEOUT,
    "PRAGMA synchronous = NORMAL",  # WAL: a crash loses at most the last run, never corrupts
    "PRAGMA journal_size_limit = 67108864",  # a checkpointed WAL shrinks back to 64 MiB
    # Freed pages are zeroed: a dropped run leaves no stale copy of an erased member's row.
    "PRAGMA secure_delete = ON",
)

UPDATE_WAIT_MS = 20

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class ScoreRow(msgspec.Struct, frozen=True, array_like=True):
    """One member's stored result; ``scores`` is empty when not scored for targeting."""

    member_id: str
    targeting: bool
    lapse_risk: float | None
    scores: dict[str, Any]
    explanation: list[dict[str, str]]


class StoredEntry(msgspec.Struct, frozen=True):
    """One member's row as stored: what an incremental refresh reads and writes back."""

    member_id: str
    targeting: bool
    lapse_risk: float | None
    model_version: str
    as_of: int
    scored_at: int
    scores: dict[str, Any]
    explanation: list[dict[str, str]]


class RunRecord(msgspec.Struct, frozen=True):
    """One scoring run: its model version, as-of and scoring times (epoch ms) and metrics."""

    model_version: str
    as_of: int
    scored_at: int
    members: int
    metrics: dict[str, Any]


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        switch_to_wal(conn)
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"score store {path}: {exc}") from exc
    return conn


class ScoreStore:
    """Scores per member and model artefacts of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "scores.db"
        self.models_dir = Path(data_dir) / "models"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"score store {self.path}: {exc}") from exc
        self._writer = _connect(self.path)
        self._reader = _connect(self.path)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._guard(lambda: self._writer.executescript(_SCHEMA))
        self._updater: sqlite3.Connection | None = None
        self._update_lock = threading.Lock()

    def _guard(self, action: Any) -> Any:
        try:
            return action()
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"score store {self.path}: {exc}") from exc

    # -- reads -------------------------------------------------------------------------------

    def get(self, member_id: str) -> dict[str, Any] | None:
        """The member's latest scores, flat, with ``model_version``, ``as_of``, ``scored_at``
        (ISO-8601), ``scored_for_targeting`` and ``explanation``; None if never scored."""
        row = self.row(member_id)
        return None if row is None else scores_of(row)

    def row(self, member_id: str) -> tuple[Any, ...] | None:
        """The member's stored row as it is, for :func:`scores_of`: a reader that keeps what it
        made of a row can compare rows instead of decoding again."""
        with self._read_lock:
            row: tuple[Any, ...] | None = self._guard(lambda: self._reader.execute(
                "SELECT targeting, model_version, as_of, scored_at, scores, explanation "
                "FROM scores WHERE member_id = ?", (member_id,)).fetchone())
        return row

    def entry(self, member_id: str) -> StoredEntry | None:
        """The member's row as stored (times in epoch ms), or None."""
        with self._read_lock:
            row = self._guard(lambda: self._reader.execute(
                "SELECT targeting, lapse_risk, model_version, as_of, scored_at, scores, explanation "
                "FROM scores WHERE member_id = ?", (member_id,)).fetchone())
        if row is None:
            return None
        targeting, risk, version, as_of, scored_at, scores, explanation = row
        return StoredEntry(member_id, bool(targeting), risk, version, as_of, scored_at, _decode(scores),
                           _decode(explanation))

    def lapse_risks(self) -> dict[str, float]:
        """Every member's stored lapse risk (members not scored for targeting are left out)."""
        with self._read_lock:
            rows = self._guard(lambda: self._reader.execute(
                "SELECT member_id, lapse_risk FROM scores WHERE lapse_risk IS NOT NULL").fetchall())
        return dict(rows)

    def last_run(self) -> RunRecord | None:
        with self._read_lock:
            row = self._guard(lambda: self._reader.execute(
                "SELECT model_version, as_of, scored_at, members, metrics FROM runs "
                "ORDER BY run DESC LIMIT 1").fetchone())
        if row is None:
            return None
        version, as_of, scored_at, members, metrics = row
        return RunRecord(version, as_of, scored_at, members, _decode(metrics))

    def count(self) -> int:
        with self._read_lock:
            (total,) = self._guard(lambda: self._reader.execute("SELECT count(*) FROM scores").fetchone())
        return int(total)

    # -- writes ------------------------------------------------------------------------------

    def replace_all(self, rows: Iterable[ScoreRow], run: RunRecord) -> int:
        """Make ``rows`` the whole content of the store, atomically for readers; returns their count."""
        stamp = (run.model_version, run.as_of, run.scored_at)
        records = (
            (row.member_id, int(row.targeting), row.lapse_risk, *stamp, _encode(row.scores), _encode(row.explanation))
            for row in rows
        )
        with self._write_lock:
            return int(self._guard(lambda: self._replace(records, run)))

    def _replace(self, records: Iterable[tuple[Any, ...]], run: RunRecord) -> int:
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DROP TABLE IF EXISTS scores_next")
            conn.execute(_SCORES_TABLE.format(name="scores_next"))
            written = conn.executemany("INSERT INTO scores_next VALUES (?, ?, ?, ?, ?, ?, ?, ?)", records).rowcount
            conn.execute("DROP TABLE scores")  # and its index
            conn.execute("ALTER TABLE scores_next RENAME TO scores")
            conn.execute("CREATE UNIQUE INDEX scores_member ON scores (member_id)")
            conn.execute(
                "INSERT INTO runs (model_version, as_of, scored_at, members, metrics) VALUES (?, ?, ?, ?, ?)",
                (run.model_version, run.as_of, run.scored_at, run.members, _encode(run.metrics)),
            )
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return int(written)

    def update_member(self, previous: StoredEntry, lapse_risk: float, scores: dict[str, Any],
                      explanation: list[dict[str, str]], as_of: int) -> bool:
        """Replace ``previous``'s scores, explanation, lapse risk and as-of time if the row is unchanged since
        it was read; False when it changed, was erased, or a run's replacement kept it busy."""
        def update(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE scores SET lapse_risk = ?, as_of = ?, scores = ?, explanation = ? "
                "WHERE member_id = ? AND model_version = ? AND as_of = ?",
                (lapse_risk, as_of, _encode(scores), _encode(explanation), previous.member_id,
                 previous.model_version, previous.as_of))
            return int(cursor.rowcount)

        with self._update_lock:
            if self._updater is None:
                conn = self._guard(lambda: sqlite3.connect(self.path, isolation_level=None, check_same_thread=False))
                for pragma in (f"PRAGMA busy_timeout = {UPDATE_WAIT_MS}", *_PRAGMAS[1:]):
                    self._guard(lambda statement=pragma: conn.execute(statement))
                self._updater = conn
            try:
                return update(self._updater) == 1
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    return False
                raise StorageUnavailable(f"score store {self.path}: {exc}") from exc

    def delete_members(self, member_ids: Collection[str]) -> int:
        """Erase the members' rows, zeroing their bytes in the file and truncating the WAL; returns how many.

        Raises :class:`StorageUnavailable` when another process keeps the WAL from being truncated;
        the rows are deleted by then, and calling again finishes the purge.
        """
        def erase() -> tuple[int, int]:
            cursor = self._writer.execute(
                "DELETE FROM scores WHERE member_id IN (SELECT value FROM json_each(?))", (_encode(list(member_ids)),))
            (busy, _, _) = self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return int(cursor.rowcount), int(busy)

        with self._write_lock:
            deleted, busy = self._guard(erase)
        if busy:
            raise StorageUnavailable(f"score store {self.path}: deleted {deleted} rows but another process is "
                                     "reading, so the WAL still holds copies; retry the erasure")
        return int(deleted)

    # -- model artefacts ---------------------------------------------------------------------

    def _model_path(self, version: str) -> Path:
        if not version or any(ch in version for ch in "/\\\x00") or version.startswith("."):
            raise InvalidInput("model_version", f"{version[:40]!r} cannot name a file")
        return self.models_dir / f"{version}.json"

    def save_model(self, version: str, artefact: dict[str, Any]) -> Path:
        """Write ``models/<version>.json`` atomically (temporary file, fsync, rename)."""
        path = self._model_path(version)
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as stream:
                stream.write(msgspec.json.format(_encode(artefact), indent=2))
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write model artefact {path}: {exc}") from exc
        return path

    def load_model(self, version: str) -> dict[str, Any]:
        path = self._model_path(version)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no model artefact {version!r} in {self.models_dir}") from None
        except OSError as exc:
            raise StorageUnavailable(f"cannot read model artefact {path}: {exc}") from exc
        result: dict[str, Any] = _decode(data)
        return result

    def close(self) -> None:
        with self._write_lock, self._read_lock, self._update_lock:
            self._writer.close()
            self._reader.close()
            if self._updater is not None:
                self._updater.close()


def scores_of(row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row (:meth:`ScoreStore.row`) as :meth:`ScoreStore.get` answers it."""
    targeting, version, as_of, scored_at, scores, explanation = row
    return {
        **_decode(scores),
        "model_version": version,
        "as_of": format_time(as_of),
        "scored_at": format_time(scored_at),
        "scored_for_targeting": bool(targeting),
        "explanation": _decode(explanation),
    }
