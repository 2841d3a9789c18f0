"""The loyalty stage of the processor: runs the program on each enrolled member's events.

The engine (:mod:`loyalty_cdp.core.loyalty`) is pure; this stage feeds it and keeps its
state inside the member's profile (``Profile.loyalty["state"]``, the encoded
:class:`LoyaltyState`), so balance and tier are in the hot profile with no round trip.

Who is enrolled: members with a ``user_id``. Anonymous visitors earn nothing until they
are known; once stitched, their earlier purchases are folded (the merge rebuilds the
member's loyalty state from their whole history).

Late events (older than what a state has seen) make the engine ask for a replay; the
stage then reads the member's history from the event log and rebuilds, so the ledger
stays what sorted replay gives. Emitted loyalty events (``Points Earned``,
``Tier Upgraded``, ...) have deterministic message ids; the processor appends them to
the log before it commits the state, so a crash in between re-emits the same ids and the
log keeps each once.

Time-based transitions (pending points becoming active, expiry, tier period ends) run
from :meth:`advance_due`, on the member's own schedule (``state.due``), up to wall time
minus :data:`LATENESS_MS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from loyalty_cdp.adapters.eventlog.base import StoredEvent
from loyalty_cdp.core.loyalty import LoyaltyEngine, LoyaltyInput, LoyaltyState, decode, encode, from_event
from loyalty_cdp.core.profile import Profile

STATE_KEY = "state"
LATENESS_MS = 60_000  # transitions wait this long for stragglers before they fire

# Each member's events in the log, for several members read together: a log may cost as much to
# search for one member as for many (the SQLite log scans its whole member index per read).
History = Callable[[Sequence[Profile]], list[list[StoredEvent]]]
REBUILDS_PER_READ = 64  # members whose histories one read brings in at most


class _LoyaltyPart(msgspec.Struct, gc=False):
    """The one field of an encoded profile that start-up reads (the others are skipped, not built)."""

    loyalty: dict[str, Any] = msgspec.field(default_factory=dict)


_decode_loyalty = msgspec.msgpack.Decoder(_LoyaltyPart).decode


def loyalty_state(profile: Profile) -> LoyaltyState | None:
    blob = profile.loyalty.get(STATE_KEY)
    return None if blob is None else decode(blob)


class LoyaltyStage:
    def __init__(self, engine: LoyaltyEngine, history: History) -> None:
        self.engine = engine
        self._history = history
        self.due: dict[str, int] = {}  # member id -> when its next transition is due

    def load(self, profiles: Iterable[tuple[str, bytes]]) -> None:
        """Learn when each member's next transition is due, from (member id, encoded profile)."""
        for member_id, blob in profiles:
            state = _decode_loyalty(blob).loyalty.get(STATE_KEY)
            if state is not None:
                self.due[member_id] = self.engine.next_due(decode(state))

    def apply(self, profile: Profile, events: Sequence[StoredEvent]) -> list[dict[str, Any]]:
        """Fold ``events`` into the member's loyalty state (in ``profile``); returns emitted calls."""
        if profile.user_id is None:
            return []
        inputs = self._relevant(events)
        if not inputs:
            return []
        state = loyalty_state(profile)
        if state is None:
            state = self.engine.new_state(profile.user_id)
        state, emitted = self.engine.apply_or_replay(state, inputs, lambda: self._relevant(self._history([profile])[0]))
        self._keep(profile, state)
        return emitted

    def rebuild(self, profiles: Sequence[Profile]) -> list[dict[str, Any]]:
        """The members' loyalty states from their whole histories (after identity merges), the
        histories read together; returns the emitted calls, member after member."""
        enrolled = [profile for profile in profiles if profile.user_id is not None]
        emitted: list[dict[str, Any]] = []
        for start in range(0, len(enrolled), REBUILDS_PER_READ):
            chunk = enrolled[start : start + REBUILDS_PER_READ]
            for profile, history in zip(chunk, self._history(chunk), strict=True):
                assert profile.user_id is not None
                previous = loyalty_state(profile)
                until = previous.clock if previous is not None and previous.clock >= 0 else None
                state, more = self.engine.replay(profile.user_id, self._relevant(history), until)
                self._keep(profile, state)
                emitted += more
        return emitted

    def members_due(self, now_ms: int) -> list[str]:
        cutoff = now_ms - LATENESS_MS
        return [member_id for member_id, due in self.due.items() if due <= cutoff]

    def advance(self, profile: Profile, now_ms: int) -> list[dict[str, Any]]:
        state = loyalty_state(profile)
        if state is None:
            return []
        emitted = self.engine.advance(state, now_ms - LATENESS_MS)
        self._keep(profile, state)
        return emitted

    def forget(self, member_id: str) -> None:
        self.due.pop(member_id, None)

    def _keep(self, profile: Profile, state: LoyaltyState) -> None:
        profile.loyalty = {**profile.loyalty, STATE_KEY: encode(state)}
        self.due[profile.member_id] = self.engine.next_due(state)

    def _relevant(self, events: Iterable[StoredEvent]) -> list[LoyaltyInput]:
        """The inputs the program reads among ``events``; the others are not decoded."""
        reads, relevant = self.engine.reads, self.engine.relevant
        found = (from_event(event) for event in events if reads(event.type, event.event))
        return [i for i in found if i is not None and relevant(i)]
