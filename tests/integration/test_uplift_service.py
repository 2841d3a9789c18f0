"""Uplift measured end to end over a real decision store and a real event log, on simulated traffic with a
planted treatment effect: exact attribution against the ground truth, an interval covering the true effect,
a zero effect reported not significant, and the ``loyalty-cdp report uplift`` command."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loyalty_cdp.adapters.decisionstore import Batch, DecisionStore
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.outbox import OUTBOX_FILE, Outbox
from loyalty_cdp.core.decisioning import Chosen, Decision, assign_arm, decision_id, period_label
from loyalty_cdp.core.events import Event, format_time, normalise
from loyalty_cdp.core.profile import DAY_MS
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.services.uplift import UpliftService
from loyalty_cdp.testing import run_cli

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z, long before any test run: every window has ended
NOW = T0 + 400 * DAY_MS
WINDOW_DAYS = 14
SHARE = 0.5


@dataclass
class Traffic:
    """What was planted: per campaign, the members converted within the window of their first exposure."""

    converted: dict[str, set[str]] = field(default_factory=dict)
    treated: dict[str, set[str]] = field(default_factory=dict)
    control: dict[str, set[str]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    revenue: dict[str, float] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def order_call(user: str | None, anonymous: str | None, message_id: str, order_id: str, at: int,
               total: float) -> Event:
    call = {"type": "track", "event": "Order Completed", "messageId": message_id, "timestamp": format_time(at),
            "context": {"channel": "web"},
            "properties": {"order_id": order_id, "total": total, "currency": "USD",
                           "products": [{"product_id": "p1", "category": "Coffee", "price": total, "quantity": 1}]}}
    if user is not None:
        call["userId"] = user
    if anonymous is not None:
        call["anonymousId"] = anonymous
    return normalise(call, call_type="track", received_at=at, default_message_id=message_id)


def a_decision(member: str, user: str, campaign: str, trigger: str, at: int, arm: str, action: str) -> Decision:
    key = f"episode:{at}"
    chosen = [] if action == "none" else [Chosen(offer_id="win-back", name="Win back", channel="email", score=1.0,
                                                 send_at=at, content={}, reason="test")]
    return Decision(decision_id=decision_id(member, "trigger", trigger, key), member_id=member, user_id=user,
                    at=at, action=action, reason="simulated", automated=True, trigger_id=trigger,
                    occurrence_key=key, occurred_at=at, campaign=campaign, arm=arm,
                    holdout_period=period_label("quarter", at), chosen=chosen)


def simulate(traffic: Traffic, campaign: str, triggers: list[str], members: int, control_rate: float,
             treated_rate: float, seed: int, *, anonymous_share: float = 0.0, user_ids: bool = True) -> None:
    """Exposures in the first month of 2025 and orders around them; the treatment effect is planted."""
    rng = random.Random(seed)
    traffic.converted[campaign], traffic.treated[campaign], traffic.control[campaign] = set(), set(), set()
    traffic.sent[campaign] = traffic.held[campaign] = 0
    traffic.revenue[campaign] = 0.0
    for index in range(members):
        member, user, anonymous = f"m-{campaign}-{index}", f"u-{campaign}-{index}", f"a-{campaign}-{index}"
        at = T0 + rng.randrange(0, 30 * DAY_MS)
        period = period_label("quarter", at)
        arm = assign_arm(member, campaign, period, SHARE)
        if rng.random() < 0.05:  # nothing eligible: recorded as "none", in neither group
            traffic.decisions.append(a_decision(member, user, campaign, triggers[0], at, arm, "none"))
            continue
        action = "send" if arm == "treatment" else "hold_out"
        trigger = triggers[index % len(triggers)]
        traffic.decisions.append(a_decision(member, user if user_ids else None, campaign, trigger, at, arm, action))
        (traffic.treated if arm == "treatment" else traffic.control)[campaign].add(member)
        count = "sent" if arm == "treatment" else "held"
        getattr(traffic, count)[campaign] += 1
        if rng.random() < 0.1:  # a second exposure later in the period: the first one counts
            later = at + 2 * DAY_MS
            traffic.decisions.append(a_decision(member, user, campaign, trigger, later, arm, action))
            getattr(traffic, count)[campaign] += 1
        # orders outside the window never count: one before the exposure, one after the window
        traffic.events.append(order_call(user, None, f"before-{member}", f"ob-{member}", at - DAY_MS, 30.0))
        traffic.events.append(order_call(user, None, f"after-{member}", f"oa-{member}", at + (WINDOW_DAYS + 1) * DAY_MS,
                                         30.0))
        if rng.random() < (treated_rate if arm == "treatment" else control_rate):
            traffic.converted[campaign].add(member)
            inside = at + rng.randrange(60_000, WINDOW_DAYS * DAY_MS)
            total = round(rng.uniform(20, 80), 2)
            by_anonymous = rng.random() < anonymous_share
            who = (None, anonymous) if by_anonymous else (user, None)
            traffic.events.append(order_call(*who, f"in-{member}", f"oi-{member}", inside, total))
            # the same order again under another message id (a client retry): counted once
            traffic.events.append(order_call(*who, f"retry-{member}", f"oi-{member}", inside + 1000, total))
            traffic.revenue[campaign] += total


def identities_of(member_id: str) -> dict[str, list[str]]:
    suffix = member_id.removeprefix("m-")
    return {"user_id": [f"u-{suffix}"], "anonymous_id": [f"a-{suffix}"]}


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[tuple[Path, DecisionStore, SqliteEventLog, Traffic]]:
    traffic = Traffic()
    simulate(traffic, "winback", ["win-back-email", "win-back-push"], 6000, 0.10, 0.14, seed=7, anonymous_share=0.2)
    simulate(traffic, "placebo", ["placebo"], 4000, 0.12, 0.12, seed=11)
    log = SqliteEventLog(tmp_path / "events.db")
    outbox = Outbox(tmp_path / OUTBOX_FILE)
    store = DecisionStore(outbox)
    for start in range(0, len(traffic.events), 5000):
        log.append(traffic.events[start:start + 5000])
    store.write(Batch(decisions=traffic.decisions), NOW)
    try:
        yield tmp_path, store, log, traffic
    finally:
        store.close()
        outbox.close()
        log.close()


def test_a_planted_effect_is_attributed_exactly_and_its_interval_covers_it(world) -> None:
    _, store, log, traffic = world
    summary = UpliftService(store, log, identities_of).report(now=NOW, window_days=WINDOW_DAYS)
    by_campaign = {c.campaign: c for c in summary.campaigns}
    assert sorted(by_campaign) == ["placebo", "winback"]
    win = by_campaign["winback"]
    assert win.trigger_ids == ["win-back-email", "win-back-push"] and win.pending == 0
    converted, treated, control = traffic.converted["winback"], traffic.treated["winback"], traffic.control["winback"]
    assert win.treated.decisions == traffic.sent["winback"] and win.control.decisions == traffic.held["winback"]
    assert (win.treated.members, win.control.members) == (len(treated), len(control))
    assert win.treated.converted == len(converted & treated) and win.control.converted == len(converted & control)
    assert win.treated.revenue + win.control.revenue == pytest.approx(traffic.revenue["winback"], abs=0.05)
    assert abs(len(control) / (len(treated) + len(control)) - SHARE) < 0.03
    rate = win.uplift.conversion_rate
    assert rate.low <= 0.04 <= rate.high and rate.significant and rate.low > 0
    assert rate.treated == pytest.approx(len(converted & treated) / len(treated))
    assert win.uplift.active_member_rate.difference == pytest.approx(rate.difference)  # min 1 order, same window
    assert "significant" in win.note

    placebo = by_campaign["placebo"].uplift
    assert not placebo.conversion_rate.significant and placebo.conversion_rate.low <= 0 <= placebo.conversion_rate.high
    assert not placebo.revenue_per_member.significant


def test_orders_found_only_through_identities_and_the_options(world) -> None:
    _, store, log, traffic = world
    service = UpliftService(store, log, identities_of)
    without = UpliftService(store, log).report(now=NOW, window_days=WINDOW_DAYS, campaign="winback").campaigns[0]
    with_ids = service.report(now=NOW, window_days=WINDOW_DAYS, campaign="winback").campaigns[0]
    # a fifth of the converting orders carry only the anonymous id: found through the member's identities
    assert without.treated.converted + without.control.converted < with_ids.treated.converted + \
        with_ids.control.converted
    per_trigger = service.report(now=NOW, window_days=WINDOW_DAYS, campaign="winback", group_by="trigger")
    assert [c.trigger_ids for c in per_trigger.campaigns] == [["win-back-email"], ["win-back-push"]]
    assert sum(c.treated.members for c in per_trigger.campaigns) >= with_ids.treated.members
    only = service.report(now=NOW, window_days=WINDOW_DAYS, trigger_id="win-back-push")
    assert [c.trigger_ids for c in only.campaigns] == [["win-back-push"]]
    # windows still open are pending, not "not converted"
    early = service.report(now=T0 + 20 * DAY_MS, window_days=WINDOW_DAYS, campaign="winback").campaigns[0]
    assert early.pending > 0 and early.treated.members + early.control.members + early.pending == \
        len(traffic.treated["winback"]) + len(traffic.control["winback"])
    # active = two orders in the activity window: within 30 days that is the converted members (their order in
    # the window and the one a day after it), within 14 days nobody (one order at most)
    month = service.report(now=NOW, window_days=WINDOW_DAYS, active_days=30, min_orders=2, campaign="winback")
    assert month.campaigns[0].treated.active == with_ids.treated.converted > 0
    assert month.campaigns[0].control.active == with_ids.control.converted > 0
    fortnight = service.report(now=NOW, window_days=WINDOW_DAYS, min_orders=2, campaign="winback")
    assert fortnight.campaigns[0].treated.active == fortnight.campaigns[0].control.active == 0
    assert service.report(now=NOW, campaign="nobody").campaigns == []
    for bad in ({"window_days": 0}, {"active_days": 9999}, {"min_orders": 0}, {"confidence": 1.0}):
        with pytest.raises(InvalidInput) as error:
            service.report(now=NOW, **bad)
        assert error.value.field == next(iter(bad))


def test_a_campaign_without_holdout_says_so(tmp_path: Path) -> None:
    traffic = Traffic()
    rng = random.Random(3)
    for index in range(10):
        member = f"m-solo-{index}"
        at = T0 + rng.randrange(0, DAY_MS)
        traffic.decisions.append(a_decision(member, f"u-solo-{index}", "solo", "solo", at, "treatment", "send"))
    outbox = Outbox(tmp_path / OUTBOX_FILE)
    store = DecisionStore(outbox)
    log = SqliteEventLog(tmp_path / "events.db")
    try:
        store.write(Batch(decisions=traffic.decisions), NOW)
        [solo] = UpliftService(store, log).report(now=NOW).campaigns
        assert solo.uplift is None and solo.treated.decisions == 10 and "No control group" in solo.note
    finally:
        store.close()
        outbox.close()
        log.close()


def test_the_report_command_prints_the_uplift_as_json(world) -> None:
    data_dir, store, log, _ = world
    result = run_cli("report", "uplift", "--data-dir", str(data_dir), "--campaign", "winback",
                     "--window-days", str(WINDOW_DAYS))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = UpliftService(store, log).report(now=NOW, window_days=WINDOW_DAYS, campaign="winback").campaigns[0]
    [row] = printed["campaigns"]
    assert row["campaign"] == "winback" and row["treated"]["converted"] == expected.treated.converted
    assert row["uplift"]["conversion_rate"]["significant"] is True
    assert printed["window_days"] == WINDOW_DAYS and printed["group_by"] == "campaign"
    bad = run_cli("report", "uplift", "--data-dir", str(data_dir), "--window-days", "0")
    assert bad.returncode == 2 and "window_days" in bad.stderr
    by = run_cli("report", "uplift", "--data-dir", str(data_dir), "--by", "member")
    assert by.returncode == 2 and "--by" in by.stderr
    empty = run_cli("report", "uplift", "--data-dir", str(data_dir / "nothing"))
    assert empty.returncode == 2 and "--data-dir" in empty.stderr
