"""The profile store contract: the processor's state and its log offset, committed together.

The processor folds the event log into members; what it has folded is described by one
number, the offset of the last event applied. Every implementation commits the changed
members, the changed profiles and that offset in **one transaction**, so after a crash
the state and the offset agree: no batch is applied twice and none is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import msgspec

from loyalty_cdp.core.identity import Member


class Snapshot(msgspec.Struct):
    """Everything the processor needs to resume: the offset, the graph, the profiles, and the
    state shared between members (the loyalty program's campaign budgets), None until set."""

    offset: int
    members: list[Member]
    profiles: dict[str, bytes]
    shared: bytes | None = None


class IdentityRecord(msgspec.Struct, frozen=True):
    """Why an identifier sits where it does: a ``merge`` (``other_id`` was absorbed), a
    ``link`` (first sighting) or a ``rejected`` link (``reason`` names the rule)."""

    member_id: str
    action: str
    message_id: str
    timestamp: int
    kind: str
    value: str
    other_id: str | None = None
    reason: str | None = None


class Changes(msgspec.Struct):
    """One batch's effect: members and profiles written or removed, and the new offset.

    ``renamed`` maps member ids that vanished to the ids that absorbed them, so that the
    identity history recorded under the old id follows the member. ``shared`` replaces the
    state shared between members when it is not None.
    """

    offset: int
    members: Sequence[Member] = ()
    removed_members: Sequence[str] = ()
    profiles: dict[str, bytes] = msgspec.field(default_factory=dict)
    removed_profiles: Sequence[str] = ()
    renamed: dict[str, str] = msgspec.field(default_factory=dict)
    history: Sequence[IdentityRecord] = ()
    shared: bytes | None = None  # None: unchanged


class ProfileStore(Protocol):
    def load(self) -> Snapshot:
        """The state as last committed (offset 0 and nothing else for a new store)."""
        ...

    def commit(self, changes: Changes) -> None:
        """Apply ``changes`` and move the offset, atomically and durably."""
        ...

    def history(self, member_id: str) -> list[IdentityRecord]:
        """The member's identity history (merges, links, rejected links), oldest first."""
        ...

    def iter_profiles(self) -> Iterator[tuple[str, bytes]]:
        """Every (member id, encoded profile), for batch jobs that scan all members."""
        ...

    def erase_member(self, member_id: str) -> None:
        """Delete one member's identities, profile and identity history in one transaction, so
        that no reader can find them afterwards and the storage engine's free pages and logs
        keep none of it (erasure)."""
        ...

    def reset(self) -> None:
        """Forget everything (offset back to 0): ``loyalty-cdp replay`` starts here."""
        ...

    def close(self) -> None: ...
