"""Segment definitions, a member's memberships, and the Segment Entered/Exited events.

A member's memberships live in ``Profile.segments`` as ``{segment_id: {"member": bool,
"since": epoch ms, "entries": n}}``: whether they are in, since when (entry or exit), and
how many times they have entered. Entering for the n-th time emits ``Segment Entered``
with message id ``hash(member, "Segment Entered", segment, n)``, leaving after it
``Segment Exited`` with the same n: evaluating the same history again (a replay) finds
the same transitions with the same ids, and the event log's message-id dedup stores each
once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.core.events import format_time
from loyalty_cdp.core.profile import Profile, caller_of
from loyalty_cdp.core.segments.batch import MemberTable
from loyalty_cdp.core.segments.conditions import Condition, counts_of, parse_condition, time_dependent
from loyalty_cdp.core.segments.counts import WindowPlan
from loyalty_cdp.core.segments.evaluate import holds
from loyalty_cdp.core.segments.facts import MemberFacts
from loyalty_cdp.core.segments.fields import FieldCatalog
from loyalty_cdp.core.segments.validation import check_id
from loyalty_cdp.errors import InvalidInput

SEGMENT_ENTERED = "Segment Entered"
SEGMENT_EXITED = "Segment Exited"
CHANNEL = "segments"
DEFINITION_KEYS = ("id", "name", "description", "when")


class SegmentDefinition(msgspec.Struct, frozen=True):
    """One segment: its id, words for people, its condition and the condition as written."""

    id: str
    name: str
    description: str
    condition: Condition
    time_dependent: bool
    when: dict[str, Any]


def parse_segment(raw: Any, field: str, catalog: FieldCatalog) -> SegmentDefinition:
    """One segment definition (YAML or the JSON API), with errors naming ``field``'s keys."""
    if not isinstance(raw, dict):
        raise InvalidInput(field, "expected an object with id, name, description and when")
    for key in raw:
        if key not in DEFINITION_KEYS:
            raise InvalidInput(f"{field}.{key}", f"unknown key {key!r}; expected one of {', '.join(DEFINITION_KEYS)}")
    segment_id = check_id(raw.get("id"), f"{field}.id")
    for key in ("name", "description"):
        if not isinstance(raw.get(key, ""), str):
            raise InvalidInput(f"{field}.{key}", "expected a text")
    if "when" not in raw:
        raise InvalidInput(f"{field}.when", "required key is missing")
    condition = parse_condition(raw["when"], f"{field}.when", catalog.with_options(segments=False, event=False))
    return SegmentDefinition(segment_id, raw.get("name") or segment_id, raw.get("description", ""), condition,
                             time_dependent(condition), raw["when"])


class SegmentSet:
    """The configured segments, in order, and the event windows their counts need."""

    def __init__(self, definitions: Iterable[SegmentDefinition]) -> None:
        self.definitions = tuple(definitions)
        self.by_id = {definition.id: definition for definition in self.definitions}
        self.plan = WindowPlan(spec for d in self.definitions for spec in counts_of(d.condition))
        self.time_dependent = any(definition.time_dependent for definition in self.definitions)

    def __len__(self) -> int:
        return len(self.definitions)

    def evaluate(self, facts: MemberFacts) -> list[str]:
        """The ids of the segments whose condition holds for ``facts``."""
        return [definition.id for definition in self.definitions if holds(definition.condition, facts)]

    def evaluate_table(self, table: MemberTable) -> dict[str, NDArray[np.bool_]]:
        """Each segment's membership over the table's members (vectorised)."""
        return {definition.id: table.evaluate(definition.condition) for definition in self.definitions}


def parse_segments(raw: Any, field: str, catalog: FieldCatalog) -> SegmentSet:
    """The ``segments:`` list of a program document."""
    if raw is None:
        return SegmentSet(())
    if not isinstance(raw, list):
        raise InvalidInput(field, "expected a list of segment definitions")
    definitions: list[SegmentDefinition] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        definition = parse_segment(item, f"{field}[{index}]", catalog)
        if definition.id in seen:
            raise InvalidInput(f"{field}[{index}].id", f"duplicate segment id {definition.id!r}")
        seen.add(definition.id)
        definitions.append(definition)
    return SegmentSet(definitions)


class MembershipUpdate(msgspec.Struct, frozen=True):
    """The profile's new ``segments`` object and the transitions, as Segment track calls."""

    segments: dict[str, Any]
    entered: list[str]
    exited: list[str]
    events: list[dict[str, Any]]


def message_id(member_id: str, kind: str, segment_id: str, entry: int) -> str:
    """``seg-`` and 32 hex digits of blake2b over member, kind, segment and entry number."""
    text = f"{member_id}\x1f{kind}\x1f{segment_id}\x1f{entry}"
    return "seg-" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def segment_event(profile: Profile, kind: str, segment_id: str, name: str, entry: int, at: int,
                  since: int | None = None) -> dict[str, Any]:
    """A ``Segment Entered`` or ``Segment Exited`` track call at ``at``."""
    properties: dict[str, Any] = {"segment_id": segment_id, "segment_name": name, "entry": entry}
    if since is not None:
        properties["member_since"] = format_time(since)
    return {
        "type": "track",
        **caller_of(profile),
        "event": kind,
        "properties": properties,
        "timestamp": format_time(at),
        "messageId": message_id(profile.member_id, kind, segment_id, entry),
        "context": {"channel": CHANNEL},
    }


def apply_memberships(segments: SegmentSet, profile: Profile, now_in: Iterable[str], at: int) -> MembershipUpdate:
    """Move ``profile``'s memberships to ``now_in`` (segment ids) at ``at``.

    Memberships of segments no longer configured end (they exit); their entry counts are
    kept, so that re-adding the segment keeps numbering entries where it was."""
    members = set(now_in)
    state: dict[str, Any] = dict(profile.segments)
    entered: list[str] = []
    exited: list[str] = []
    events: list[dict[str, Any]] = []
    for segment_id in sorted(set(state) | set(segments.by_id)):
        old = state.get(segment_id)
        was_in = isinstance(old, dict) and bool(old.get("member"))
        entries = old.get("entries", 0) if isinstance(old, dict) else 0
        is_in = segment_id in members and segment_id in segments.by_id
        if is_in == was_in:
            continue
        definition = segments.by_id.get(segment_id)
        name = definition.name if definition else segment_id
        if is_in:
            entries += 1
            entered.append(segment_id)
            events.append(segment_event(profile, SEGMENT_ENTERED, segment_id, name, entries, at))
        else:
            exited.append(segment_id)
            since = old.get("since") if isinstance(old, dict) else None
            events.append(segment_event(profile, SEGMENT_EXITED, segment_id, name, entries, at,
                                        since if isinstance(since, int) else None))
        state[segment_id] = {"member": is_in, "since": at, "entries": entries}
    return MembershipUpdate(state, entered, exited, events)


def update_memberships(segments: SegmentSet, facts: MemberFacts, at: int | None = None) -> MembershipUpdate:
    """Evaluate every segment for ``facts`` and move the memberships (``at`` defaults to as_of)."""
    return apply_memberships(segments, facts.profile, segments.evaluate(facts), facts.as_of if at is None else at)
