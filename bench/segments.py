"""Segment benchmark: batch recomputation over a million members, and the incremental per-profile path.

Run:  .venv/bin/python bench/segments.py [--members 1000000] [--base 2000] [--days 365] [--seed 1]

Simulates ``--base`` members for ``--days`` days with the simulator, folds each into a
profile, runs the loyalty engine of the shipped retail program on it and keeps its state
encoded in the profile as the processor does (conditions read it through a
``LoyaltyReader``), and records the event windows the retail segments' counts need. The
population of ``--members`` is those profiles cloned under distinct member ids, streamed:
nothing is cached between clones, so every member costs what a real one would. Reported,
for the segments of ``programs/retail.yaml``:

* the one linear pass building the member table (facts, signals, windows: every field and
  count the segments read), then the vectorised evaluation of every segment over it;
* the incremental path: evaluating every segment for one member whose profile changed,
  and moving its memberships (what the processor does per changed member);
* arbitration over the retail catalog: ranking the offers for the web channel (the
  decision API's work, signals included) and deciding a tier upgrade.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import msgspec

from loyalty_cdp.adapters.program_yaml import load_program
from loyalty_cdp.core.consent import ConsentState, Observation, Record, consent_to_builtins, record_consent
from loyalty_cdp.core.decisioning import DecisioningBook, Occurrence, decide, rank_offers
from loyalty_cdp.core.events import normalise, parse_time
from loyalty_cdp.core.identifiers import DecodedEvent, decode_event
from loyalty_cdp.core.identity import Member
from loyalty_cdp.core.loyalty import LoyaltyEngine, encode, from_event
from loyalty_cdp.core.profile import Profile, fold
from loyalty_cdp.core.segments import (
    EventWindows,
    LoyaltyReader,
    MemberFacts,
    MemberTable,
    loyalty_keys,
    update_memberships,
)
from loyalty_cdp.simulator.generator import simulate

# Wall time depends on what else the machine runs; CPU time of this process is reported beside it.
RETAIL = Path(__file__).parents[1] / "src" / "loyalty_cdp" / "programs" / "retail.yaml"


def base_population(members: int, days: int, seed: int) -> tuple[list[Profile], list[list[DecodedEvent]], int]:
    """Simulated profiles with their loyalty objects, each member's events, and the end instant."""
    by_user: dict[str, list[DecodedEvent]] = defaultdict(list)
    records = {}
    for index, call in enumerate(simulate(members, days, seed)):
        user = call.get("userId")
        if not user:
            continue
        event = normalise(call, call_type=None, received_at=parse_time(call["timestamp"], "t"),
                          default_message_id=f"b-{index}")
        records[event.message_id] = event
        by_user[user].append(decode_event(event))
    book = load_program(RETAIL)
    engine = LoyaltyEngine(book)
    as_of = max(event.timestamp for events in by_user.values() for event in events)
    profiles, histories = [], []
    for user, events in by_user.items():
        state = engine.new_state(user)
        inputs = [found for event in events if (found := from_event(records[event.message_id])) is not None]
        engine.apply(state, inputs)
        profile = fold(None, events, Member(id=user, identities={"user_id": [user]}))
        profiles.append(msgspec.structs.replace(profile, loyalty={"state": encode(state)}))
        histories.append(events)
    return profiles, histories, as_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--base", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    book = load_program(RETAIL)
    segments = DecisioningBook.from_book(book).latest.segments
    conditions = [definition.condition for definition in segments.definitions]
    reader = LoyaltyReader(book, loyalty_keys(conditions))
    started = time.perf_counter()
    profiles, histories, as_of = base_population(args.base, args.days, args.seed)
    windows = [segments.plan.record(None, events) for events in histories]
    print(f"setup (not timed): {len(profiles):,} simulated profiles with loyalty state and windows "
          f"in {time.perf_counter() - started:.1f} s; {len(segments)} segments, "
          f"{len(segments.plan.windows)} kept window(s)")

    def population() -> Iterator[MemberFacts]:
        count = len(profiles)
        replace = msgspec.structs.replace
        for index in range(args.members):
            base: Profile = profiles[index % count]
            found: EventWindows = windows[index % count]
            clone = replace(base, member_id=f"m{index}")
            yield MemberFacts(clone, as_of, windows=found, loyalty=partial(reader, clone.loyalty["state"], as_of))

    started, cpu = time.perf_counter(), time.process_time()
    table = MemberTable.build(population(), conditions)
    built, built_cpu = time.perf_counter() - started, time.process_time() - cpu
    started = time.perf_counter()
    masks = segments.evaluate_table(table)
    evaluated = time.perf_counter() - started
    print(f"batch: {len(table):,} members, table built in {built:.1f} s wall, {built_cpu:.1f} s CPU "
          f"({built_cpu / len(table) * 1e6:.1f} us CPU/member; {len(table.columns)} fields + {len(table.counts)} "
          f"counts), all {len(segments)} segments evaluated in {evaluated * 1000:.0f} ms; "
          f"total {built + evaluated:.1f} s wall")
    for segment_id, mask in masks.items():
        print(f"  {segment_id:<20} {int(mask.sum()):>9,} members ({mask.mean():.1%})")

    timings: list[tuple[float, float]] = []
    for profile, found in zip(profiles, windows, strict=True):
        with _timed(timings):
            loyalty = partial(reader, profile.loyalty["state"], as_of)
            update_memberships(segments, MemberFacts(profile, as_of, windows=found, loyalty=loyalty))
    print(f"incremental: every segment for one changed member, memberships moved: {_spread(timings)}")
    config = DecisioningBook.from_book(book).latest
    summary = LoyaltyReader(book)
    consented = consent_to_builtins(record_consent(ConsentState(), [
        Observation(purpose, Record(True, 0, f"bench-{purpose}", "bench", "member", True, 0))
        for purpose in ("email_marketing", "sms", "push", "profiling")]))
    ranked: list[tuple[float, float]] = []
    decided: list[tuple[float, float]] = []
    for index, profile in enumerate(profiles):
        member = msgspec.structs.replace(profile, consent=consented)
        loyalty = partial(summary, member.loyalty["state"], as_of)
        with _timed(ranked):
            rank_offers(config, MemberFacts(member, as_of, loyalty=loyalty), "web", [], as_of, f"bench-{index}")
        upgrade = Occurrence(trigger_id="tier-upgrade-welcome", member_id=member.member_id, key=f"event:{index}",
                             at=as_of, event={"name": "Tier Upgraded", "message_id": str(index), "properties": {}})
        with _timed(decided):
            decide(config, upgrade, MemberFacts(member, as_of, loyalty=loyalty), [], as_of)
    print(f"arbitration, retail catalog: rank_offers for web {_spread(ranked)}; "
          f"decide a tier upgrade {_spread(decided)}")


@contextmanager
def _timed(into: list[tuple[float, float]]) -> Iterator[None]:
    """Append (wall, CPU) seconds of the block: on a shared machine the wall time includes waits."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into.append((time.perf_counter() - wall, time.process_time() - cpu))


def _spread(timings: list[tuple[float, float]]) -> str:
    def p99(values: list[float]) -> float:
        return sorted(values)[int(len(values) * 0.99)] * 1e6

    walls, cpus = [t[0] for t in timings], [t[1] for t in timings]
    return (f"median {statistics.median(walls) * 1e6:.0f} us, p99 {p99(walls):.0f} us wall / {p99(cpus):.0f} us CPU "
            f"({len(timings):,} members)")


if __name__ == "__main__":
    main()
