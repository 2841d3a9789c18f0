"""Builders shared by the loyalty tests: programs from dicts, events, and a run helper."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import msgspec

from loyalty_cdp.core.loyalty import LoyaltyEngine, LoyaltyInput, ProgramBook
from loyalty_cdp.core.loyalty import ledger as ledger_module
from loyalty_cdp.core.loyalty.budgets import CampaignBudgets
from loyalty_cdp.core.loyalty.program import Program
from loyalty_cdp.core.loyalty.state import LoyaltyState

DAY = 86_400_000
HOUR = 3_600_000

BASE: dict[str, Any] = {
    "program": "test",
    "version": 1,
    "effective_from": "2025-01-01",
    "currency": "USD",
    "point_value": 0.01,
    "earn": {"points_per_unit": 1},
    "ledger": {"pending_days": 0},
    "tiers": {"levels": [{"name": "Member", "threshold": 0}]},
}


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, mappings recursively, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def program(**changes: Any) -> Program:
    return msgspec.convert(merged(BASE, changes), Program)


def book(*versions: dict[str, Any], **changes: Any) -> ProgramBook:
    """A book of one version (``changes`` over BASE) or of several explicit versions."""
    if versions:
        return ProgramBook([msgspec.convert(merged(BASE, v), Program) for v in versions])
    return ProgramBook([program(**changes)])


def at(text: str) -> int:
    """Epoch ms of an ISO date or date-time in UTC, e.g. ``2026-03-01`` or ``2026-03-01T10:00``."""
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def line(
    price: float,
    quantity: int = 1,
    *,
    category: str = "Grocery",
    brand: str = "Acme",
    sku: str | None = None,
    product_id: str | None = None,
    discount: float | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "product_id": product_id or sku or f"{category}-{brand}-{price}",
        "sku": sku or f"SKU-{category}-{price}",
        "category": category,
        "brand": brand,
        "price": price,
        "quantity": quantity,
    }
    if discount is not None:
        item["discount"] = discount
    return item


class Events:
    """Builds inputs with unique, ordered message ids (``m0001``, ``m0002``, ...)."""

    def __init__(self) -> None:
        self.count = 0

    def _id(self, message_id: str | None) -> str:
        self.count += 1
        return message_id or f"m{self.count:04d}"

    def track(
        self, name: str, when: int, properties: dict[str, Any] | None = None, *,
        channel: str | None = "web", message_id: str | None = None,
    ) -> LoyaltyInput:
        return LoyaltyInput(self._id(message_id), when, name, properties or {}, channel)

    def order(
        self, when: int, order_id: str, *lines: dict[str, Any], channel: str = "web",
        message_id: str | None = None, **properties: Any,
    ) -> LoyaltyInput:
        props = {"order_id": order_id, "products": list(lines), **properties}
        return self.track("Order Completed", when, props, channel=channel, message_id=message_id)

    def refund(
        self, when: int, order_id: str, refund_id: str, *lines: dict[str, Any],
        amount: float | None = None, message_id: str | None = None,
    ) -> LoyaltyInput:
        props: dict[str, Any] = {"order_id": order_id, "refund_id": refund_id}
        if lines:
            props["products"] = list(lines)
        if amount is not None:
            props["amount"] = amount
        return self.track("Order Refunded", when, props, message_id=message_id)

    def redeem(
        self, when: int, reward_id: str, key: str, *, quantity: int = 1, points: int = 0,
        message_id: str | None = None,
    ) -> LoyaltyInput:
        props: dict[str, Any] = {"reward_id": reward_id, "idempotency_key": key, "quantity": quantity}
        if points:
            props["points"] = points
        return self.track("Reward Redeemed", when, props, channel="loyalty", message_id=message_id)

    def adjust(
        self, when: int, points: int, reason: str, adjustment_id: str,
        message_id: str | None = None,
    ) -> LoyaltyInput:
        props = {"points": points, "reason": reason, "adjustment_id": adjustment_id}
        return self.track("Points Adjusted", when, props, channel="loyalty", message_id=message_id)

    def identify(self, when: int, message_id: str | None = None, **traits: Any) -> LoyaltyInput:
        return LoyaltyInput(self._id(message_id), when, "identify", traits, None)


def run(
    program_book: ProgramBook,
    events: list[LoyaltyInput],
    until: int | None = None,
    budgets: CampaignBudgets | None = None,
) -> tuple[LoyaltyState, list[dict[str, Any]]]:
    """Replay ``events`` for member ``u1`` and advance to ``until``."""
    return LoyaltyEngine(program_book, budgets).replay("u1", events, until)


def of_kind(emitted: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event["properties"] for event in emitted if event["event"] == kind]


def balance(state: LoyaltyState) -> int:
    return ledger_module.balance(state)


def pending(state: LoyaltyState) -> int:
    return ledger_module.pending_points(state)


def entries(state: LoyaltyState) -> list[tuple[str, int, str]]:
    return [(entry.kind, entry.points, entry.ref) for entry in state.entries]


def check_invariants(state: LoyaltyState) -> None:
    """Balance + pending equals the sum of the ledger entries; lots are never negative; the
    cached tier metric equals a fresh count."""
    assert balance(state) + pending(state) == sum(entry.points for entry in state.entries)
    assert all(lot.remaining >= 0 for lot in state.lots)
    if state.metric_from_day >= 0:
        fresh = sum(v for day, v in state.qualifying if day >= state.metric_from_day)
        assert state.metric_sum == fresh
