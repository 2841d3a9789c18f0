"""The audit log: append-only and tamper-evident (a SHA-256 hash chain), in ``<data-dir>/audit.db``.

Each entry (sequence, time, actor, action, subject, details) carries
``hash = SHA-256(previous entry's hash + canonical entry)``, the first one chained to 32
zero bytes; the canonical entry is the compact JSON array
``[sequence, at, actor, action, subject, details]`` with ``details`` as its sorted-key JSON
text. :meth:`AuditLog.verify` recomputes the chain: an altered field, a deleted, inserted
or reordered entry breaks it at that entry. Cutting entries off the end leaves a valid
shorter chain; an *anchor* (a sequence and hash printed by an earlier verify and kept
elsewhere) detects that too. Triggers refuse UPDATE and DELETE, so only a deliberate
attacker (who drops them) can change history, and the chain then shows it.

The log is kept after an erasure, so entries never hold personal data: the subject is a
request id, a key id, or :func:`person_subject` of an identifier hash; details hold
counts and references.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from loyalty_cdp.adapters.sqlite_wal import BUSY_TIMEOUT_S, switch_to_wal
from loyalty_cdp.core.events import format_time
from loyalty_cdp.errors import InvalidInput

AUDIT_DB = "audit.db"
GENESIS = bytes(32)
MAX_LABEL_CHARS = 200
MAX_DETAILS_BYTES = 16 * 1024
MAX_LIST = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    sequence  INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""
_COLUMNS = "sequence, at, actor, action, subject, details, prev_hash, hash"


class AuditEntry(msgspec.Struct, frozen=True):
    sequence: int
    at: int
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    hash: str

    def view(self) -> dict[str, Any]:
        """JSON-ready, with the time in ISO-8601."""
        return {**msgspec.structs.asdict(self), "at": format_time(self.at)}


class Verification(NamedTuple):
    """``ok`` and ``first_bad_sequence`` (None when intact), why, and the head to anchor later checks."""

    ok: bool
    first_bad_sequence: int | None
    reason: str
    entries: int
    head_sequence: int
    head_hash: str


def person_subject(identifier_hash: bytes) -> str:
    """The audit subject for a person: a prefix of their identifier's keyed hash, never the identifier."""
    return "person:" + identifier_hash.hex()[:32]


def canonical_details(details: dict[str, Any] | None) -> str:
    """``details`` as compact, sorted-key JSON text; refuses what JSON cannot carry exactly."""
    if details is None:
        details = {}
    if not isinstance(details, dict):
        raise InvalidInput("details", "must be a JSON object")
    try:
        text = json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("details", f"cannot be stored as JSON: {exc}") from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DETAILS_BYTES:
        raise InvalidInput("details", f"must be at most {MAX_DETAILS_BYTES} bytes of JSON")
    return text


def entry_hash(prev_hash: bytes, sequence: int, at: int, actor: str, action: str, subject: str, details: str) -> bytes:
    """The chained hash of one entry, as stored."""
    canonical = json.dumps([sequence, at, actor, action, subject, details], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(prev_hash + canonical.encode("utf-8", "surrogatepass")).digest()


def _label(field: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_LABEL_CHARS:
        raise InvalidInput(field, f"must be a non-empty string of at most {MAX_LABEL_CHARS} characters")
    return value


class AuditLog:
    """The ``audit_log`` table; safe to share between threads and processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        switch_to_wal(self._db)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def append(
        self, actor: str, action: str, subject: str, details: dict[str, Any] | None = None, now_ms: int | None = None
    ) -> AuditEntry:
        """Append one entry, durably, chained to the last one (appends of all processes take turns)."""
        fields = (_label("actor", actor), _label("action", action), _label("subject", subject))
        text = canonical_details(details)
        at = now_ms if now_ms is not None else int(time.time() * 1000)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute(
                    "SELECT sequence, hash FROM audit_log ORDER BY sequence DESC LIMIT 1"
                ).fetchone()
                sequence, prev_hash = (1, GENESIS) if last is None else (last[0] + 1, last[1])
                digest = entry_hash(prev_hash, sequence, at, *fields, text)
                self._db.execute(
                    f"INSERT INTO audit_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (sequence, at, *fields, text, prev_hash, digest),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return AuditEntry(sequence, at, *fields, json.loads(text), digest.hex())

    def list(
        self, after: int = 0, limit: int = 100, action: str | None = None, subject: str | None = None
    ) -> list[AuditEntry]:
        """Entries with sequence > ``after``, oldest first, optionally of one action and/or subject."""
        if not 0 < limit <= MAX_LIST:
            raise InvalidInput("limit", f"must be between 1 and {MAX_LIST}")
        clauses, params = ["sequence > ?"], [after]
        if action is not None:
            clauses.append("action = ?")
            params.append(action)
        if subject is not None:
            clauses.append("subject = ?")
            params.append(subject)
        query = f"SELECT {_COLUMNS} FROM audit_log WHERE {' AND '.join(clauses)} ORDER BY sequence LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*params, limit)).fetchall()
        return [
            AuditEntry(sequence, at, actor, act, subject, json.loads(details), digest.hex())
            for sequence, at, actor, act, subject, details, _, digest in rows
        ]

    def verify(self, anchor: tuple[int, str] | None = None) -> Verification:
        """Recompute the chain from the first entry; with ``anchor`` (sequence, hex hash), also
        require that entry to exist with that hash, which detects entries cut off the end."""
        expected, prev, head_hash = 1, GENESIS, GENESIS
        anchor_seen = anchor is None
        with self._lock:
            cursor = self._db.execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY sequence")
            for sequence, at, actor, action, subject, details, prev_hash, stored in cursor:
                if sequence != expected:
                    return self._broken(expected, f"entry {expected} is missing (the next stored is {sequence})")
                if prev_hash != prev:
                    return self._broken(sequence, f"entry {sequence} does not follow entry {sequence - 1}: "
                                                  "one of them was altered, or entries were removed or reordered")
                try:
                    recomputed = entry_hash(prev_hash, sequence, at, actor, action, subject, details)
                except (TypeError, ValueError):
                    recomputed = b""
                if recomputed != stored:
                    return self._broken(sequence, f"entry {sequence} was altered (its hash does not match)")
                if anchor is not None and sequence == anchor[0]:
                    if stored.hex() != anchor[1].lower():
                        return self._broken(sequence, f"entry {sequence} differs from the anchor")
                    anchor_seen = True
                prev, head_hash, expected = stored, stored, expected + 1
        if not anchor_seen:
            assert anchor is not None
            return self._broken(expected, f"entries {expected} to {anchor[0]} are missing (cut off the end)")
        return Verification(True, None, "intact", expected - 1, expected - 1, head_hash.hex())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _broken(sequence: int, reason: str) -> Verification:
        return Verification(False, sequence, reason, 0, 0, "")
