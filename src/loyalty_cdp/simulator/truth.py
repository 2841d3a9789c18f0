"""The simulation's ground truth: every planted parameter, to score what the system infers.

Dates are ISO-8601 strings in UTC. Rates are per day. The whole object is known before the
first event is generated (devices, join and dropout dates are drawn up front), and it is
written as one JSON document beside the events, one member per line (``docs/simulator.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec


class Replenishment(msgspec.Struct, frozen=True):
    """A product the member rebuys every ``cycle_days`` (plus normal noise of ``jitter_days``)."""

    product_id: str
    sku: str
    category: str
    cycle_days: float
    jitter_days: float


class Spend(msgspec.Struct, frozen=True):
    """How big the member's baskets are and how premium the products they pick."""

    basket_items_mean: float
    quantity_mean: float
    premium_affinity: float


class MemberTruth(msgspec.Struct, frozen=True):
    index: int
    user_id: str
    persona: str
    first_name: str
    last_name: str
    email: str
    phone: str
    birthday: str
    card_number: str
    pos_customer_id: str
    # Web cookies and app installs, in the order they appear; each starts anonymous.
    anonymous_ids: list[str]
    device_ids: list[str]
    # When the member joined; None for members who joined before the simulation started.
    joined_at: str | None
    # Discretionary orders arrive as a Poisson process at this rate while the member is alive;
    # replenishment and launch orders come on top (``order_rate_per_day`` sums the first two).
    purchase_rate_per_day: float
    # At-risk members: the rate halves every ``rate_half_life_days`` until the lapse date.
    rate_half_life_days: float | None
    order_rate_per_day: float
    # The moment the member stops buying and browsing (dropout / lapse); may lie after ``end``.
    dropout_at: str
    alive_at_end: bool
    replenishment: list[Replenishment]
    favourite_categories: list[str]
    favourite_brands: list[str]
    brand_loyalty: float
    channel_mix: dict[str, float]
    spend: Spend
    # Probability of choosing a promoted item when picking a product.
    discount_affinity: float
    redemption_propensity: float
    browse_rate_per_day: float
    email_open_rate: float
    email_click_rate: float
    return_rate: float
    review_rate: float
    # The consent banner's answer at enrolment (categoryPreferences, as Segment's consent
    # manager records it), or None for a member who never answered; app users' push tokens.
    consent: dict[str, bool] | None = None
    push_tokens: list[str] = []


class ProductTruth(msgspec.Struct, frozen=True):
    product_id: str
    sku: str
    name: str
    category: str
    brand: str
    price: float
    launch_day: int
    promo_every_weeks: int
    promo_phase: int
    promo_percent: int


class GroundTruth(msgspec.Struct, frozen=True):
    seed: int
    members_count: int
    days: int
    start: str
    end: str
    currency: str
    members: list[MemberTruth]
    catalog: list[ProductTruth]

    def member(self, user_id: str) -> MemberTruth:
        for member in self.members:
            if member.user_id == user_id:
                return member
        raise KeyError(user_id)

    def chunks(self) -> Iterator[bytes]:
        """The truth as one JSON document, in pieces: one member or product per line."""
        encode = msgspec.json.encode
        lists: dict[str, list[MemberTruth] | list[ProductTruth]] = {
            "members": self.members, "catalog": self.catalog,
        }
        head = {name: getattr(self, name) for name in self.__struct_fields__ if name not in lists}
        yield encode(head)[:-1]  # without its closing brace: the lists follow
        for name, items in lists.items():
            yield b',"' + name.encode() + b'":[\n'
            yield b",\n".join(encode(item) for item in items)
            yield b"\n]"
        yield b"}\n"

    def write(self, path: Path) -> None:
        with path.open("wb") as stream:
            stream.writelines(self.chunks())

    @classmethod
    def read(cls, path: Path) -> GroundTruth:
        return msgspec.json.decode(path.read_bytes(), type=cls)


def truth_path(events_path: Path) -> Path:
    """Where the ground truth of an events file goes: ``events.jsonl.truth.json``."""
    return events_path.with_name(events_path.name + ".truth.json")
