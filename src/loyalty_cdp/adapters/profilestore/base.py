"""The profile store contract: the processor's state and its log offset, committed together.

The processor folds the event log into members; what it has folded is described by one
number, the offset of the last event applied. Every implementation commits the changed
members, the changed profiles and that offset in **one transaction**, so after a crash
the state and the offset agree: no batch is applied twice and none is skipped.

Besides the members (member id -> identifiers), a store keeps the **identifier index**
(identifier key -> member id, the key being :func:`~loyalty_cdp.core.identifiers.identifier_key`),
derived from the members and written in the same transaction: the processor loads only the
members a batch touches (:meth:`ProfileStore.members_owning`) and readers find a member by
any identifier (:meth:`ProfileStore.owner`) without the graph in memory. The graph gives
each identifier one member; :func:`index_changes` is how a commit keeps the index in step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

import msgspec

from loyalty_cdp.core.identifiers import identifier_key
from loyalty_cdp.core.identity import Member


class Snapshot(msgspec.Struct):
    """Everything the processor needs to resume: the offset, the graph (empty when loaded
    without members), the profiles, and the state shared between members (the loyalty
    program's campaign budgets), None until set."""

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


def member_keys(identities: Mapping[str, Iterable[str]]) -> set[str]:
    """The identifier keys of one member's identities."""
    return {identifier_key(kind, value) for kind, values in identities.items() for value in values}


def index_changes(before: Mapping[str, Mapping[str, Iterable[str]]],
                  changes: Changes) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """What ``changes`` does to the identifier index, given the committed identities ``before``
    of the members it removes or writes: (key, member id) pairs to drop (only while the key still
    names that member), then (key, member id) pairs to write (replacing any other owner).

    Only keys that change are touched: a member written again with the identifiers it had
    costs nothing in the index."""
    written = {member.id: member.identities for member in changes.members}  # the last one wins, as stored
    drop: list[tuple[str, str]] = []
    add: list[tuple[str, str]] = []
    for member_id in {*changes.removed_members, *written}:
        old = member_keys(before.get(member_id, {}))
        new = member_keys(written.get(member_id, {}))
        drop += [(key, member_id) for key in old - new]
        add += [(key, member_id) for key in new - old]
    return drop, add


class ProfileStore(Protocol):
    def load(self, members: bool = True, profiles: bool = True) -> Snapshot:
        """The state as last committed (offset 0 and nothing else for a new store). With
        ``members=False`` the snapshot leaves the members out: a processor that loads a batch's
        members from the store (:meth:`members_owning`) needs them only for an in-memory index.
        With ``profiles=False`` it leaves the profiles out (a caller walks them with
        :meth:`iter_profiles` instead of holding them all at once)."""
        ...

    def owner(self, key: str) -> str | None:
        """The id of the member owning an identifier key as last committed, or None."""
        ...

    def members_owning(self, keys: Iterable[str]) -> list[Member]:
        """Every member owning any of ``keys``, once each, with all its identifiers."""
        ...

    def member(self, member_id: str) -> Member | None:
        """One member with all its identifiers, or None."""
        ...

    def commit(self, changes: Changes) -> None:
        """Apply ``changes`` and move the offset, atomically and durably."""
        ...

    def history(self, member_id: str) -> list[IdentityRecord]:
        """The member's identity history (merges, links, rejected links), oldest first."""
        ...

    def iter_profiles(self) -> Iterator[tuple[str, bytes]]:
        """Every (member id, encoded profile) in member id order, for batch jobs that scan all members."""
        ...

    def erase_member(self, member_id: str) -> None:
        """Delete one member's identities (with their index entries), profile and identity history
        in one transaction, so
        that no reader can find them afterwards and the storage engine's free pages and logs
        keep none of it (erasure)."""
        ...

    def reset(self) -> None:
        """Forget everything (offset back to 0): ``loyalty-cdp replay`` starts here."""
        ...

    def close(self) -> None: ...
