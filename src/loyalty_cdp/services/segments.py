"""The segments in force: the program's and those defined through the JSON API; batch recomputation and previews.

:class:`SegmentRegistry` answers :meth:`~SegmentRegistry.current` (the
:class:`~loyalty_cdp.core.segments.SegmentSet` of an instant: the program version's segments
then the API's, cached and rebuilt only when a definition changes or another program version
comes into force), which the processor's decisioning stage calls for every batch.

Segments defined through the API live in the ``api_segments`` table of the decision store's
file (``<data-dir>/outbox.db``), as the JSON the caller sent; they are checked with the same
parser as the program file's (:func:`~loyalty_cdp.core.segments.parse_segment`), and their ids
may not clash with a segment of any program version.

:meth:`~SegmentRegistry.recompute` evaluates one segment over every member at once with the
vectorised :class:`~loyalty_cdp.core.segments.MemberTable` and writes the entries and exits
that move the decision store's memberships to the result (``segment_members``,
``segment_transitions``); :meth:`~SegmentRegistry.preview` estimates a draft's size over a
stable hash sample of members without storing anything.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import msgspec

from loyalty_cdp.adapters.decisionstore import Batch, DecisionStore, Transition
from loyalty_cdp.adapters.scorestore import ScoreStore
from loyalty_cdp.core.consent import STRICT_POLICY, DefaultPolicy
from loyalty_cdp.core.decisioning import DecisioningBook, DecisioningConfig
from loyalty_cdp.core.loyalty import ProgramBook
from loyalty_cdp.core.loyalty.state import new_state
from loyalty_cdp.core.loyalty.summary import loyalty_summary
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.core.segments import (
    FieldCatalog,
    LoyaltyReader,
    MemberFacts,
    MemberTable,
    SegmentDefinition,
    SegmentSet,
    SizeEstimate,
    estimate_size,
    in_sample,
    loyalty_keys,
    parse_segment,
)
from loyalty_cdp.core.segments.conditions import counts_of, fields_of
from loyalty_cdp.core.segments.counts import EventWindows, served_by_profile
from loyalty_cdp.errors import Conflict, InvalidInput, NotFound

SCHEMA = """CREATE TABLE IF NOT EXISTS api_segments (
    segment_id TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
)"""
PREVIEW_SAMPLE = 20_000  # members evaluated by a preview; all of them below this
WRITE_CHUNK = 50_000  # transitions per transaction of a recomputation
DRAFT_ID = "draft"

Source = Literal["program", "api"]
_decode_profile = msgspec.msgpack.Decoder(Profile).decode


class SegmentInfo(msgspec.Struct, frozen=True):
    """A segment in force: its definition, where it was defined, and when (API segments)."""

    definition: SegmentDefinition
    source: Source
    created_at: int | None = None
    updated_at: int | None = None


class Recomputation(msgspec.Struct, frozen=True):
    """What a batch recomputation found and wrote: the members evaluated, the size, the transitions."""

    segment_id: str
    at: int
    evaluated: int
    size: int
    transitions: list[Transition]
    seconds: float

    @property
    def entered(self) -> int:
        return sum(1 for t in self.transitions if t.kind == "entered")

    @property
    def exited(self) -> int:
        return sum(1 for t in self.transitions if t.kind == "exited")


class Preview(msgspec.Struct, frozen=True):
    """A draft's estimated size and the counts whose history the profiles do not keep."""

    definition: SegmentDefinition
    estimate: SizeEstimate
    unkept_counts: list[str]


class _ApiSegment(msgspec.Struct, frozen=True):
    definition: SegmentDefinition
    raw: dict[str, Any]
    created_at: int
    updated_at: int


class SegmentRegistry:
    """The program's segments plus the API's; thread-safe (the processor and the HTTP API share it).

    ``program`` (the loyalty program book) lets definitions be checked against the real
    loyalty object and lets batch evaluation read the members' loyalty state; ``scores`` is
    read for conditions over ``scores.*``; ``consent_policy`` is the default consent regime,
    as the decisioning stage uses it, so that batch and real-time evaluation agree."""

    def __init__(self, book: DecisioningBook, store: DecisionStore, *, program: ProgramBook | None = None,
                 scores: ScoreStore | None = None, consent_policy: DefaultPolicy = STRICT_POLICY,
                 clock: Callable[[], int] | None = None) -> None:
        self.book = book
        self.store = store
        self._program = program
        self._scores = scores
        self._policy = consent_policy
        self._clock = clock or (lambda: int(time.time() * 1000))
        specimen = None
        if program is not None:
            latest = program.versions[-1]
            specimen = loyalty_summary(program, new_state("specimen"), latest.effective_from)
        self._catalog = FieldCatalog(specimen)
        self._program_ids = {d.id for config in book.configs for d in config.segments.definitions}
        self._lock = threading.Lock()
        self._recompute_lock = threading.Lock()  # one batch recomputation at a time
        self._version = 0
        # Per program version (events of one batch may fall in different versions), rebuilt when
        # the API's definitions change.
        self._cache: dict[int, tuple[DecisioningConfig, int, SegmentSet]] = {}
        with store.outbox.transaction() as conn:
            conn.execute(SCHEMA)
            rows = conn.execute("SELECT segment_id, definition, created_at, updated_at FROM api_segments "
                                "ORDER BY created_at, segment_id").fetchall()
        self._api: dict[str, _ApiSegment] = {}
        for segment_id, text, created_at, updated_at in rows:
            raw = msgspec.json.decode(text)
            self._api[segment_id] = _ApiSegment(parse_segment(raw, "body", self._catalog), raw, created_at,
                                                updated_at)

    # -- the segments in force -----------------------------------------------------------------

    def current(self, at: int) -> SegmentSet:
        """The segments in force at ``at``: the program version's, then the API's (cached)."""
        config = self.book.at(at)
        cached = self._cache.get(id(config))
        if cached is not None and cached[0] is config and cached[1] == self._version:
            return cached[2]
        with self._lock:
            program = config.segments.definitions
            taken = {d.id for d in program}
            api = [s.definition for s in self._api.values() if s.definition.id not in taken]
            segments = SegmentSet((*program, *api))
            self._cache[id(config)] = (config, self._version, segments)
        return segments

    def segments(self, at: int) -> list[SegmentInfo]:
        """Every segment in force at ``at`` with its source, program segments first."""
        with self._lock:
            api = dict(self._api)
        return [self._info(definition, api) for definition in self.current(at).definitions]

    def get(self, segment_id: str, at: int) -> SegmentInfo:
        definition = self.current(at).by_id.get(segment_id)
        if definition is None:
            raise NotFound(f"no segment {segment_id!r}")
        with self._lock:
            return self._info(definition, self._api)

    def _info(self, definition: SegmentDefinition, api: dict[str, _ApiSegment]) -> SegmentInfo:
        stored = api.get(definition.id)
        if stored is not None and stored.definition is definition:
            return SegmentInfo(definition, "api", stored.created_at, stored.updated_at)
        return SegmentInfo(definition, "program")

    # -- definitions through the API ------------------------------------------------------------

    def parse(self, raw: Any, field: str = "body") -> SegmentDefinition:
        """A definition as the API receives it, checked; errors name ``field``'s keys."""
        return parse_segment(raw, field, self._catalog)

    def define(self, raw: Any) -> tuple[SegmentInfo, bool]:
        """Store (or replace) an API segment; True when it is new. Recompute its members next."""
        definition = self.parse(raw)
        if definition.id in self._program_ids:
            error = Conflict(f"segment {definition.id!r} is defined in the program file; choose another id")
            error.details = {"field": "body.id"}
            raise error
        now = self._clock()
        with self._lock:
            previous = self._api.get(definition.id)
            created_at = previous.created_at if previous is not None else now
            with self.store.outbox.transaction() as conn:
                conn.execute("INSERT INTO api_segments VALUES (?,?,?,?) ON CONFLICT (segment_id) DO UPDATE SET "
                             "definition = excluded.definition, updated_at = excluded.updated_at",
                             (definition.id, msgspec.json.encode(raw).decode(), created_at, now))
            stored = _ApiSegment(definition, raw, created_at, now)
            self._api[definition.id] = stored
            self._version += 1
        return SegmentInfo(definition, "api", created_at, now), previous is None

    def delete(self, segment_id: str) -> list[Transition]:
        """Remove an API segment; its current members exit it (the transitions written are returned)."""
        if segment_id in self._program_ids:
            raise Conflict(f"segment {segment_id!r} is defined in the program file; it cannot be deleted here")
        now = self._clock()
        with self._lock:
            if segment_id not in self._api:
                raise NotFound(f"no segment {segment_id!r} defined through the API")
            with self.store.outbox.transaction() as conn:
                conn.execute("DELETE FROM api_segments WHERE segment_id = ?", (segment_id,))
            del self._api[segment_id]
            self._version += 1
        entries = self.store.segment_entries(segment_id)
        exits = [Transition(segment_id, member_id, entries.get(member_id, 1), "exited", now)
                 for member_id in sorted(self.store.segment_member_ids(segment_id))]
        self._write(exits)
        return exits

    # -- batch ------------------------------------------------------------------------------

    def facts(self, profile: Profile, at: int, reader: LoyaltyReader | None = None,
              scores: bool = True) -> MemberFacts:
        """One member at ``at`` as the decisioning stage sees them (windows, scores, loyalty, consent)."""
        state = profile.loyalty.get("state")
        member_scores = self._scores.get(profile.member_id) if scores and self._scores is not None else None
        windows = profile.windows
        return MemberFacts(profile, at, windows=EventWindows(windows) if windows else None, scores=member_scores,
                           consent_policy=self._policy,
                           loyalty=(lambda: reader(state, at)) if state is not None and reader is not None else None)

    def _table(self, definition: SegmentDefinition, profiles: Iterable[Profile], at: int,
               keep: Callable[[Profile], bool] | None = None,
               seen: Callable[[Profile], None] | None = None) -> MemberTable:
        condition = definition.condition
        reader = LoyaltyReader(self._program, loyalty_keys([condition])) if self._program is not None else None
        reads_scores = any(path.namespace == "scores" for path in fields_of(condition))

        def members() -> Iterator[MemberFacts]:
            for profile in profiles:
                if seen is not None:
                    seen(profile)
                if keep is None or keep(profile):
                    yield self.facts(profile, at, reader, reads_scores)

        return MemberTable.build(members(), [condition])

    def recompute(self, segment_id: str, profiles: Iterable[Profile], at: int) -> Recomputation:
        """Evaluate one segment in force over every member (``profiles``: all of them) at ``at``.

        The stored memberships move to the result: members now in and not stored as members
        enter (entry number one past the highest the store or their profile knows), stored
        members no longer in (or no longer among the profiles) exit. The transitions are
        written (``DecisionStore.write``) and returned."""
        with self._recompute_lock:
            return self._recompute(segment_id, profiles, at)

    def _recompute(self, segment_id: str, profiles: Iterable[Profile], at: int) -> Recomputation:
        started = time.perf_counter()
        definition = self.current(at).by_id.get(segment_id)
        if definition is None:
            raise NotFound(f"no segment {segment_id!r}")
        profile_entries: dict[str, int] = {}

        def seen(profile: Profile) -> None:
            state = profile.segments.get(segment_id)
            if isinstance(state, dict) and isinstance(state.get("entries"), int):
                profile_entries[profile.member_id] = state["entries"]

        table = self._table(definition, profiles, at, seen=seen)
        mask = table.evaluate(definition.condition)
        inside = self.store.segment_member_ids(segment_id)
        entries = self.store.segment_entries(segment_id)
        transitions: list[Transition] = []
        evaluated: set[str] = set()
        for member_id, is_in in zip(table.member_ids, mask.tolist(), strict=True):
            evaluated.add(member_id)
            was_in = member_id in inside
            if is_in and not was_in:
                entry = max(entries.get(member_id, 0), profile_entries.get(member_id, 0)) + 1
                transitions.append(Transition(segment_id, member_id, entry, "entered", at))
            elif was_in and not is_in:
                transitions.append(Transition(segment_id, member_id, entries.get(member_id, 1), "exited", at))
        for member_id in sorted(set(inside) - evaluated):  # merged away or erased since
            transitions.append(Transition(segment_id, member_id, entries.get(member_id, 1), "exited", at))
        self._write(transitions)
        return Recomputation(segment_id, at, len(table), int(mask.sum()), transitions,
                             time.perf_counter() - started)

    def _write(self, transitions: list[Transition]) -> None:
        now = self._clock()
        for start in range(0, len(transitions), WRITE_CHUNK):
            self.store.write(Batch(transitions=transitions[start:start + WRITE_CHUNK]), now)

    def preview(self, raw: Any, profiles: Iterable[Profile], population: int, at: int,
                sample: int = PREVIEW_SAMPLE) -> Preview:
        """A draft's size at ``at``, estimated over a stable sample of ``sample`` of the ``population``
        members (exact when there are no more than that). The draft's ``id`` may be left out."""
        if isinstance(raw, dict) and "id" not in raw:
            raw = {"id": DRAFT_ID, **raw}
        definition = self.parse(raw)
        if population <= 0:
            raise InvalidInput("population", "there are no members to preview the segment over yet")
        fraction = min(1.0, sample / population)

        def keep(profile: Profile) -> bool:
            return fraction >= 1.0 or in_sample(profile.member_id, fraction)

        table = self._table(definition, profiles, at, keep=keep)
        if len(table) == 0:
            raise InvalidInput("population", "the sample holds no member; there are too few members to preview")
        estimate = estimate_size(table.evaluate(definition.condition), max(population, len(table)))
        planned = self.current(at).plan.windows
        unkept = [f"count({spec.key}, {spec.days}d)" for spec in counts_of(definition.condition)
                  if not served_by_profile(spec) and (spec.key not in planned or planned[spec.key][1] < spec.days)]
        return Preview(definition, estimate, unkept)
