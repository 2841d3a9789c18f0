"""Personas assigned by the rules against the personas the simulator planted.

Run:  .venv/bin/python -m eval.personas [--members 2000] [--days 365] [--seed 7]

Scores every member as of the end of the simulation and prints the confusion matrix of the
planted persona (rows) against the primary persona assigned (columns; ``none`` when no rule
matches), the share assigned their planted persona, and each rule's precision and recall on its
own (a member can match several rules). The planted ``at_risk`` and ``new`` are traits of the
whole simulated year (a decaying purchase rate, joining during it), while the rules see the
member's state at the as-of date, so they disagree by design on members of other personas who
lapsed and on members who joined more than 90 days ago.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass

import numpy as np

from eval.simdata import SimulatedHistory, simulated_history
from loyalty_cdp.core.predictions.personas import PRIORITY, assign_personas, persona_signals
from loyalty_cdp.core.predictions.scoring import ScoringConfig, fit_scoring_models, score_summary


@dataclass(frozen=True)
class PersonaResult:
    confusion: Counter[tuple[str, str]]
    accuracy: float
    precision: dict[str, float]
    recall: dict[str, float]


def evaluate(sim: SimulatedHistory) -> PersonaResult:
    as_of = sim.end_ms - 1
    config = ScoringConfig()
    summary = sim.history.summary(as_of, config.time_unit_days)
    scores = score_summary(summary, fit_scoring_models(summary, as_of, config), config)
    assigned = assign_personas(persona_signals(sim.history, as_of), scores)
    planted = {member.user_id: member.persona for member in sim.truth.members}
    truth = np.array([planted[member] for member in sim.history.member_ids[scores.member_codes].tolist()])
    confusion: Counter[tuple[str, str]] = Counter(
        (str(actual), primary or "none") for actual, (primary, _) in zip(truth.tolist(), assigned, strict=True))
    precision, recall = {}, {}
    for persona in PRIORITY:
        matched = np.array([any(m["persona"] == persona for m in found) for _, found in assigned])
        actual = truth == persona
        precision[persona] = float((matched & actual).sum() / max(matched.sum(), 1))
        recall[persona] = float((matched & actual).sum() / max(actual.sum(), 1))
    accuracy = sum(confusion[(persona, persona)] for persona in PRIORITY) / len(assigned)
    return PersonaResult(confusion, accuracy, precision, recall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    result = evaluate(simulated_history(args.members, args.days, args.seed))
    columns = [*PRIORITY, "none"]
    print("planted/assigned".ljust(18) + "".join(f"{c:>17}" for c in columns))
    for persona in PRIORITY:
        print(f"{persona:<18}" + "".join(f"{result.confusion[(persona, c)]:>17}" for c in columns))
    print(f"primary persona = planted persona: {result.accuracy:.1%}")
    for persona in PRIORITY:
        print(f"{persona:<18} precision {result.precision[persona]:6.1%}   recall {result.recall[persona]:6.1%}")


if __name__ == "__main__":
    main()
