"""The event log contract: a durable, append-only, deduplicated log of canonical events.

Every implementation (SQLite for the embedded default, PostgreSQL for scale-out, and
later NATS JetStream with subjects partitioned by member) honours the same guarantees,
checked by one contract test suite (``tests/integration/test_eventlog_contract.py``):

1. ``append`` returns only after the events are durable (fsync'd / committed).
2. A ``message_id`` is stored at most once, forever (so deduplication holds for far more
   than the seven days the brief asks); a repeat with different content is a *conflict*:
   the first version wins and the repeat is counted.
3. Offsets are positive, strictly increasing in append order, and never reused, so a
   reader that remembers the last offset it processed misses nothing and sees nothing twice.
4. ``delete_member`` removes every event that carries one of the given identifiers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

import msgspec

from loyalty_cdp.core.events import Event


class AppendResult(msgspec.Struct, frozen=True):
    appended: int
    duplicates: int
    conflicts: int


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as read back from the log, with its position."""

    offset: int
    message_id: str
    type: str
    event: str | None
    user_id: str | None
    anonymous_id: str | None
    timestamp: int
    received_at: int
    channel: str | None
    body: bytes


class EventLog(Protocol):
    def append(self, events: Sequence[Event]) -> AppendResult:
        """Store new events durably, skipping known message ids (also within ``events``)."""
        ...

    def read(self, after: int = 0, limit: int = 10_000) -> list[StoredEvent]:
        """Events with offset > ``after``, in offset order, at most ``limit`` of them."""
        ...

    def read_member(
        self, user_ids: Collection[str], anonymous_ids: Collection[str]
    ) -> list[StoredEvent]:
        """Every event whose userId or anonymousId is one of those given, in offset order."""
        ...

    def delete_member(self, user_ids: Collection[str], anonymous_ids: Collection[str]) -> int:
        """Delete every event carrying one of the identifiers; returns how many were deleted."""
        ...

    def last_offset(self) -> int:
        """The highest offset stored, 0 for an empty log."""
        ...

    def count(self) -> int:
        """Number of events stored."""
        ...

    def size_bytes(self) -> int:
        """Bytes the log occupies in its store (for the log-size metric)."""
        ...

    def close(self) -> None: ...
