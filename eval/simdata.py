"""Simulated purchase histories with their ground truth, shared by the evaluation scripts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from loyalty_cdp.core.events import parse_time
from loyalty_cdp.core.predictions.history import HistoryBuilder, PurchaseHistory
from loyalty_cdp.simulator import Simulation
from loyalty_cdp.simulator.truth import GroundTruth


@dataclass(frozen=True)
class SimulatedHistory:
    history: PurchaseHistory
    truth: GroundTruth
    start_ms: int
    end_ms: int


def simulated_history(members: int, days: int, seed: int, start: date = date(2026, 1, 1)) -> SimulatedHistory:
    """The simulation's ``Order Completed`` and ``Product Added to Wishlist`` calls as a purchase
    history keyed by user id (redemptions are the orders paid partly with points).

    POS orders carry the POS customer id as ``anonymousId`` and online ones may carry a cookie
    id only before login; the truth maps both back to the member, as identity resolution does.
    """
    simulation = Simulation(members, days, seed, start)
    owner: dict[str, str] = {}
    for member in simulation.truth.members:
        owner[member.pos_customer_id] = member.user_id
        for anonymous_id in member.anonymous_ids:
            owner[anonymous_id] = member.user_id
    builder = HistoryBuilder()
    for call in simulation.events():
        event = call.get("event")
        if event not in ("Order Completed", "Product Added to Wishlist"):
            continue
        user_id = call.get("userId") or owner[call["anonymousId"]]
        at = parse_time(call["timestamp"], "timestamp")
        if event == "Order Completed":
            builder.add_order(user_id, at, call["properties"])
        else:
            builder.add_wishlist(user_id, at, call["properties"])
    return SimulatedHistory(builder.build(), simulation.truth, simulation.start_ms, simulation.end_ms)
