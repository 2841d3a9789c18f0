"""Erased members' points liability, kept as anonymised daily totals in ``<data-dir>/privacy.db``.

An erasure deletes the member's ledger, but finance still has to reconcile the points that
were outstanding: the member's line of the liability report moves here, summed into one row
per erasure day and currency, with no member, no request and no identifier. While an
erasure runs, its line waits in ``erased_liability_pending`` under the request id, so an
erasure that fails and is run again counts the member once; settling moves the line into
the day's totals and deletes the pending row in one transaction, then the WAL is truncated
(``secure_delete`` has zeroed the freed bytes), so nothing ties the totals to the request.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from loyalty_cdp.adapters.suppression import open_privacy_db, transaction
from loyalty_cdp.core.loyalty import LiabilityReport
from loyalty_cdp.errors import StorageUnavailable

CHECKPOINT_ATTEMPTS = 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS erased_liability (
    day      TEXT NOT NULL,
    currency TEXT NOT NULL,
    line     TEXT NOT NULL,
    PRIMARY KEY (day, currency)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erased_liability_pending (
    request_id TEXT PRIMARY KEY,
    line       TEXT NOT NULL
) WITHOUT ROWID;
"""

_encode = msgspec.json.Encoder().encode


class ErasedLine(msgspec.Struct, kw_only=True):
    """The liability of one or more erased members: points and their value, by tier and expiry month."""

    currency: str
    members: int
    outstanding_points: int
    pending_points: int
    outstanding_value: float
    issued_points: int
    redeemed_points: int
    expired_points: int
    by_tier: dict[str, int]
    expiry_forecast: dict[str, int]

    @classmethod
    def of(cls, report: LiabilityReport) -> ErasedLine:
        """The line of a liability report over the erased member alone."""
        return cls(
            currency=report.currency, members=report.members, outstanding_points=report.outstanding_points,
            pending_points=report.pending_points, outstanding_value=report.outstanding_value,
            issued_points=report.issued_points, redeemed_points=report.redeemed_points,
            expired_points=report.expired_points,
            by_tier={tier: points for tier, points in report.by_tier.items() if points},
            expiry_forecast=dict(report.expiry_forecast),
        )

    def plus(self, other: ErasedLine) -> ErasedLine:
        def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {key: a.get(key, 0) + b.get(key, 0) for key in sorted(a.keys() | b.keys())}

        return ErasedLine(
            currency=self.currency, members=self.members + other.members,
            outstanding_points=self.outstanding_points + other.outstanding_points,
            pending_points=self.pending_points + other.pending_points,
            outstanding_value=round(self.outstanding_value + other.outstanding_value, 2),
            issued_points=self.issued_points + other.issued_points,
            redeemed_points=self.redeemed_points + other.redeemed_points,
            expired_points=self.expired_points + other.expired_points,
            by_tier=add(self.by_tier, other.by_tier), expiry_forecast=add(self.expiry_forecast, other.expiry_forecast),
        )


_decode_line = msgspec.json.Decoder(ErasedLine).decode


class ErasedLiability:
    """The erased-members liability tables of ``<data-dir>/privacy.db``; safe to share between threads."""

    def __init__(self, data_dir: Path) -> None:
        self._db = open_privacy_db(data_dir)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def hold(self, request_id: str, line: ErasedLine) -> None:
        """Keep the line of the member an erasure is about to delete (replacing an earlier attempt's)."""
        with self._lock, transaction(self._db):
            self._db.execute("INSERT OR REPLACE INTO erased_liability_pending (request_id, line) VALUES (?, ?)",
                             (request_id, _encode(line)))

    def held(self, request_id: str) -> ErasedLine | None:
        with self._lock:
            row = self._db.execute("SELECT line FROM erased_liability_pending WHERE request_id = ?",
                                   (request_id,)).fetchone()
        return None if row is None else _decode_line(row[0])

    def settle(self, request_id: str, now_ms: int | None = None) -> ErasedLine | None:
        """Add the held line to the totals of the erasure's day and forget which request it came from."""
        at = now_ms if now_ms is not None else int(time.time() * 1000)
        day = time.strftime("%Y-%m-%d", time.gmtime(at / 1000))
        with self._lock:
            with transaction(self._db):
                row = self._db.execute("SELECT line FROM erased_liability_pending WHERE request_id = ?",
                                       (request_id,)).fetchone()
                if row is None:
                    return None
                line = _decode_line(row[0])
                held = self._db.execute("SELECT line FROM erased_liability WHERE day = ? AND currency = ?",
                                        (day, line.currency)).fetchone()
                total = line if held is None else _decode_line(held[0]).plus(line)
                self._db.execute("INSERT OR REPLACE INTO erased_liability (day, currency, line) VALUES (?, ?, ?)",
                                 (day, line.currency, _encode(total)))
                self._db.execute("DELETE FROM erased_liability_pending WHERE request_id = ?", (request_id,))
            self._checkpoint()
        return line

    def totals(self) -> dict[str, Any]:
        """Every day's line and the grand total per currency, JSON-ready."""
        with self._lock:
            rows = self._db.execute("SELECT day, line FROM erased_liability ORDER BY day, currency").fetchall()
        days = [(day, _decode_line(line)) for day, line in rows]
        overall: dict[str, ErasedLine] = {}
        for _, line in days:
            overall[line.currency] = overall[line.currency].plus(line) if line.currency in overall else line
        return {
            "days": [{"day": day, **msgspec.to_builtins(line)} for day, line in days],
            "totals": [msgspec.to_builtins(line) for _, line in sorted(overall.items())],
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _checkpoint(self) -> None:
        """Copy the WAL into the file and cut it to zero bytes (call with the lock held)."""
        for _ in range(CHECKPOINT_ATTEMPTS):
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.05)
        raise StorageUnavailable("privacy.db is busy; the liability line is settled, the WAL not yet truncated")
