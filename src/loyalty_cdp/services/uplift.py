"""Uplift reports: per campaign (or trigger), treated against holdout, from the stored decisions and the event log.

For each campaign the stored trigger decisions are read (:class:`DecisionStore`); a decision
is an **exposure** when it sent something (arm ``treatment``, action ``send``) or held the
member out of a send (arm ``holdout``, action ``hold_out``: the same arbitration found
something to send). Decisions where nothing was eligible (``none``) are left out of both
groups alike. The unit of analysis is a member within a holdout period (the control group
is drawn per member, campaign and period): their first exposure of the period, at the
instant the message went (or would have gone) out, ``chosen[0].send_at``.

The members' ``Order Completed`` events are read from the event log by their identifiers
(one query per chunk of members, not a scan of the log), an order counted once per member
and ``order_id``, its revenue ``total``, else ``revenue``, else the sum of its lines.
:func:`~loyalty_cdp.core.decisioning.attribute` then counts each exposure's orders in the
attribution window ``(at, at + window]`` and in the activity window, and
:func:`~loyalty_cdp.core.decisioning.measure_uplift` compares the groups (conversion rate,
revenue per member, active member rate; intervals and the ``significant`` flag).

Exposures whose attribution window has not ended yet are not measured (they would read as
"not converted" and bias both groups towards zero); they are counted as ``pending``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import msgspec
import numpy as np

from loyalty_cdp.adapters.decisionstore import DecisionStore
from loyalty_cdp.adapters.eventlog.base import EventLog
from loyalty_cdp.core.decisioning import Decision, GroupOutcomes, UpliftReport, attribute, measure_uplift
from loyalty_cdp.core.identifiers import ANONYMOUS_ID, USER_ID
from loyalty_cdp.core.predictions.history import order_value
from loyalty_cdp.core.profile import DAY_MS
from loyalty_cdp.errors import InvalidInput

ORDER_COMPLETED = "Order Completed"
READ_CHUNK = 500  # members per event-log query
PAGE = 10_000  # decisions per store query
MAX_WINDOW_DAYS = 365

Identities = Callable[[str], dict[str, list[str]] | None]
GroupBy = Literal["campaign", "trigger"]


class _Body(msgspec.Struct):
    properties: dict[str, Any] = msgspec.field(default_factory=dict)


_decode_body = msgspec.json.Decoder(_Body).decode


class ArmSummary(msgspec.Struct, frozen=True):
    """One arm: its decisions, the members measured, and what they did in the windows."""

    decisions: int
    members: int
    converted: int
    active: int
    revenue: float


class CampaignUplift(msgspec.Struct, frozen=True):
    """The uplift of one campaign (or one trigger of it); ``uplift`` is None when it cannot be measured."""

    campaign: str
    trigger_ids: list[str]
    treated: ArmSummary
    control: ArmSummary
    pending: int
    uplift: UpliftReport | None
    note: str


class UpliftSummary(msgspec.Struct, frozen=True):
    as_of: int
    window_days: int
    active_days: int
    min_orders: int
    confidence: float
    group_by: str
    campaigns: list[CampaignUplift]


class _Exposure(msgspec.Struct, frozen=True):
    member_id: str
    at: int
    treated: bool


def check_parameters(window_days: int, active_days: int | None, min_orders: int, confidence: float) -> int:
    """The activity window (default: the attribution window); InvalidInput naming a bad parameter."""
    if not 1 <= window_days <= MAX_WINDOW_DAYS:
        raise InvalidInput("window_days", f"must be between 1 and {MAX_WINDOW_DAYS}")
    active = window_days if active_days is None else active_days
    if not 1 <= active <= MAX_WINDOW_DAYS:
        raise InvalidInput("active_days", f"must be between 1 and {MAX_WINDOW_DAYS}")
    if not 1 <= min_orders <= 1000:
        raise InvalidInput("min_orders", "must be between 1 and 1000")
    if not 0.5 <= confidence < 1:
        raise InvalidInput("confidence", "must be at least 0.5 and below 1")
    return active


class UpliftService:
    """Uplift of the campaigns whose decisions ``decisions`` holds, with orders from ``event_log``.

    ``identities(member_id)`` gives a member's identifiers (``{"user_id": [...],
    "anonymous_id": [...]}``, as the profile keeps them) to find their orders; without it,
    or when it knows nothing of a member, the decision's ``user_id`` is used."""

    def __init__(self, decisions: DecisionStore, event_log: EventLog, identities: Identities | None = None) -> None:
        self._decisions = decisions
        self._log = event_log
        self._identities = identities

    def report(self, *, now: int, campaign: str | None = None, trigger_id: str | None = None, window_days: int = 14,
               active_days: int | None = None, min_orders: int = 1, confidence: float = 0.95, since: int = 0,
               until: int | None = None, group_by: GroupBy = "campaign") -> UpliftSummary:
        """The uplift of every campaign (or the one asked for) from decisions taken in ``[since, until)``."""
        active = check_parameters(window_days, active_days, min_orders, confidence)
        if group_by not in ("campaign", "trigger"):
            raise InvalidInput("group_by", "must be campaign or trigger")
        pairs = [(c, t) for c, t, _ in self._decisions.campaigns()
                 if (campaign is None or c == campaign) and (trigger_id is None or t == trigger_id)]
        groups: dict[tuple[str, str | None], list[str]] = {}
        for c, t in pairs:
            groups.setdefault((c, t if group_by == "trigger" else None), []).append(t)
        results = [self._campaign(c, t, triggers, now=now, window_ms=window_days * DAY_MS, active_ms=active * DAY_MS,
                                  min_orders=min_orders, confidence=confidence, since=since, until=until,
                                  only_trigger=trigger_id)
                   for (c, t), triggers in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] or ""))]
        return UpliftSummary(now, window_days, active, min_orders, confidence, group_by, results)

    def _decisions_of(self, campaign: str, trigger_id: str | None, since: int, until: int | None) -> Iterable[Decision]:
        after: str | None = None
        while page := self._decisions.decisions(campaign=campaign, trigger_id=trigger_id, since=since, until=until,
                                                after=after, limit=PAGE):
            yield from page
            after = page[-1].decision_id

    def _campaign(self, campaign: str, trigger: str | None, triggers: list[str], *, now: int, window_ms: int,
                  active_ms: int, min_orders: int, confidence: float, since: int, until: int | None,
                  only_trigger: str | None) -> CampaignUplift:
        first: dict[tuple[str, str], _Exposure] = {}
        sent = held = 0
        user_ids: dict[str, str] = {}
        for decision in self._decisions_of(campaign, trigger or only_trigger, since, until):
            if decision.action == "send" and decision.arm in ("treatment", None):
                sent += 1
            elif decision.action == "hold_out" and decision.arm == "holdout":
                held += 1
            else:
                continue
            at = decision.chosen[0].send_at if decision.chosen else decision.at
            key = (decision.member_id, decision.holdout_period or "")
            known = first.get(key)
            if known is None or at < known.at:
                first[key] = _Exposure(decision.member_id, at, decision.action == "send")
            if decision.user_id:
                user_ids.setdefault(decision.member_id, decision.user_id)
        horizon = max(window_ms, active_ms)
        exposures = [e for e in first.values() if e.at + horizon <= now]
        pending = len(first) - len(exposures)
        codes = {member_id: code for code, member_id in enumerate(sorted({e.member_id for e in exposures}))}
        order_members, order_at, order_revenue = self._orders(codes, user_ids)
        members = np.array([codes[e.member_id] for e in exposures], dtype=np.int64)
        times = np.array([e.at for e in exposures], dtype=np.int64)
        treated = np.array([e.treated for e in exposures], dtype=np.bool_)
        counts, revenue = attribute(members, times, order_members, order_at, order_revenue, window_ms)
        active_counts, _ = attribute(members, times, order_members, order_at, order_revenue, active_ms)
        converted, active = counts > 0, active_counts >= min_orders
        arms = [ArmSummary(decisions, int(mask.sum()), int(converted[mask].sum()), int(active[mask].sum()),
                           round(float(revenue[mask].sum()), 2))
                for decisions, mask in ((sent, treated), (held, ~treated))]
        uplift: UpliftReport | None = None
        if arms[0].members >= 2 and arms[1].members >= 2:
            uplift = measure_uplift(GroupOutcomes(converted[treated], revenue[treated], active[treated]),
                                    GroupOutcomes(converted[~treated], revenue[~treated], active[~treated]),
                                    confidence)
            note = _note(uplift)
        elif held == 0 and arms[1].members == 0:
            note = "No control group: the campaign has no holdout (holdout.share is 0) or nobody was held out yet."
        else:
            note = "Too few members with a finished attribution window to measure (at least two per group)."
        return CampaignUplift(campaign, sorted(set(triggers)), arms[0], arms[1], pending, uplift, note)

    def _orders(self, codes: dict[str, int], user_ids: dict[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every order of the members (codes), deduplicated by order id: member codes, times, revenue."""
        owner: dict[tuple[str, str], int] = {}
        for member_id, member_code in codes.items():
            identities = (self._identities(member_id) if self._identities is not None else None) or {}
            known_users = list(identities.get(USER_ID, []))
            if not known_users and user_ids.get(member_id):
                known_users = [user_ids[member_id]]
            for value in known_users:
                owner[(USER_ID, value)] = member_code
            for value in identities.get(ANONYMOUS_ID, []):
                owner[(ANONYMOUS_ID, value)] = member_code
        order_members: list[int] = []
        order_at: list[int] = []
        order_revenue: list[float] = []
        seen: set[tuple[int, str]] = set()
        keys = list(owner)
        for start in range(0, len(keys), READ_CHUNK):
            chunk = keys[start:start + READ_CHUNK]
            users = [value for kind, value in chunk if kind == USER_ID]
            anonymous = [value for kind, value in chunk if kind == ANONYMOUS_ID]
            for stored in self._log.read_member(users, anonymous):
                if stored.type != "track" or stored.event != ORDER_COMPLETED:
                    continue
                code: int | None = None
                if stored.user_id is not None:
                    code = owner.get((USER_ID, stored.user_id))
                if code is None and stored.anonymous_id is not None:
                    code = owner.get((ANONYMOUS_ID, stored.anonymous_id))
                if code is None:
                    continue
                properties = _decode_body(stored.body).properties
                order_id = properties.get("order_id")
                if isinstance(order_id, str | int) and not isinstance(order_id, bool):
                    if (code, str(order_id)) in seen:
                        continue
                    seen.add((code, str(order_id)))
                order_members.append(code)
                order_at.append(stored.timestamp)
                order_revenue.append(order_value(properties))
        return (np.array(order_members, dtype=np.int64), np.array(order_at, dtype=np.int64),
                np.array(order_revenue, dtype=np.float64))


def _note(report: UpliftReport) -> str:
    rate = report.conversion_rate
    verdict = "significant" if rate.significant else "not significant (the interval covers zero)"
    return (f"Conversion {rate.treated:.1%} treated vs {rate.control:.1%} control: "
            f"{rate.difference * 100:+.2f} points [{rate.low * 100:+.2f}, {rate.high * 100:+.2f}] "
            f"at {report.confidence:.0%}, {verdict}.")
