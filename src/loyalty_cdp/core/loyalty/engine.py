"""The loyalty fold: (member state, events) -> updated state + emitted loyalty events.

Determinism. A member's state is a function of their relevant events sorted by
(timestamp, message id), with duplicates (same message id) counted once, plus the
time-based transitions up to the instant the state has been evaluated to
(``state.clock``). :meth:`LoyaltyEngine.apply` folds new events incrementally; when an
event is older than what the state has already seen (a late event, e.g. an offline POS
syncing days later), it changes nothing and answers ``replay_needed``: the caller then
rebuilds with :meth:`LoyaltyEngine.replay` over the member's full history (or uses
:meth:`LoyaltyEngine.apply_or_replay`, which does both). Emitted events carry
deterministic message ids, so emitting them again on a replay is deduplicated by the
event log.

Purity. No I/O, no clock: time is the events' time, or the ``to`` given to ``advance``.
``apply`` and ``advance`` update the state they are given in place (for speed); take a
``snapshot`` first to keep the previous one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from loyalty_cdp.core.loyalty import tiers
from loyalty_cdp.core.loyalty.book import ProgramBook
from loyalty_cdp.core.loyalty.budgets import CampaignBudgets
from loyalty_cdp.core.loyalty.context import FoldContext
from loyalty_cdp.core.loyalty.handlers import HANDLERS, bonus_event
from loyalty_cdp.core.loyalty.inputs import IDENTIFY, LoyaltyInput, RedemptionRequest
from loyalty_cdp.core.loyalty.periods import add_months
from loyalty_cdp.core.loyalty.rewards import RedemptionDecision, decide
from loyalty_cdp.core.loyalty.schedule import member_due, run_due
from loyalty_cdp.core.loyalty.state import LoyaltyState, new_state


class Folded(msgspec.Struct, frozen=True):
    """What a fold call produced; with ``replay_needed`` the state was left untouched."""

    emitted: list[dict[str, Any]]
    replay_needed: bool = False


def _order(event: LoyaltyInput) -> tuple[int, str]:
    return (event.timestamp, event.message_id)


class LoyaltyEngine:
    """Runs one program (all its versions) over member states.

    ``budgets`` is the campaign-budget book shared by all members (see
    :mod:`~loyalty_cdp.core.loyalty.budgets`); without it campaign-wide caps are not
    enforced (per-member caps always are).
    """

    def __init__(self, book: ProgramBook, budgets: CampaignBudgets | None = None) -> None:
        self.book = book
        self.budgets = budgets

    def new_state(self, member_id: str) -> LoyaltyState:
        return new_state(member_id)

    def reads(self, kind: str, name: str | None) -> bool:
        """Whether a call of this type and event name may be :meth:`relevant`, known before its body
        is decoded (a log keeps both beside the body): most calls are not, and are never decoded."""
        return (IDENTIFY if kind == IDENTIFY else name if kind == "track" else None) in self.book.relevant_events

    def relevant(self, event: LoyaltyInput) -> bool:
        """Whether ``event`` can change loyalty state (others are skipped, even when late)."""
        if event.name not in self.book.relevant_events:
            return False
        return event.name != IDENTIFY or "birthday" in event.properties

    def apply(self, state: LoyaltyState, events: Sequence[LoyaltyInput]) -> Folded:
        """Fold ``events`` (any order, duplicates allowed) into ``state``."""
        if len(events) == 1:
            batch = list(events) if self.relevant(events[0]) else []
        else:
            batch = sorted((event for event in events if self.relevant(event)), key=_order)
        if not batch:
            return Folded([])
        last = (state.last_timestamp, state.last_message_id)
        for event in batch:
            if event.timestamp < state.clock or (_order(event) < last):
                return Folded([], replay_needed=True)
        fold = FoldContext(self.book, state, self.budgets)
        folded: set[str] = set()
        for event in batch:
            if event.message_id in folded or _order(event) == last:
                continue
            folded.add(event.message_id)
            self._fold_one(fold, event)
        return Folded(fold.emitted)

    def _fold_one(self, fold: FoldContext, event: LoyaltyInput) -> None:
        state = fold.state
        at = event.timestamp
        if state.enrolled_at < 0:
            state.enrolled_at = at
            state.next_anniversary_at = add_months(at, 12)
            tiers.enrol(self.book.at(at).tiers, state, at)
            state.due = member_due(state)
        run_due(fold, at)
        state.clock = at
        version = self.book.at(at)
        handler = HANDLERS.get(event.name)
        if handler is not None:
            handler(fold, version, event)
        if event.name in version.bonuses.by_event:
            bonus_event(fold, version, event)
        state.last_timestamp = at
        state.last_message_id = event.message_id
        state.due = min(state.due, member_due(state))

    def advance(self, state: LoyaltyState, to: int) -> list[dict[str, Any]]:
        """Run the transitions due up to event time ``to`` (the scheduler's entry point).

        Events stamped before ``to`` that arrive afterwards will need a replay, so a
        scheduler should advance only to "now minus the lateness it tolerates".
        """
        if to <= state.clock:
            return []
        fold = FoldContext(self.book, state, self.budgets)
        if state.enrolled_at >= 0:
            run_due(fold, to)
            state.clock = to
        return fold.emitted

    def next_due(self, state: LoyaltyState) -> int:
        """When ``advance`` next has something to do (``periods.NEVER`` when nothing)."""
        return state.due

    def replay(
        self, member_id: str, events: Iterable[LoyaltyInput], until: int | None = None
    ) -> tuple[LoyaltyState, list[dict[str, Any]]]:
        """The state and emitted events of a member rebuilt from their whole history."""
        state = new_state(member_id)
        unique: dict[str, LoyaltyInput] = {}
        for event in sorted(events, key=_order):
            unique.setdefault(event.message_id, event)
        folded = self.apply(state, list(unique.values()))
        emitted = folded.emitted
        if until is not None:
            emitted += self.advance(state, until)
        return state, emitted

    def apply_or_replay(
        self,
        state: LoyaltyState,
        events: Sequence[LoyaltyInput],
        history: Callable[[], Iterable[LoyaltyInput]],
    ) -> tuple[LoyaltyState, list[dict[str, Any]]]:
        """``apply``, or, for late events, a replay of ``history()`` (which must include
        ``events``) evaluated up to where ``state`` had got to."""
        folded = self.apply(state, events)
        if not folded.replay_needed:
            return state, folded.emitted
        until = max(state.clock, max(event.timestamp for event in events))
        return self.replay(state.member_id, history(), until)

    def decide_redemption(
        self, state: LoyaltyState, request: RedemptionRequest, at: int
    ) -> RedemptionDecision:
        """The redemption API's answer at ``at`` (authoritative once the command is folded)."""
        version = self.book.at(at)
        return decide(
            version.rewards,
            point_value=version.program.point_value,
            currency=version.program.currency,
            state=state,
            request=request,
            at=at,
        )
