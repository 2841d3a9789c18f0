"""The decisioning stage of the processor: segment memberships, triggers and decisions, in real time.

After a batch is folded and the loyalty program has run, for each member the batch changed
(:meth:`DecisioningStage.member`), with the member's events that were new to the profile:

1. the event windows that segment counts need are brought up to date
   (``Profile.windows``);
2. every segment in force is evaluated and the memberships moved; entering and leaving
   emit ``Segment Entered`` / ``Segment Exited`` (deterministic message ids) and are
   recorded as transitions;
3. the triggers look at each new event (loyalty events, segment events, catalog events)
   and at the member's state (conditions, replenishment due);
4. each occurrence whose decision is not stored yet is decided
   (:func:`~loyalty_cdp.core.decisioning.decide`) at the occurrence's time, against the
   member's contact history; a ``send`` is rendered into outbound messages by ``deliver``
   and, when the offer grants something, an ``Offer Granted`` call is emitted for the
   loyalty engine to honour;
5. ``Offer Viewed`` / ``Offer Redeemed`` events carrying a ``decision_id`` are recorded as
   that decision's outcomes;
6. a member whose wishlist changed has the wishlist index updated.

Catalog events are not about the member who sent them: a ``Product Price Changed`` event
(:meth:`DecisioningStage.catalog`) is looked at for every member with the product on their
wishlist (the decision store's wishlist index), as the ``price_drop`` triggers ask.

Nothing here writes: the stage fills a :class:`~loyalty_cdp.adapters.decisionstore.Batch`
and a list of calls to emit, which the processor appends and stores before it commits
the batch's offset. A crash in between repeats the batch, and the decision ids (derived
from member, trigger and occurrence) make the store keep each decision, and send each
message, once.

:meth:`DecisioningStage.sweep` does steps 2 to 4 for members who did nothing: segments
and triggers that change with time alone (no purchase in 45 days, a lapse risk crossing, a
replenishment falling due) are looked at for every member, a slice at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from loyalty_cdp.adapters.decisionstore import Batch, DecisionStore, Transition
from loyalty_cdp.adapters.scorestore import ScoreStore
from loyalty_cdp.core.consent import STRICT_POLICY, DefaultPolicy
from loyalty_cdp.core.decisioning import (
    Decision,
    DecisioningBook,
    DecisioningConfig,
    Occurrence,
    Send,
    decide,
    decision_id,
    due,
    grant_event,
    history_of,
    on_event,
    price_changed_product,
)
from loyalty_cdp.core.decisioning.triggers import ConditionTrigger, ReplenishmentTrigger
from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.core.messages import OutboundMessage
from loyalty_cdp.core.profile import DAY_MS, MAX_KEY_CHARS, Profile
from loyalty_cdp.core.segments import LoyaltyReader, MemberFacts, SegmentSet
from loyalty_cdp.core.segments.counts import EventWindows
from loyalty_cdp.core.segments.membership import CHANNEL as SEGMENTS_CHANNEL
from loyalty_cdp.core.segments.membership import update_memberships
from loyalty_cdp.errors import NotFound

log = logging.getLogger(__name__)

Deliver = Callable[[Decision, Profile], list[OutboundMessage]]
Refresh = Callable[[str, Profile, int], list[dict[str, Any]]]

OFFER_OUTCOME_EVENTS = {"Offer Viewed": "shown", "Offer Redeemed": "redeemed"}
WISHLIST_EVENTS = frozenset({"Product Added to Wishlist", "Product Removed from Wishlist"})
HISTORY_DAYS = 31  # the contact policy's longest cap window is 30 days
DELIVER_WITHIN_MS = DAY_MS  # an occurrence seen this long after it happened is recorded, not sent


class DecisioningStage:
    """Segments, triggers and decisions for the members a batch changed (see the module docstring).

    ``segments(at)`` gives the segments in force (the program's and those defined through
    the API); by default the program's. ``deliver`` renders a ``send`` decision into
    messages (the activation service); without it decisions are stored and nothing is
    sent. ``refresh`` updates a member's predictions after a purchase and returns calls to
    emit (``Lapse Risk Detected``). ``staged()`` is called after a write that staged messages
    (the dispatcher then looks at the outbox at once). ``clock()`` is the current time in epoch ms."""

    def __init__(self, book: DecisioningBook, reader: LoyaltyReader, store: DecisionStore, clock: Callable[[], int],
                 *, scores: ScoreStore | None = None, segments: Callable[[int], SegmentSet] | None = None,
                 deliver: Deliver | None = None, refresh: Refresh | None = None,
                 staged: Callable[[], None] | None = None, consent_policy: DefaultPolicy = STRICT_POLICY) -> None:
        self._book = book
        self._reader = reader
        self.store = store
        self._clock = clock
        self._scores = scores
        self._segments = segments or (lambda at: book.at(at).segments)
        self.deliver = deliver
        self.refresh = refresh
        self._staged = staged
        self._policy = consent_policy
        self.decided = 0
        self.undelivered = 0

    def active(self, at: int) -> bool:
        """Whether anything is configured for the stage to do at ``at``."""
        config = self._book.at(at)
        return bool(config.triggers) or bool(len(self._segments(at)))

    def time_dependent(self, at: int) -> bool:
        """Whether some segment or trigger can change with time alone (the sweep has work)."""
        config = self._book.at(at)
        return self._segments(at).time_dependent or any(
            isinstance(rule.config, ConditionTrigger | ReplenishmentTrigger) for rule in config.triggers)

    def write(self, batch: Batch) -> None:
        """Store what a batch (or a sweep) decided: decisions, messages and transitions, in one transaction."""
        if not batch:
            return
        self.store.write(batch, self._clock())
        if batch.messages and self._staged is not None:
            self._staged()

    # -- per member ----------------------------------------------------------------------------

    def member(self, profile: Profile, new_events: Sequence[DecodedEvent], batch: Batch,
               emitted: list[dict[str, Any]], history: Callable[[], Sequence[DecodedEvent]] | None = None) -> Profile:
        """The member after the stage: windows and memberships moved; decisions and calls added.

        ``history``, when given, is the member's whole history (a rebuilt member): its
        windows are recomputed from it instead of updated with ``new_events``."""
        if not new_events and history is None:
            return profile
        # Memberships are evaluated as of the member's latest event, whatever order events arrive in:
        # a late event (an offline till, the loyalty events emitted after a purchase) or a Segment
        # Entered / Exited event (stamped with the time of the evaluation that made it) must not take
        # the evaluation back in time. It did, and flipped memberships for ever, each flip an event.
        at = max(max((e.timestamp for e in new_events if e.channel != SEGMENTS_CHANNEL), default=0), _latest(profile))
        segments = self._segments(at)
        if segments.plan:
            old = None if history is not None else EventWindows(profile.windows)
            windows = segments.plan.record(old, history() if history is not None else new_events)
            profile = msgspec.structs.replace(profile, windows=windows.times)
        for event in new_events:
            self._record_outcome(event)
        if history is not None or any(e.event in WISHLIST_EVENTS for e in new_events):
            batch.wishlists[profile.member_id] = [product for product, item in profile.activity.wishlist.items()
                                                  if item.on_list]
        if self.refresh is not None and any(e.event == "Order Completed" for e in new_events):
            emitted += self.refresh(profile.member_id, profile, max(at, self._clock()))
        profile = self._evaluate(profile, at, segments, new_events, batch, emitted)
        if history is not None:  # a merge: the profile's memberships may have come from another member id
            batch.memberships[profile.member_id] = {
                segment: state.get("since", at) for segment, state in profile.segments.items()
                if isinstance(state, dict) and state.get("member")}
        return profile

    def catalog(self, events: Sequence[DecodedEvent], profile_of: Callable[[str], Profile | None], batch: Batch,
                emitted: list[dict[str, Any]]) -> None:
        """Price changes: each is looked at for every member with the product on their wishlist."""
        for event in events:
            config = self._book.at(event.timestamp)
            product = price_changed_product(config.triggers, event)
            if product is None:
                continue
            listed = set(self.store.wishlisted_by(product[:MAX_KEY_CHARS]))
            listed |= {member for member, products in batch.wishlists.items() if product[:MAX_KEY_CHARS] in products}
            for member_id in sorted(listed):
                profile = profile_of(member_id)
                if profile is None:
                    continue
                facts = self._facts(profile, event.timestamp)
                occurrences = on_event(config.triggers, event, facts)
                if occurrences:
                    self._decide(config, occurrences, facts, batch, emitted)

    def sweep(self, profile: Profile, now: int, batch: Batch, emitted: list[dict[str, Any]]) -> Profile:
        """The member at ``now`` with no new event: time-dependent segments and triggers."""
        return self._evaluate(profile, now, self._segments(now), (), batch, emitted)

    def forget(self, member_ids: Sequence[str], batch: Batch) -> None:
        """Members that vanished in a merge: their memberships end (the survivor is re-evaluated)."""
        batch.removed_members.extend(member_ids)

    def _facts(self, profile: Profile, at: int) -> MemberFacts:
        state = profile.loyalty.get("state")
        scores = self._scores.get(profile.member_id) if self._scores is not None else None
        return MemberFacts(profile, at, windows=EventWindows(profile.windows) if profile.windows else None,
                           scores=scores, consent_policy=self._policy,
                           loyalty=(lambda: self._reader(state, at)) if state is not None else None)

    def _evaluate(self, profile: Profile, at: int, segments: SegmentSet, new_events: Sequence[DecodedEvent],
                  batch: Batch, emitted: list[dict[str, Any]]) -> Profile:
        facts = self._facts(profile, at)
        if len(segments) or profile.segments:
            update = update_memberships(segments, facts)
            if update.events:
                profile = msgspec.structs.replace(profile, segments=update.segments)
                emitted += update.events
                for segment_id in (*update.entered, *update.exited):
                    state = update.segments[segment_id]
                    batch.transitions.append(Transition(segment_id, profile.member_id, state["entries"],
                                                        "entered" if state["member"] else "exited", at))
                facts = facts.with_segments(profile)
        config = self._book.at(at)
        if not config.triggers:
            return profile
        occurrences: list[Occurrence] = []
        for event in new_events:
            occurrences += on_event(config.triggers, event, facts)
        occurrences += due(config.triggers, facts)
        if occurrences:
            self._decide(config, occurrences, facts, batch, emitted)
        return profile

    def _decide(self, config: DecisioningConfig, occurrences: list[Occurrence], facts: MemberFacts, batch: Batch,
                emitted: list[dict[str, Any]]) -> None:
        member_id = facts.member_id
        ids = [decision_id(member_id, "trigger", o.trigger_id, o.key) for o in occurrences]
        pending = {d.decision_id for d in batch.decisions}
        stored = self.store.stored(i for i in ids if i not in pending)
        fresh = [(o, i) for o, i in zip(occurrences, ids, strict=True) if i not in stored and i not in pending]
        if not fresh:
            return
        first = min(o.at for o, _ in fresh)
        history: list[Send] = self.store.contact_history(member_id, first - HISTORY_DAYS * DAY_MS)
        history += history_of([d for d in batch.decisions if d.member_id == member_id])
        now = self._clock()
        for occurrence, identifier in sorted(fresh, key=lambda pair: (pair[0].at, pair[1])):
            if identifier in pending:
                continue
            decision = decide(config, occurrence, facts, history, occurrence.at)
            pending.add(identifier)
            self.decided += 1
            if decision.action == "send":
                chosen = decision.chosen[0]
                history.append(Send(chosen.send_at, chosen.channel, chosen.offer_id))
                # Stale: the event that caused it happened long before it was processed (a bulk
                # import, a replay). A time-based occurrence (a reminder the sweep finds a few days
                # after its due time) is as fresh as the look that found it.
                seen = occurrence.at if occurrence.event is not None else max(occurrence.at, facts.as_of)
                if now - seen > DELIVER_WITHIN_MS:
                    self.undelivered += 1
                    decision.reason += (f" Not delivered, nothing granted: the occurrence was "
                                        f"{(now - seen) / 3_600_000:.0f} h old when it was decided "
                                        f"(more than {DELIVER_WITHIN_MS // 3_600_000} h).")
                    batch.decisions.append(decision)
                    continue
                if chosen.grant is not None and facts.profile.user_id is not None:  # only members have an account
                    emitted.append(grant_event(member_id, facts.profile.user_id, chosen.grant, occurrence.at))
                if self.deliver is not None:
                    batch.messages += self.deliver(decision, facts.profile)
            batch.decisions.append(decision)

    def _record_outcome(self, event: DecodedEvent) -> None:
        outcome = OFFER_OUTCOME_EVENTS.get(event.event or "")
        decision = event.properties.get("decision_id") if outcome else None
        if outcome is None or not isinstance(decision, str):
            return
        try:
            self.store.record_outcome(decision, outcome, event.timestamp, "event")
        except NotFound:
            log.info("%s for unknown decision %r ignored", event.event, decision)


def _latest(profile: Profile) -> int:
    return profile.activity.last_seen or 0
