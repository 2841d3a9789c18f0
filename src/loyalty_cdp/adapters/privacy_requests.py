"""The data-subject request store: requests, their status and deadline, in ``<data-dir>/privacy.db``.

Requests are created idempotently on an optional client-supplied request key. Besides the
identifier the request names, each row keeps its keyed hash (see
:mod:`loyalty_cdp.adapters.suppression`); when an erasure completes, or when
:meth:`PrivacyRequestStore.redact` is called with an erased member's identifiers, the plain
identifier and any corrections are cleared from every request about that person, the freed
bytes are zeroed (``secure_delete``) and the WAL is checkpointed and truncated, so the
request history keeps no trace of the person beyond the hash. ``result`` is for counts and
references only, never personal data.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from loyalty_cdp.adapters.suppression import (
    identifier_digest,
    load_or_create_secret,
    normalised_key,
    open_privacy_db,
    transaction,
)
from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.privacy import (
    COMPLETED,
    ERASURE,
    OPEN_STATUSES,
    RECEIVED,
    STATUSES,
    PrivacyRequestSpec,
    check_transition,
    deadline,
    is_overdue,
)
from loyalty_cdp.errors import Conflict, InvalidInput, NotFound, StorageUnavailable

MAX_REQUEST_KEY_CHARS = 200
MAX_LIST = 1000
CHECKPOINT_ATTEMPTS = 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_requests (
    request_id        TEXT PRIMARY KEY,
    request_key       TEXT UNIQUE,
    type              TEXT NOT NULL,
    regime            TEXT,
    identifier_type   TEXT NOT NULL,
    identifier_value  TEXT,
    identifier_digest BLOB NOT NULL,
    corrections       TEXT,
    status            TEXT NOT NULL,
    actor             TEXT NOT NULL,
    received_at       INTEGER NOT NULL,
    deadline_at       INTEGER NOT NULL,
    extended          INTEGER NOT NULL DEFAULT 0,
    updated_at        INTEGER NOT NULL,
    completed_at      INTEGER,
    result            TEXT,
    reason            TEXT
);
CREATE INDEX IF NOT EXISTS privacy_requests_digest ON privacy_requests (identifier_digest);
CREATE INDEX IF NOT EXISTS privacy_requests_received ON privacy_requests (received_at, request_id);
"""
_COLUMNS = (
    "request_id, request_key, type, regime, identifier_type, identifier_value, identifier_digest, corrections,"
    " status, actor, received_at, deadline_at, extended, updated_at, completed_at, result, reason"
)


class PrivacyRequest(msgspec.Struct, frozen=True):
    """One stored request; ``identifier_value`` and ``corrections`` are None once redacted."""

    request_id: str
    request_key: str | None
    type: str
    regime: str | None
    identifier_type: str
    identifier_value: str | None
    identifier_digest: bytes
    corrections: dict[str, Any] | None
    status: str
    actor: str
    received_at: int
    deadline_at: int
    extended: bool
    updated_at: int
    completed_at: int | None
    result: dict[str, Any] | None
    reason: str | None

    def view(self, now_ms: int) -> dict[str, Any]:
        """JSON-ready, as ``GET /v1/privacy/requests/{id}`` answers it."""
        return {
            "id": self.request_id,
            "type": self.type,
            "regime": self.regime,
            "identifier": {
                "type": self.identifier_type,
                "value": self.identifier_value,
                "redacted": self.identifier_value is None,
            },
            "corrections": self.corrections,
            "status": self.status,
            "received_at": format_time(self.received_at),
            "deadline": format_time(self.deadline_at),
            "extended": self.extended,
            "overdue": is_overdue(self.status, self.deadline_at, now_ms),
            "updated_at": format_time(self.updated_at),
            "completed_at": None if self.completed_at is None else format_time(self.completed_at),
            "result": self.result,
            "reason": self.reason,
        }


def _now(now_ms: int | None) -> int:
    return now_ms if now_ms is not None else int(time.time() * 1000)


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _request(row: tuple[Any, ...]) -> PrivacyRequest:
    values = list(row)
    values[7] = None if row[7] is None else json.loads(row[7])
    values[12] = bool(row[12])
    values[15] = None if row[15] is None else json.loads(row[15])
    return PrivacyRequest(*values)


class PrivacyRequestStore:
    """The ``privacy_requests`` table of ``<data-dir>/privacy.db``; safe to share between threads."""

    def __init__(self, data_dir: Path, default_region: str | None = "US") -> None:
        self._secret = load_or_create_secret(data_dir)
        self._region = default_region
        self._db = open_privacy_db(data_dir)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def create(
        self,
        spec: PrivacyRequestSpec,
        *,
        actor: str,
        received_at: int | None = None,
        request_key: str | None = None,
    ) -> tuple[PrivacyRequest, bool]:
        """Record a new request (status ``received``); answers it and whether it is new.

        With a ``request_key`` already used for the same request, the stored request is
        answered (not new); for a different request, :class:`Conflict`.
        """
        if request_key is not None and not (
            0 < len(request_key) <= MAX_REQUEST_KEY_CHARS and request_key.isprintable()
        ):
            raise InvalidInput("request_key", f"must be 1 to {MAX_REQUEST_KEY_CHARS} printable characters")
        at = _now(received_at)
        digest = self._digest(spec.identifier_type, spec.identifier_value)
        row = (
            "pr_" + secrets.token_hex(8), request_key, spec.type, spec.regime, spec.identifier_type,
            spec.identifier_value, digest, _json(spec.corrections), RECEIVED, actor, at,
            deadline(spec.type, spec.regime, at), 0, at, None, None, None,
        )
        with self._lock, transaction(self._db):
            if request_key is not None:
                held = self._db.execute(
                    f"SELECT {_COLUMNS} FROM privacy_requests WHERE request_key = ?", (request_key,)
                ).fetchone()
                if held is not None:
                    existing = _request(held)
                    same = (existing.type, existing.regime, existing.identifier_type, existing.identifier_digest)
                    if same != (spec.type, spec.regime, spec.identifier_type, digest) or (
                        existing.corrections is not None and existing.corrections != spec.corrections
                    ):
                        raise Conflict("request_key was already used for a different request")
                    return existing, False
            self._db.execute(f"INSERT INTO privacy_requests ({_COLUMNS}) VALUES ({', '.join('?' * 17)})", row)
        return _request(row), True

    def get(self, request_id: str) -> PrivacyRequest:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM privacy_requests WHERE request_id = ?", (request_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no privacy request with id {request_id!r}")
        return _request(row)

    def list(self, status: str | None = None, limit: int = 100) -> list[PrivacyRequest]:
        """Requests oldest first, optionally only those in ``status``."""
        if status is not None and status not in STATUSES:
            raise InvalidInput("status", f"must be one of {', '.join(STATUSES)}")
        if not 0 < limit <= MAX_LIST:
            raise InvalidInput("limit", f"must be between 1 and {MAX_LIST}")
        query = f"SELECT {_COLUMNS} FROM privacy_requests"
        params: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            params = (status,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY received_at, request_id LIMIT ?", (*params, limit)).fetchall()
        return [_request(row) for row in rows]

    def overdue(self, now_ms: int | None = None) -> list[PrivacyRequest]:
        """Open requests past their deadline, most overdue first."""
        marks = ", ".join("?" * len(OPEN_STATUSES))
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM privacy_requests WHERE status IN ({marks}) AND deadline_at < ?"
                " ORDER BY deadline_at, request_id",
                (*OPEN_STATUSES, _now(now_ms)),
            ).fetchall()
        return [_request(row) for row in rows]

    def update_status(
        self,
        request_id: str,
        status: str,
        *,
        now_ms: int | None = None,
        result: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> PrivacyRequest:
        """Move a request to ``status`` (allowed moves: :func:`~loyalty_cdp.core.privacy.check_transition`).

        Completing an erasure redacts every request about the same identifier.
        """
        at = _now(now_ms)
        with self._lock:
            with transaction(self._db):
                row = self._db.execute(
                    "SELECT status, type, identifier_digest FROM privacy_requests WHERE request_id = ?", (request_id,)
                ).fetchone()
                if row is None:
                    raise NotFound(f"no privacy request with id {request_id!r}")
                current, kind, digest = row
                check_transition(current, status)
                self._db.execute(
                    "UPDATE privacy_requests SET status = ?, updated_at = ?, completed_at = ?,"
                    " result = coalesce(?, result), reason = coalesce(?, reason) WHERE request_id = ?",
                    (status, at, at if status == COMPLETED else None, _json(result), reason, request_id),
                )
                erased = kind == ERASURE and status == COMPLETED
                if erased:
                    self._redact_digests([digest])
            if erased:
                self._checkpoint()
        return self.get(request_id)

    def extend(self, request_id: str, *, reason: str, now_ms: int | None = None) -> PrivacyRequest:
        """Take the regime's extension of an open request's deadline (once; the person must be told why)."""
        if not reason.strip():
            raise InvalidInput("reason", "an extension needs a reason to tell the person")
        request = self.get(request_id)
        if request.status not in OPEN_STATUSES:
            raise Conflict(f"a {request.status} request cannot be extended")
        extended = deadline(request.type, request.regime, request.received_at, extended=True)
        if request.extended or extended == request.deadline_at:
            raise Conflict("this request's deadline cannot be extended (again)")
        with self._lock:
            self._db.execute(
                "UPDATE privacy_requests SET extended = 1, deadline_at = ?, reason = ?, updated_at = ?"
                " WHERE request_id = ? AND extended = 0",
                (extended, reason.strip(), _now(now_ms), request_id),
            )
        return self.get(request_id)

    def redact(self, identifiers: Iterable[tuple[str, str]], keep: str | None = None) -> int:
        """Clear the identifier and corrections of every request about any of ``identifiers``
        (an erased member's ``(kind, value)`` pairs) and purge them from the file; answers how many.

        ``keep`` names a request left as it is: the erasure in progress, which still needs its
        identifier if it must be run again, and is redacted when it completes.
        """
        digests = [self._digest(kind, value) for kind, value in identifiers]
        with self._lock:
            with transaction(self._db):
                count = self._redact_digests(digests, keep)
            self._checkpoint()
        return count

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _digest(self, kind: str, value: str) -> bytes:
        key = normalised_key(kind, value, self._region)
        if key is None:
            raise InvalidInput("identifier.value", f"is not a usable {kind}")
        return identifier_digest(self._secret, key)

    def _redact_digests(self, digests: list[bytes], keep: str | None = None) -> int:
        before = self._db.total_changes
        self._db.executemany(
            "UPDATE privacy_requests SET identifier_value = NULL, corrections = NULL"
            " WHERE identifier_digest = ? AND (identifier_value IS NOT NULL OR corrections IS NOT NULL)"
            " AND request_id IS NOT ?",
            [(digest, keep) for digest in digests],
        )
        return self._db.total_changes - before

    def _checkpoint(self) -> None:
        """Copy the WAL into the database and cut it to zero bytes, so no old page survives in it."""
        for _ in range(CHECKPOINT_ATTEMPTS):
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.05)
        raise StorageUnavailable("privacy.db is busy; the redaction is committed, call redact again to purge the WAL")
