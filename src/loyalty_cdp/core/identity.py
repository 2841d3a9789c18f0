"""The identity graph: stitches identifiers into members, with merge protection and merge reasons.

:class:`IdentityGraph` maps every linked identifier to the member that owns it.
:meth:`IdentityGraph.resolve` takes a batch of decoded events and answers, per event,
the canonical id of the member it belongs to, plus every merge (with the event and
identifier that caused it) and every rename, so that the caller can combine the
profiles of merged members (see :func:`loyalty_cdp.core.profile.merge_profiles`).
The rules are written out in ``docs/identity.md``.

A graph need not hold every member: one holding the members that own any identifier of a
batch (:func:`batch_identifiers` names them) resolves that batch exactly as the whole graph
would, since resolution only ever looks up the batch's identifiers and then works on their
owners, each with all its identifiers (merge protection counts them).
"""

from __future__ import annotations

import hashlib
from bisect import insort
from collections.abc import Iterable, Sequence

import msgspec

from loyalty_cdp.core.identifiers import (
    ANONYMOUS_ID,
    DEVICE_ID,
    EMAIL,
    EXTERNAL_PREFIX,
    PHONE,
    USER_ID,
    DecodedEvent,
    extract_identifiers,
    identifier_key,
    normalise_identifier,
    split_key,
)
from loyalty_cdp.errors import InvalidInput

ANONYMOUS_MEMBER_PREFIX = "anon:"
ESCAPED_USER_PREFIX = "uid:"

DEFAULT_LIMITS = {EMAIL: 5, PHONE: 5, DEVICE_ID: 10, "card": 5, "pos_customer_id": 5,
                  ANONYMOUS_ID: 1000}


class IdentityRules(msgspec.Struct, frozen=True):
    """How identifiers are read and how many of each kind one member may hold.

    A member always holds at most one ``user_id``; ``limits`` caps the other kinds,
    and ``external_limit`` caps each ``ext.<type>`` kind.
    """

    default_region: str | None = "US"
    limits: dict[str, int] = msgspec.field(default_factory=lambda: dict(DEFAULT_LIMITS))
    external_limit: int = 5

    def __post_init__(self) -> None:
        for kind, limit in self.limits.items():
            if kind == USER_ID:
                raise InvalidInput("limits.user_id", "is always 1 and cannot be configured")
            if limit < 1:
                raise InvalidInput(f"limits.{kind}", f"must be at least 1, got {limit}")
        if self.external_limit < 1:
            raise InvalidInput("external_limit", "must be at least 1")

    def limit(self, kind: str) -> int:
        if kind == USER_ID:
            return 1
        if kind.startswith(EXTERNAL_PREFIX):
            return self.external_limit
        return self.limits.get(kind, self.external_limit)


class Member(msgspec.Struct, kw_only=True, gc=False):
    """One member in the graph: its canonical id and its identifiers by kind (sorted)."""

    id: str
    identities: dict[str, list[str]] = msgspec.field(default_factory=dict)

    @property
    def user_id(self) -> str | None:
        values = self.identities.get(USER_ID)
        return values[0] if values else None


class Merge(msgspec.Struct, frozen=True):
    """Two members became one: ``from_id`` was absorbed into ``into_id`` because event
    ``message_id`` carried identifier ``kind``/``value`` that ``from_id`` owned."""

    message_id: str
    timestamp: int
    kind: str
    value: str
    from_id: str
    into_id: str


class Link(msgspec.Struct, frozen=True):
    """An identifier seen for the first time was attached to member ``member_id``."""

    message_id: str
    timestamp: int
    kind: str
    value: str
    member_id: str


class Rejection(msgspec.Struct, frozen=True):
    """An identifier stayed on its event but linked nothing: ``reason`` says which rule."""

    message_id: str
    kind: str
    value: str
    member_id: str
    reason: str


class Resolution(msgspec.Struct):
    """What :meth:`IdentityGraph.resolve` did to a batch.

    ``assignments[i]`` is the final canonical member id of the batch's i-th event (None
    when it carries no usable identifier). ``renamed`` maps every member id that existed
    before the batch and no longer exists to the id that now holds its identifiers (after
    a merge, or when an anonymous member's id changed); ``changed`` lists the final ids
    of every member created or modified, for the caller to persist.
    """

    assignments: list[str | None]
    merges: list[Merge]
    links: list[Link]
    rejections: list[Rejection]
    renamed: dict[str, str]
    changed: list[str]


class GraphState(msgspec.Struct):
    """The serialisable state of a graph: its members (the identifier index is derived)."""

    members: list[Member]


def member_id_for_user(user_id: str) -> str:
    """The canonical member id of a known user: the user id itself, escaped when it could
    collide with the ids given to anonymous members."""
    if user_id.startswith((ANONYMOUS_MEMBER_PREFIX, ESCAPED_USER_PREFIX)):
        return ESCAPED_USER_PREFIX + user_id
    return user_id


def canonical_id(identities: dict[str, list[str]]) -> str:
    """A member's id from its identifiers alone: the user id when known, else
    ``anon:<smallest anonymous id>``, else ``anon:~<hash of its smallest identifier>``."""
    user_ids = identities.get(USER_ID)
    if user_ids:
        return member_id_for_user(user_ids[0])
    anonymous_ids = identities.get(ANONYMOUS_ID)
    if anonymous_ids:
        return ANONYMOUS_MEMBER_PREFIX + anonymous_ids[0]
    smallest = min(identifier_key(kind, values[0]) for kind, values in identities.items())
    digest = hashlib.blake2b(smallest.encode(), digest_size=8).hexdigest()
    return f"{ANONYMOUS_MEMBER_PREFIX}~{digest}"


def batch_identifiers(events: Iterable[DecodedEvent], rules: IdentityRules) -> list[list[str]]:
    """The identifier keys of each event of a batch, as :meth:`IdentityGraph.resolve` reads them:
    a caller loads the members owning any of them, then hands them to ``resolve`` (extracted once)."""
    region = rules.default_region
    return [extract_identifiers(event, region) for event in events]


class IdentityGraph:
    """Identifier -> member index with Segment-style merge protection (pure, in memory).

    Events of a batch are applied in (timestamp, message_id) order, so that when a limit
    or two user ids force a first-come rule, the earlier event wins; across batches,
    earlier batches win (a merge is never undone).
    """

    def __init__(self, rules: IdentityRules | None = None, members: Iterable[Member] = ()):
        self.rules = rules or IdentityRules()
        self._members: dict[str, Member] = {}
        self._owner: dict[str, Member] = {}
        for member in members:
            copy = Member(
                id=member.id,
                identities={kind: sorted(values) for kind, values in member.identities.items()},
            )
            self._members[copy.id] = copy
            for kind, values in copy.identities.items():
                for value in values:
                    self._owner[identifier_key(kind, value)] = copy

    @classmethod
    def from_state(cls, state: GraphState, rules: IdentityRules | None = None) -> IdentityGraph:
        return cls(rules, state.members)

    def state(self) -> GraphState:
        """A snapshot of every member, sorted by id (safe to encode with msgspec)."""
        return GraphState(members=[_copy(self._members[mid]) for mid in sorted(self._members)])

    def __len__(self) -> int:
        return len(self._members)

    def member(self, member_id: str) -> Member | None:
        """A copy of one member, or None."""
        found = self._members.get(member_id)
        return None if found is None else _copy(found)

    def lookup(self, kind: str, value: str) -> Member | None:
        """The member owning an identifier given as a client would send it (normalised here)."""
        normal = normalise_identifier(kind, value, self.rules.default_region)
        if normal is None:
            return None
        owner = self._owner.get(identifier_key(kind, normal))
        return None if owner is None else self.member(owner.id)

    def resolve(self, events: Sequence[DecodedEvent], identifiers: Sequence[list[str]] | None = None) -> Resolution:
        """Link the identifiers of a batch and assign every event to its member. ``identifiers``
        are the events' keys from :func:`batch_identifiers`, when the caller has them already."""
        run = _Run(self)
        found = batch_identifiers(events, self.rules) if identifiers is None else identifiers
        # Two stable sorts give (timestamp, message_id) order without a tuple per event; the keys
        # are looked up in lists by a C method, not a Python function per comparison key.
        order = sorted(range(len(events)), key=[e.message_id for e in events].__getitem__)
        order.sort(key=[e.timestamp for e in events].__getitem__)
        assigned: list[Member | None] = [None] * len(events)
        for index in order:
            keys = found[index]
            if keys:
                assigned[index] = run.apply(events[index], keys)
        return run.finish(assigned)


class _Run:
    """The bookkeeping of one :meth:`IdentityGraph.resolve` call."""

    def __init__(self, graph: IdentityGraph) -> None:
        self.members = graph._members
        self.owner = graph._owner
        self.limit = graph.rules.limit
        self.absorbed_into: dict[int, Member] = {}
        self.original_ids: dict[int, str] = {}
        self.touched: dict[int, Member] = {}
        self.merges: list[Merge] = []
        self.links: list[Link] = []
        self.rejections: list[Rejection] = []

    def apply(self, event: DecodedEvent, keys: list[str]) -> Member:
        first_kind = split_key(keys[0])[0]
        target = self.owner.get(keys[0])
        if target is None and first_kind != USER_ID:
            target = next((self.owner[key] for key in keys[1:] if key in self.owner), None)
        if target is None:
            target = Member(id="")
            self.touched[id(target)] = target
        for key in keys:
            owner = self.owner.get(key)
            if owner is target:
                continue
            kind, value = split_key(key)
            if owner is None:
                if len(target.identities.get(kind, ())) >= self.limit(kind):
                    self._reject(event, kind, value, target, f"limit of {self.limit(kind)} {kind}")
                    continue
                self._touch(target)
                insort(target.identities.setdefault(kind, []), value)
                self.owner[key] = target
                self._rename(target)
                self.links.append(Link(event.message_id, event.timestamp, kind, value, target.id))
            else:
                reason = self._merge_blocker(target, owner)
                if reason is not None:
                    self._reject(event, kind, value, target, reason)
                    continue
                target = self._merge(event, kind, value, target, owner)
        return target

    def _touch(self, member: Member) -> None:
        key = id(member)
        if key not in self.touched:
            self.touched[key] = member
            self.original_ids[key] = member.id

    def _rename(self, member: Member) -> None:
        new_id = canonical_id(member.identities)
        if new_id != member.id:
            if self.members.get(member.id) is member:
                del self.members[member.id]
            member.id = new_id
            self.members[new_id] = member

    def _merge_blocker(self, target: Member, other: Member) -> str | None:
        for kind, values in other.identities.items():
            total = len(values) + len(target.identities.get(kind, ()))
            if total > self.limit(kind):
                return f"merging would exceed the limit of {self.limit(kind)} {kind}"
        return None

    def _merge(
        self, event: DecodedEvent, kind: str, value: str, target: Member, other: Member
    ) -> Member:
        self._touch(target)
        self._touch(other)
        before = (target.id, other.id)
        survivor, absorbed = (target, other) if _size(target) >= _size(other) else (other, target)
        for merged_kind, values in absorbed.identities.items():
            kept = survivor.identities.setdefault(merged_kind, [])
            for merged_value in values:
                insort(kept, merged_value)
                self.owner[identifier_key(merged_kind, merged_value)] = survivor
        if self.members.get(absorbed.id) is absorbed:
            del self.members[absorbed.id]
        absorbed.identities = {}
        self.absorbed_into[id(absorbed)] = survivor
        self._rename(survivor)
        from_id = before[1] if before[0] == survivor.id else before[0]
        self.merges.append(
            Merge(event.message_id, event.timestamp, kind, value, from_id, survivor.id)
        )
        return survivor

    def _reject(
        self, event: DecodedEvent, kind: str, value: str, member: Member, reason: str
    ) -> None:
        self.rejections.append(Rejection(event.message_id, kind, value, member.id, reason))

    def _final(self, member: Member) -> Member:
        while id(member) in self.absorbed_into:
            member = self.absorbed_into[id(member)]
        return member

    def finish(self, assigned: list[Member | None]) -> Resolution:
        renamed: dict[str, str] = {}
        changed: set[str] = set()
        for key, member in self.touched.items():
            final = self._final(member)
            original = self.original_ids.get(key, "")
            if original and original != final.id:
                renamed[original] = final.id
            changed.add(final.id)
        return Resolution(
            assignments=[None if m is None else self._final(m).id for m in assigned],
            merges=self.merges,
            links=self.links,
            rejections=self.rejections,
            renamed=renamed,
            changed=sorted(changed),
        )


def _copy(member: Member) -> Member:
    return Member(id=member.id, identities={k: list(vs) for k, vs in member.identities.items()})


def _size(member: Member) -> int:
    return sum(len(values) for values in member.identities.values())
