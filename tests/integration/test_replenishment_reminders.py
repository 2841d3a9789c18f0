"""Replenishment reminders through the whole pipeline, against the simulator's ground truth.

A simulated program is folded by the processor with the decisioning stage; the scoring job
runs as of day 180 (it reads only the orders up to then); the stage then looks at every
member once a day for 30 days, as the server's sweep does. The example program's
``replenishment-reminder`` trigger asks for the reminder 2 days before the predicted
purchase. For the regular rebuyers the simulator planted, the reminder must land within
+-2 days of that lead before the member's true next purchase, and each (member, product,
last purchase) is reminded once.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from datetime import date
from pathlib import Path

from loyalty_cdp.adapters.decisionstore import Batch, DecisionStore
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.outbox import Outbox
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.adapters.scorestore import ScoreStore
from loyalty_cdp.bootstrap import open_program
from loyalty_cdp.core.consent import PROFILING, STRICT_POLICY
from loyalty_cdp.core.events import normalise, parse_time
from loyalty_cdp.core.loyalty import LoyaltyEngine
from loyalty_cdp.core.profile import DAY_MS
from loyalty_cdp.core.segments import LoyaltyReader
from loyalty_cdp.core.segments.facts import allowed_consents
from loyalty_cdp.services.decisioning_stage import DecisioningStage
from loyalty_cdp.services.processor import Processor
from loyalty_cdp.services.scoring import run_scoring, scoring_config_for
from loyalty_cdp.settings import Settings
from loyalty_cdp.simulator.generator import Simulation

START = date(2026, 1, 1)
SCORED_ON_DAY = 180
LEAD_DAYS = 2
TOLERANCE_DAYS = 2


def test_reminders_land_on_the_configured_lead_for_regular_rebuyers(tmp_path: Path) -> None:
    simulation = Simulation(500, 240, 4, START)
    calls = list(simulation.events())
    log = SqliteEventLog(tmp_path / "events.db")
    log.append([normalise(c, call_type=None, received_at=parse_time(c["timestamp"], "t"), default_message_id=f"s{i}")
                for i, c in enumerate(calls)])
    settings = Settings.from_env(data_dir=tmp_path)
    book, decisioning = open_program(settings)
    store, scores = DecisionStore(Outbox(tmp_path / "outbox.db")), ScoreStore(tmp_path)
    day0 = simulation.start_ms
    stage = DecisioningStage(decisioning, LoyaltyReader(book), store, lambda: day0, scores=scores)
    processor = Processor(log, SqliteProfileStore(tmp_path / "profiles.db"), loyalty=LoyaltyEngine(book),
                          decisioning=stage)
    try:
        processor.catch_up()
        scored_at = day0 + SCORED_ON_DAY * DAY_MS
        run_scoring(settings, as_of_ms=scored_at, now_ms=scored_at, config=scoring_config_for(decisioning),
                    event_log=log)
        for day in range(SCORED_ON_DAY, SCORED_ON_DAY + 30):
            batch: Batch = Batch()
            for member_id in list(processor.view.profiles):
                profile = processor.view.profile(member_id)
                assert profile is not None
                stage.sweep(profile, day0 + day * DAY_MS + 12 * 3_600_000, batch, [])
            stage.write(batch)
        reminders = store.decisions(trigger_id="replenishment-reminder", limit=1_000_000)
        profiles = {m: processor.view.profile(m) for m in processor.view.profiles}
    finally:
        processor.close()
        store.close()
        store.outbox.close()
        scores.close()
        log.close()

    # Ground truth: every member's purchase times of each product, and their planted cycles.
    owner = {m.pos_customer_id: m.user_id for m in simulation.truth.members}
    owner |= {anonymous: m.user_id for m in simulation.truth.members for anonymous in m.anonymous_ids}
    bought: dict[tuple[str, str], list[int]] = defaultdict(list)
    for call in calls:
        if call.get("event") == "Order Completed":
            user = call.get("userId") or owner[call["anonymousId"]]
            for line in call["properties"]["products"]:
                bought[(user, line["product_id"])].append(parse_time(call["timestamp"], "t"))
    planted = {(m.user_id, r.product_id) for m in simulation.truth.members for r in m.replenishment}

    keys = [(r.member_id, r.occurrence_key) for r in reminders]
    assert len(keys) == len(set(keys)), "a (member, product, last purchase) was reminded twice"
    landed = judged = 0
    for reminder in reminders:
        profile = profiles[reminder.member_id]
        assert profile is not None
        assert allowed_consents(profile.consent, STRICT_POLICY)[PROFILING], "predictions used without consent"
        _, product, last = (reminder.occurrence_key or "").split(":")
        if (reminder.user_id, product) not in planted:
            continue
        times = sorted(bought[(reminder.user_id, product)])
        after = times[bisect_right(times, int(last) + DAY_MS - 1):]  # the key holds the day of the last purchase
        if not after:
            continue  # the simulation ended first: nothing to judge against
        judged += 1
        expected = (reminder.occurred_at or 0) + LEAD_DAYS * DAY_MS
        landed += abs(after[0] - expected) <= TOLERANCE_DAYS * DAY_MS
    assert judged >= 30, f"only {judged} reminders on planted rebuyers"
    assert landed / judged >= 0.7, f"{landed} of {judged} reminders landed within the lead"
