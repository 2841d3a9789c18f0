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

An event is a member's when its user id is one of the member's user ids or its anonymous id
one of its anonymous ids: the logs select by that rule in their stores, and
:class:`MemberReads` splits what one read of several members found by it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Protocol

import msgspec

from loyalty_cdp.core.events import Event

MAX_OFFSET = 2**63 - 1  # offsets are 64-bit signed integers in every log


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

    def known(self, message_ids: Collection[str]) -> set[str]:
        """Those of ``message_ids`` the log holds, as of its last commit."""
        ...

    def read_member(
        self, user_ids: Collection[str], anonymous_ids: Collection[str], through: int | None = None
    ) -> list[StoredEvent]:
        """Every event whose userId or anonymousId is one of those given, in offset order; with
        ``through``, only those at offsets up to it."""
        ...

    def read_members(
        self, members: Sequence[tuple[Collection[str], Collection[str]]], through: int | None = None
    ) -> list[list[StoredEvent]]:
        """For each (user ids, anonymous ids) pair, the events ``read_member`` returns for it.

        One list per pair, in the pairs' order, each in offset order; an event may belong to
        several pairs. Costs about one ``read_member``, whatever the number of members. With
        ``through``, the log after that offset is not searched.
        """
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


class MemberReads(ABC):
    """``read_member`` and ``read_members`` for a log that implements ``_read_any``: one read
    of the members' ids together, then the split by the rule above."""

    @abstractmethod
    def _read_any(self, user_ids: set[str], anonymous_ids: set[str], through: int) -> list[StoredEvent]:
        """Every event whose user id or anonymous id is one of those given, in offset order, up
        to offset ``through`` (never called with no id at all)."""

    def read_member(self, user_ids: Collection[str], anonymous_ids: Collection[str],
                    through: int | None = None) -> list[StoredEvent]:
        return self.read_members([(user_ids, anonymous_ids)], through)[0]

    def read_members(self, members: Sequence[tuple[Collection[str], Collection[str]]],
                     through: int | None = None) -> list[list[StoredEvent]]:
        users = {value for user_ids, _ in members for value in user_ids}
        anonymous = {value for _, anonymous_ids in members for value in anonymous_ids}
        if not users and not anonymous:
            return [[] for _ in members]
        events = self._read_any(users, anonymous, MAX_OFFSET if through is None else through)
        if len(members) == 1:  # the union is the member: every event read is its
            return [events]
        by_user: dict[str | None, list[int]] = defaultdict(list)
        by_anonymous: dict[str | None, list[int]] = defaultdict(list)
        for index, (user_ids, anonymous_ids) in enumerate(members):
            for value in user_ids:
                by_user[value].append(index)
            for value in anonymous_ids:
                by_anonymous[value].append(index)
        histories: list[list[StoredEvent]] = [[] for _ in members]
        for event in events:
            for index in {*by_user.get(event.user_id, ()), *by_anonymous.get(event.anonymous_id, ())}:
                histories[index].append(event)
        return histories
