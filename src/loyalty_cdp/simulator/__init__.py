"""Traffic simulator: a loyalty program's members and their Segment calls, with ground truth.

Library use::

    sim = Simulation(members=1000, days=90, seed=7)
    sim.truth            # GroundTruth: personas, rates, dropout dates, cycles, identifiers
    for call in sim.events():
        ...              # Segment calls (dicts), in timestamp order
"""

from loyalty_cdp.simulator.generator import DEFAULT_START, Simulation, simulate
from loyalty_cdp.simulator.truth import GroundTruth, MemberTruth, truth_path

__all__ = ["DEFAULT_START", "GroundTruth", "MemberTruth", "Simulation", "simulate", "truth_path"]
