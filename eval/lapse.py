"""Lapse risk and probability alive against the simulator's planted dropout dates.

Run:  .venv/bin/python -m eval.lapse [--members 2000] [--days 365] [--seed 4]

Scores every member as of the end of the simulation and of three quarters of it (orders up to
then only), and compares with the truth: a member has *left* when their planted dropout date
is at or before the as-of time. Reports the AUC of each score for telling who left (rank-sum
formula; 0.5 is chance), over all members and over one-time buyers alone, and what the
``Lapse Risk Detected`` threshold (0.7) catches: the share of flagged members who really left
(precision) and the share of members who left that are flagged (recall).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import rankdata

from eval.simdata import simulated_history
from loyalty_cdp.core.events import parse_time
from loyalty_cdp.core.predictions.run import score_history
from loyalty_cdp.core.predictions.scoring import ScoringConfig


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half."""
    if positive.all() or not positive.any():
        return float("nan")
    ranks = rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    sim = simulated_history(args.members, args.days, args.seed)
    dropout = {member.user_id: parse_time(member.dropout_at, "dropout_at") for member in sim.truth.members}
    config = ScoringConfig()
    for share in (0.75, 1.0):
        as_of = sim.start_ms + int((sim.end_ms - sim.start_ms) * share) - 1
        run = score_history(sim.history, as_of, config)
        left = np.array([dropout[member] <= as_of for member in run.member_ids.tolist()])
        once = np.array([scores["orders"] == 1 for scores in run.scores])
        flagged = run.lapse_risk >= config.lapse_threshold
        print(f"as of day {int(args.days * share)}: {left.size:,} members with orders, {left.mean():.1%} have left, "
              f"{once.sum():,} one-time buyers")
        for name, score in (("lapse_risk", run.lapse_risk), ("1 - p_alive", 1 - run.p_alive),
                            ("1 - p_alive (BG/NBD)", 1 - np.array([s["p_alive_bgnbd"] for s in run.scores]))):
            print(f"  AUC {name:<22} all {auc(score, left):.3f}   one-time buyers {auc(score[once], left[once]):.3f}")
        print(f"  lapse_risk >= {config.lapse_threshold}: {flagged.mean():.1%} flagged, precision "
              f"{left[flagged].mean():.1%}, recall {flagged[left].mean():.1%}")


if __name__ == "__main__":
    main()
