"""Builders of Segment calls, shaped exactly as the Segment HTTP Tracking API takes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loyalty_cdp.simulator.catalog import DAY_MS, Product

Call = dict[str, Any]


class IsoClock:
    """Epoch milliseconds to ``2026-01-02T03:04:05.678Z``, caching the date part per day."""

    def __init__(self) -> None:
        self._day = -1
        self._prefix = ""

    def __call__(self, epoch_ms: int) -> str:
        day, ms_of_day = divmod(epoch_ms, DAY_MS)
        if day != self._day:
            self._day = day
            self._prefix = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%dT")
        seconds, ms = divmod(ms_of_day, 1000)
        minutes, second = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        return f"{self._prefix}{hour:02d}:{minute:02d}:{second:02d}.{ms:03d}Z"


def product_properties(product: Product, price: float, currency: str) -> dict[str, Any]:
    """The E-commerce spec v2 product fields (``Product Viewed``, wishlist, order lines)."""
    return {
        "product_id": product.product_id,
        "sku": product.sku,
        "name": product.name,
        "category": product.category,
        "brand": product.brand,
        "price": price,
        "currency": currency,
        "url": product.url,
    }


def order_line(product: Product, quantity: int, discount: float) -> dict[str, Any]:
    """One entry of ``products[]`` in ``Order Completed`` / ``Order Refunded``.

    ``price`` is the unit list price; ``discount`` (an extension of the spec) is the amount
    taken off this line, so that earn rules can tell discounted items apart.
    """
    line: dict[str, Any] = {
        "product_id": product.product_id,
        "sku": product.sku,
        "name": product.name,
        "category": product.category,
        "brand": product.brand,
        "price": product.price,
        "quantity": quantity,
    }
    if discount:
        line["discount"] = discount
    return line


def external_id(value: str, kind: str) -> dict[str, str]:
    """One entry of ``context.externalIds``, as Segment writes them."""
    return {"id": value, "type": kind, "collection": "users", "encoding": "none"}


def call(
    kind: str,
    message_id: str,
    timestamp: str,
    user_id: str | None,
    anonymous_id: str | None,
    context: dict[str, Any],
) -> Call:
    """The common part of a call of type ``kind``; the caller adds event, properties, traits."""
    result: Call = {"type": kind, "messageId": message_id, "timestamp": timestamp}
    if user_id is not None:
        result["userId"] = user_id
    if anonymous_id is not None:
        result["anonymousId"] = anonymous_id
    result["context"] = context
    return result
