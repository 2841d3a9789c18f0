"""The simulation: members drawn from the personas, run together, calls streamed in time order.

Deterministic by construction: every random draw comes from streams seeded by ``seed`` (one
per member for the plans, so a member's truth does not depend on how many members there are,
and one for behaviour), and message ids are drawn from them too. The same arguments give
the same calls, byte for byte.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date

from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.simulator.calls import Call, IsoClock
from loyalty_cdp.simulator.catalog import DAY_MS, Catalog
from loyalty_cdp.simulator.member import MemberAgent, World
from loyalty_cdp.simulator.people import MAX_MEMBERS, IdentityFactory
from loyalty_cdp.simulator.personas import draw_member
from loyalty_cdp.simulator.scheduler import Scheduler
from loyalty_cdp.simulator.truth import GroundTruth, ProductTruth

DEFAULT_START = date(2026, 1, 1)
EARLIEST_START, LATEST_START = date(1970, 1, 1), date(9000, 1, 1)
MAX_DAYS = 3650
CURRENCY = "USD"
# The weekly newsletter goes out on the second day of each simulated week at 10:00 UTC.
CAMPAIGN_OFFSET_DAYS = 1 + 10 / 24
CAMPAIGNS = (
    ("Weekly Deals", "This week's deals, picked for you"),
    ("New Arrivals", "Just landed: new from your favourite brands"),
    ("Member Rewards", "Your points are waiting"),
    ("Restock Reminder", "Running low? Reorder in one tap"),
)


def _epoch_ms(day: date) -> int:
    return (day - date(1970, 1, 1)).days * DAY_MS


def validate(members: int, days: int, start: date = DEFAULT_START) -> None:
    if not 1 <= members <= MAX_MEMBERS:
        raise InvalidInput("members", f"must be between 1 and {MAX_MEMBERS:,}, got {members}")
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput("days", f"must be between 1 and {MAX_DAYS}, got {days}")
    if not EARLIEST_START <= start <= LATEST_START:
        raise InvalidInput("start", f"must be between {EARLIEST_START} and {LATEST_START}, "
                                    f"got {start}")


class Simulation:
    """``members`` members over ``days`` days from ``start`` (00:00 UTC), seeded by ``seed``.

    ``truth`` is complete on construction; :meth:`events` generates the calls (again, and
    identically, on every call).
    """

    def __init__(
        self, members: int, days: int, seed: int, start: date = DEFAULT_START
    ) -> None:
        validate(members, days, start)
        self.days = days
        self.seed = seed
        self.start = start
        self.start_ms = _epoch_ms(start)
        self.end_ms = self.start_ms + days * DAY_MS
        self.catalog = Catalog(seed)
        identities = IdentityFactory(seed)
        self.plans = [
            draw_member(i, random.Random(f"member:{seed}:{i}"), self.catalog, identities,
                        start, days)
            for i in range(members)
        ]
        iso = IsoClock()
        self.truth = GroundTruth(
            seed=seed,
            members_count=members,
            days=days,
            start=iso(self.start_ms),
            end=iso(self.end_ms),
            currency=CURRENCY,
            members=[plan.truth for plan in self.plans],
            catalog=[
                ProductTruth(p.product_id, p.sku, p.name, p.category, p.brand, p.price,
                             p.launch_day, p.promo_every_weeks, p.promo_phase, p.promo_percent)
                for p in self.catalog.products
            ],
        )

    def events(self) -> Iterator[Call]:
        """Every call of the simulation, in timestamp order."""
        scheduler = Scheduler(self.end_ms)
        world = World(
            rng=random.Random(f"behaviour:{self.seed}"),
            catalog=self.catalog,
            scheduler=scheduler,
            iso=IsoClock(),
            start_ms=self.start_ms,
            days=self.days,
            currency=CURRENCY,
        )
        agents = [MemberAgent(plan, world) for plan in self.plans]
        for agent in agents:
            agent.start()

        def send_campaign(send_ms: int, campaign: tuple[str, str, str]) -> None:
            for agent in agents:
                agent.on_campaign(send_ms, campaign)

        week = 0
        while (offset := week * 7 + CAMPAIGN_OFFSET_DAYS) < self.days:
            name, subject = CAMPAIGNS[week % len(CAMPAIGNS)]
            send_ms = self.start_ms + int(offset * DAY_MS)
            campaign = (f"cmp-{world.iso(send_ms)[:10]}", name, subject)
            scheduler.at(send_ms, send_campaign, campaign)
            week += 1
        return scheduler.run()


def simulate(members: int, days: int, seed: int, start: date = DEFAULT_START) -> Iterator[Call]:
    """The calls of ``Simulation(members, days, seed, start)``, in timestamp order."""
    return Simulation(members, days, seed, start).events()
