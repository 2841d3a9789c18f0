"""Profile fold benchmark: full replay rate (identity + fold + loyalty + persist) and hot state per member.

Run:  .venv/bin/python bench/fold.py [--members 2000] [--days 365] [--repeat 3]

Simulates a program, appends it to a fresh SQLite event log (not timed), then replays the
whole log into a fresh profile store with the real processor running the example retail
program (``--no-loyalty`` leaves the loyalty stage out; ``--decisioning`` adds the segments,
triggers and decisions stage the server runs, with a fresh decision store; ``--erased`` puts one
person on the suppression list first, as any erasure does), ``--repeat`` times, and
reports the median events/s and the median CPU time per event (the process's, much less noisy
than the rate on a shared machine), with the load average before and after. Hot state per
member is measured with tracemalloc as the memory a processor holds after loading the store
(member view, loyalty due times, and whatever identity state it keeps), divided by the number
of profiles, in a fresh process: in this one the replays' processors (kept alive by
``gc.freeze``) still hold interned strings that a new processor would share without
allocating them, which would hide part of its cost.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from loyalty_cdp.adapters.decisionstore import DecisionStore
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.outbox import Outbox
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.adapters.program_yaml import load_program
from loyalty_cdp.adapters.suppression import SuppressionList
from loyalty_cdp.core.decisioning import DecisioningBook
from loyalty_cdp.core.events import normalise, parse_time
from loyalty_cdp.core.loyalty import LoyaltyEngine
from loyalty_cdp.core.segments import LoyaltyReader
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.services.decisioning_stage import DecisioningStage
from loyalty_cdp.services.processor import Processor
from loyalty_cdp.simulator.generator import simulate


def hot_state(log_path: Path, store_path: Path, loyalty: bool) -> tuple[int, int, int, bool]:
    """(bytes held, profiles, bytes of encoded profiles, whether the view holds them in memory) of a
    processor loading the store."""
    log = SqliteEventLog(log_path)
    store = SqliteProfileStore(store_path)
    engine = LoyaltyEngine(load_program(retail_program_path())) if loyalty else None
    tracemalloc.start()
    processor = Processor(log, store, loyalty=engine)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    blob_bytes = sum(len(b) for b in processor.view.profiles.values())
    profiles = len(processor.view)
    in_memory = isinstance(processor.view.profiles, dict)
    store.close()
    log.close()
    return held, profiles, blob_bytes, in_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--no-loyalty", action="store_true", help="identity + fold only")
    parser.add_argument("--decisioning", action="store_true", help="also segments, triggers and decisions")
    parser.add_argument("--erased", action="store_true",
                        help="replay with a non-empty suppression list (someone not in the log was erased)")
    args = parser.parse_args()
    program = None if args.no_loyalty else load_program(retail_program_path())
    decisioning = DecisioningBook.from_book(program) if args.decisioning and program is not None else None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lcdp-bench-") as tmp:
        log = SqliteEventLog(Path(tmp) / "events.db")
        calls = list(simulate(args.members, args.days, args.seed))
        for start in range(0, len(calls), 10_000):
            log.append([normalise(c, call_type=None, received_at=parse_time(c["timestamp"], "t"),
                                  default_message_id=f"b-{start + i}")
                        for i, c in enumerate(calls[start:start + 10_000])])
        suppression = None
        if args.erased:
            suppression = SuppressionList(Path(tmp))
            suppression.add([("email", "erased-before@example.com")])
        rates, cpu = [], []
        for run in range(args.repeat):
            store = SqliteProfileStore(Path(tmp) / f"profiles-{run}.db")
            started, cpu_started = time.perf_counter(), time.process_time()
            engine = None if program is None else LoyaltyEngine(program)
            stage = None
            if decisioning is not None and program is not None:
                stage = DecisioningStage(decisioning, LoyaltyReader(program),
                                         DecisionStore(Outbox(Path(tmp) / f"outbox-{run}.db")),
                                         lambda: int(time.time() * 1000))
            applied = Processor(log, store, batch_size=args.batch, loyalty=engine, decisioning=stage,
                                suppression=suppression).catch_up()
            rates.append(applied / (time.perf_counter() - started))
            cpu.append((time.process_time() - cpu_started) / applied)
            store.close()
            if stage is not None:
                stage.store.close()
                stage.store.outbox.close()
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            held, profiles, blob_bytes, in_memory = pool.apply(
                hot_state, (Path(tmp) / "events.db", Path(tmp) / "profiles-0.db", program is not None))
        log.close()
        if suppression is not None:
            suppression.close()
    stages = "identity + fold + persist" if program is None else "identity + fold + loyalty + persist"
    if decisioning is not None:
        stages = stages.replace(" + persist", " + decisioning + persist")
    print(f"replay ({stages}): median {statistics.median(rates):,.0f} events/s over "
          f"{args.repeat} runs of {len(calls):,} events ({', '.join(f'{r:,.0f}' for r in rates)}); "
          f"CPU median {statistics.median(cpu) * 1e6:.1f} us/event ({', '.join(f'{c * 1e6:.1f}' for c in cpu)})")
    where = "held in the member view" if in_memory else "left in the profile store, not in memory"
    print(f"hot state: {held / profiles:,.0f} bytes per member ({profiles:,} profiles; an encoded profile is "
          f"{blob_bytes / profiles:,.0f} bytes, {where})")
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{', '.join(f'{x:.2f}' for x in load_after)} after")


if __name__ == "__main__":
    main()
