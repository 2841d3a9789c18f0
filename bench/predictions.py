"""Scoring benchmark: one whole scoring run over synthetic members, stage by stage, and the log read.

Run:  .venv/bin/python bench/predictions.py [--members 1000000] [--fit 100000] [--log-members 2000]
      [--cross-sell-members 200000]

Builds a synthetic purchase history (not timed): ``--members`` members who buy as Poisson
processes at Gamma-distributed rates over exponential lifetimes (Pareto/NBD-like), one to 24
months of history on a day grid, order values Gamma-distributed per member, two lines per order
from a 2,000-product catalog (Zipf popularity), orders in time order as the log gives them.

Then times what ``loyalty-cdp score`` does after reading the log: the purchase summary, the fits
(BG/NBD and Gamma-Gamma on ``--fit`` members, Pareto/NBD on 10,000), the vectorised scores,
replenishment, the cross-sell fit and personas, the per-member score dicts and explanations, and
the write of every row to ``scores.db`` over a previous run's (whose rows are dropped and
zeroed). The whole run and the write pause the cyclic garbage collector, as ``run_scoring``
does. Per-member cross-sell lists are only computed up to
``ScoringConfig.cross_sell_member_limit`` members; they are timed apart on
``--cross-sell-members`` members. Finally it times reading the orders of a simulated program
(``--log-members`` members over a year) out of a SQLite event log, the step before all that.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.scorestore import RunRecord, ScoreRow, ScoreStore
from loyalty_cdp.core.events import normalise, parse_time
from loyalty_cdp.core.predictions.crosssell import fit_cross_sell, recommend_members
from loyalty_cdp.core.predictions.explain import explain_scores
from loyalty_cdp.core.predictions.history import PurchaseHistory
from loyalty_cdp.core.predictions.personas import assign_personas, persona_signals
from loyalty_cdp.core.predictions.replenishment import predict_replenishment
from loyalty_cdp.core.predictions.run import ScoringRun, score_history
from loyalty_cdp.core.predictions.scoring import ScoringConfig, fit_scoring_models, score_summary
from loyalty_cdp.services.scoring import Identities, read_history, without_cyclic_gc
from loyalty_cdp.simulator.generator import simulate

DAY_MS = 86_400_000
AS_OF_DAY = 20_600  # 2026-05-25
PRODUCTS = 2_000
T = TypeVar("T")


def timed(label: str, action: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = action()
    print(f"{label:<66} {time.perf_counter() - started:7.2f} s", flush=True)
    return result


def synthetic_history(members: int, seed: int) -> PurchaseHistory:
    rng = np.random.default_rng(seed)
    tenure = rng.integers(30, 730, members)
    rate = rng.gamma(1.5, 1 / 40, members)  # purchases per day: a mean gap of 27 days
    lifetime = rng.exponential(1 / rng.gamma(2.0, 1 / 400, members))
    active = np.minimum(tenure, lifetime)
    orders = 1 + rng.poisson(rate * active)
    member = np.repeat(np.arange(members), orders)
    first_day = AS_OF_DAY - tenure
    day = first_day[member] + np.floor(rng.random(member.size) * active[member]).astype(np.int64)
    first_order = np.concatenate([[0], np.cumsum(orders)[:-1]])
    day[first_order] = first_day  # the first order opens the history
    time_ms = day * DAY_MS + rng.integers(8, 20, member.size) * 3_600_000
    total = rng.gamma(4.0, rng.gamma(3.0, 1 / 0.3, members)[member] / 4.0)
    by_time = np.argsort(time_ms, kind="stable")  # orders arrive in time order, as from the event log
    member, time_ms, total = member[by_time], time_ms[by_time], total[by_time]
    line_order = np.repeat(np.arange(member.size), 2)
    product = np.minimum(rng.zipf(1.3, line_order.size) - 1, PRODUCTS - 1)
    return PurchaseHistory(
        member_ids=np.array([f"M{i:09d}" for i in range(members)], dtype=np.str_),
        order_member=member, order_time=time_ms, order_total=total,
        line_order=line_order, line_product=product, line_quantity=np.ones(line_order.size),
        line_discount=np.where(rng.random(line_order.size) < 0.2, 1.0, 0.0),
        product_ids=np.array([f"P{i:05d}" for i in range(PRODUCTS)], dtype=np.str_),
        product_category=np.array([f"C{i % 40:02d}" for i in range(PRODUCTS)], dtype=np.str_),
        product_name=np.array([f"Product {i}" for i in range(PRODUCTS)], dtype=np.str_),
        product_brand=np.array([f"B{i % 120:03d}" for i in range(PRODUCTS)], dtype=np.str_),
    )


def stages(history: PurchaseHistory, as_of: int, config: ScoringConfig) -> None:
    summary = timed("purchase summary", lambda: history.summary(as_of, config.time_unit_days))
    models = timed(f"fits (BG/NBD, Gamma-Gamma on {config.fit_sample:,}; Pareto/NBD on "
                   f"{config.pareto_fit_sample:,})", lambda: fit_scoring_models(summary, as_of, config))
    scores = timed("scores (P(alive) x2, lapse risk, 90-day purchases, spend, CLV)",
                   lambda: score_summary(summary, models, config))
    timed("explanations", lambda: explain_scores(scores))
    timed("replenishment predictions", lambda: predict_replenishment(history, as_of, config.replenishment))
    timed("cross-sell fit (co-occurrence)", lambda: fit_cross_sell(history, as_of, config.cross_sell))
    timed("personas", lambda: assign_personas(persona_signals(history, as_of), scores))


def cross_sell_per_member(members: int, seed: int, as_of: int) -> None:
    history = synthetic_history(members, seed)
    model = fit_cross_sell(history, as_of)
    timed(f"cross-sell recommendations for {members:,} members", lambda: recommend_members(model, history, as_of))


def write(run: ScoringRun, directory: Path) -> float:
    """Store the run's rows; returns the seconds it took."""
    started = time.perf_counter()
    store = ScoreStore(directory)
    record = RunRecord(run.models.version, run.as_of_ms, run.as_of_ms, int(run.member_ids.size), run.models.metrics)
    store.replace_all((ScoreRow(*fields) for fields in run.records()), record)
    store.close()
    return time.perf_counter() - started


def log_read(members: int) -> None:
    with tempfile.TemporaryDirectory(prefix="lcdp-bench-") as tmp:
        log = SqliteEventLog(Path(tmp) / "events.db")
        calls = list(simulate(members, 365, 1))
        for start in range(0, len(calls), 10_000):
            log.append([normalise(c, call_type=None, received_at=parse_time(c["timestamp"], "t"),
                                  default_message_id=f"b-{start + i}")
                        for i, c in enumerate(calls[start:start + 10_000])])
        started = time.perf_counter()
        history, _ = read_history(log, Identities({}, {}, {}), as_of_ms=2**62)
        seconds = time.perf_counter() - started
        log.close()
    orders = history.order_time.size
    print(f"read orders from the event log: {len(calls):,} events, {orders:,} orders in {seconds:.2f} s "
          f"({len(calls) / seconds:,.0f} events/s, {orders / seconds:,.0f} orders/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--fit", type=int, default=100_000)
    parser.add_argument("--log-members", type=int, default=2_000)
    parser.add_argument("--cross-sell-members", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    history = synthetic_history(args.members, args.seed)
    print(f"{args.members:,} members, {history.order_time.size:,} orders, {history.line_order.size:,} lines")
    as_of = (AS_OF_DAY + 1) * DAY_MS - 1
    config = ScoringConfig(fit_sample=args.fit)
    stages(history, as_of, config)
    with without_cyclic_gc(), tempfile.TemporaryDirectory(prefix="lcdp-bench-") as tmp:  # as run_scoring does
        started = time.perf_counter()
        run = timed("whole pure run (score_history)", lambda: score_history(history, as_of, config))
        pure = time.perf_counter() - started
        write(run, Path(tmp))  # a previous run, so that the timed write also drops one
        stored = timed("write every row to scores.db, replacing a previous run", lambda: write(run, Path(tmp)))
    print(f"{'scoring run, total (pure run + store write)':<66} {pure + stored:7.2f} s")
    per_member = config.cross_sell_member_limit
    print(f"(per-member cross-sell lists {'included' if args.members <= per_member else 'skipped'}: "
          f"the default limit is {per_member:,} members)")
    if args.cross_sell_members:
        cross_sell_per_member(args.cross_sell_members, args.seed, as_of)
    if args.log_members:
        log_read(args.log_members)


if __name__ == "__main__":
    main()
