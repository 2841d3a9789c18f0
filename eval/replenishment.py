"""Back-test of replenishment reminders on simulated members: shrunk intervals against the last interval.

Run:  .venv/bin/python -m eval.replenishment [--members 2000] [--days 365] [--seed 3] [--lead 3]

The scoring job runs every night. Each night (from ``--from-day`` to 30 days before the end) it
predicts, from the orders up to that night only, each replenishment pair's next purchase, and
sends a reminder for every pair that is due and was not reminded since its last purchase. A
reminder *lands* when the member's true next purchase of the item comes ``lead`` +- 2 days
after it; a reminder with no later purchase in the simulation is a miss. The naive baseline does
the same with the next purchase predicted one last interval after the last one, on the same
pairs. Figures are given for every reminder and for those on the pairs the simulator planted as
replenished (ground truth).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from eval.simdata import SimulatedHistory, simulated_history
from loyalty_cdp.core.predictions.history import PurchaseHistory
from loyalty_cdp.core.predictions.replenishment import (
    ReplenishmentConfig,
    ReplenishmentPredictions,
    last_interval_baseline,
    predict_replenishment,
)
from loyalty_cdp.core.profile import DAY_MS

Predictor = Callable[[PurchaseHistory, int, ReplenishmentConfig], ReplenishmentPredictions]
TOLERANCE_DAYS = 2.0


@dataclass(frozen=True)
class BacktestResult:
    reminders: int
    landed: int
    planted_reminders: int
    planted_landed: int

    @property
    def share(self) -> float:
        return self.landed / self.reminders if self.reminders else 0.0

    @property
    def planted_share(self) -> float:
        return self.planted_landed / self.planted_reminders if self.planted_reminders else 0.0


def _purchase_times(history: PurchaseHistory) -> dict[tuple[int, int], np.ndarray]:
    """Every pair's purchase times (first of each day), as ``pair_history`` counts them."""
    member, item, time = history.line_member, history.line_product, history.line_time
    order = np.lexsort((time, item, member))
    times: dict[tuple[int, int], list[int]] = {}
    for m, i, t in zip(member[order].tolist(), item[order].tolist(), time[order].tolist(), strict=True):
        seen = times.setdefault((m, i), [])
        if not seen or t // DAY_MS != seen[-1] // DAY_MS:
            seen.append(t)
    return {pair: np.array(values) for pair, values in times.items()}


def backtest(sim: SimulatedHistory, predictor: Predictor, config: ReplenishmentConfig, from_day: int) -> BacktestResult:
    """Nightly reminders from ``from_day`` to 30 days before the end, scored against the true next purchase."""
    history = sim.history
    times = _purchase_times(history)
    planted = {
        (member.user_id, step.product_id) for member in sim.truth.members for step in member.replenishment
    }
    member_index = {member_id: i for i, member_id in enumerate(history.member_ids.tolist())}
    product_index = {product_id: i for i, product_id in enumerate(history.product_ids.tolist())}
    planted_codes = {
        (member_index[m], product_index[p]) for m, p in planted if m in member_index and p in product_index
    }
    reminded: set[tuple[int, int, int]] = set()
    reminders = landed = planted_reminders = planted_landed = 0
    last_day = (sim.end_ms - sim.start_ms) // DAY_MS - 30
    for day in range(from_day, last_day):
        night = sim.start_ms + (day + 1) * DAY_MS - 1
        predictions = predictor(history, night, config)
        due = np.flatnonzero(predictions.due)
        for member, item, last in zip(predictions.member[due].tolist(), predictions.item[due].tolist(),
                                      predictions.last_ms[due].tolist(), strict=True):
            if (member, item, last) in reminded:
                continue
            reminded.add((member, item, last))
            later = times[(member, item)]
            later = later[later > last]
            hit = bool(later.size) and bool(abs((later[0] - night) / DAY_MS - config.lead_days) <= TOLERANCE_DAYS)
            reminders += 1
            landed += hit
            if (member, item) in planted_codes:
                planted_reminders += 1
                planted_landed += hit
    return BacktestResult(reminders, landed, planted_reminders, planted_landed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--lead", type=float, default=3.0)
    parser.add_argument("--from-day", type=int, default=180)
    args = parser.parse_args()
    sim = simulated_history(args.members, args.days, args.seed)
    config = ReplenishmentConfig(lead_days=args.lead)
    print(f"{args.members:,} members over {args.days} days (seed {args.seed}), {sim.history.order_time.size:,} orders; "
          f"reminders {args.lead:g} days ahead, nightly from day {args.from_day}")
    for name, predictor in (("shrunk interval", predict_replenishment), ("last interval", last_interval_baseline)):
        result = backtest(sim, predictor, config, args.from_day)
        print(f"{name:<16} {result.reminders:6,} reminders, {result.share:6.1%} within +-2 days of the lead; "
              f"planted pairs: {result.planted_reminders:6,}, {result.planted_share:6.1%}")


if __name__ == "__main__":
    main()
