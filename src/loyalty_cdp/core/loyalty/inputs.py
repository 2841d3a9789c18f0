"""What the loyalty engine reads: its input type, the event names it knows, and their parsing.

An input is one Segment call reduced to what the engine needs (:class:`LoyaltyInput`).
The property shapes are Segment's E-commerce spec v2 plus a few documented additions
(``docs/loyalty.md``, "Inputs"). Parsing never raises: a malformed order line is skipped,
a malformed command is ignored, because the fold must not fail on what a client sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

ORDER_COMPLETED = "Order Completed"
ORDER_REFUNDED = "Order Refunded"
WISHLIST_ADDED = "Product Added to Wishlist"
WISHLIST_REMOVED = "Product Removed from Wishlist"
IDENTIFY = "identify"
# Commands: written only by the loyalty API (ingest must refuse them from write keys).
REWARD_REDEEMED = "Reward Redeemed"
POINTS_ADJUSTED = "Points Adjusted"
COMMAND_EVENTS = frozenset({REWARD_REDEEMED, POINTS_ADJUSTED})

_decode = msgspec.json.Decoder().decode
# Larger amounts are treated as unusable, so that no input can overflow stored integers.
MAX_MONEY_CENTS = 10**14
MAX_QUANTITY = 10**6
MAX_POINTS = 10**12


class LoyaltyInput(msgspec.Struct, frozen=True, gc=False):
    """One call as the engine sees it.

    ``name`` is the track event name, or ``"identify"`` for identify calls (whose
    ``traits`` then travel in ``properties``). ``timestamp`` is epoch milliseconds of
    event time; (``timestamp``, ``message_id``) orders the fold.
    """

    message_id: str
    timestamp: int
    name: str
    properties: dict[str, Any]
    channel: str | None = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.timestamp, self.message_id)


class _LoggedEvent(Protocol):
    message_id: str
    timestamp: int
    channel: str | None
    body: bytes


def from_call(call: Mapping[str, Any], timestamp: int) -> LoyaltyInput | None:
    """The input for a decoded Segment call, or None for calls the engine never reads."""
    kind = call.get("type")
    if kind == "track":
        name = call.get("event")
        payload = call.get("properties")
    elif kind == "identify":
        name = IDENTIFY
        payload = call.get("traits")
    else:
        return None
    if not isinstance(name, str):
        return None
    context = call.get("context")
    channel = context.get("channel") if isinstance(context, dict) else None
    return LoyaltyInput(
        message_id=str(call.get("messageId", "")),
        timestamp=timestamp,
        name=name,
        properties=payload if isinstance(payload, dict) else {},
        channel=channel if isinstance(channel, str) else None,
    )


def from_event(event: _LoggedEvent) -> LoyaltyInput | None:
    """The input for a canonical event (``core.events.Event`` or a stored one)."""
    call = _decode(event.body)
    if not isinstance(call, dict):
        return None
    found = from_call(call, event.timestamp)
    if found is None or found.message_id == event.message_id:
        return found
    return msgspec.structs.replace(found, message_id=event.message_id)


def money_cents(value: Any) -> int | None:
    """A money amount (number or numeric string) as whole hundredths, None when unusable."""
    kind = type(value)
    if kind is str:
        try:
            value = float(value)
        except ValueError:
            return None
        kind = float
    if kind is float:
        if not math.isfinite(value) or abs(value) * 100 > MAX_MONEY_CENTS:
            return None
        cents: int = round(value * 100)  # value is a float here: round gives an int
        return cents
    if kind is int:
        return int(value) * 100 if abs(value) * 100 <= MAX_MONEY_CENTS else None
    return None


def whole_number(value: Any) -> int | None:
    """An integer given as int, integral float or digit string; None otherwise."""
    kind = type(value)
    if kind is int:
        return int(value)
    if kind is float and value.is_integer():
        return int(value)
    if kind is str and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def text(value: Any) -> str:
    """A non-empty identifier as text ("" when absent or not a scalar)."""
    kind = type(value)
    if kind is str:
        return str(value).strip()
    if kind is int:
        return str(value)
    return ""


class ProductLine(msgspec.Struct, gc=False):
    """One product line of an order; money in hundredths, category and brand case-folded."""

    product_id: str
    sku: str
    category: str
    brand: str
    quantity: int
    gross: int  # price x quantity
    discount: int  # the line's own discount, 0 when none was given


class Order(msgspec.Struct, gc=False):
    order_id: str
    lines: list[ProductLine]
    has_line_discounts: bool
    discount: int
    shipping: int
    tax: int
    fallback_amount: int  # subtotal (or total - shipping - tax) for orders without products
    points_redeemed: int


def _product_line(raw: Any) -> ProductLine | None:
    """One ``products[]`` entry, or None when it has no usable price or quantity."""
    if type(raw) is not dict:
        return None
    get = raw.get
    price = money_cents(get("price"))
    quantity = get("quantity", 1)
    if type(quantity) is not int:
        quantity = whole_number(quantity)
    if price is None or price < 0 or quantity is None or not 1 <= quantity <= MAX_QUANTITY:
        return None
    gross = price * quantity
    discount = get("discount")
    discount = min(max(money_cents(discount) or 0, 0), gross) if discount is not None else 0
    product_id = get("product_id")
    sku = get("sku")
    category = get("category")
    brand = get("brand")
    return ProductLine(
        product_id.strip() if type(product_id) is str else text(product_id),
        sku.strip() if type(sku) is str else text(sku),
        category.strip().casefold() if type(category) is str else "",
        brand.strip().casefold() if type(brand) is str else "",
        quantity,
        gross,
        discount,
    )


def _amount(properties: Mapping[str, Any], key: str) -> int:
    """A non-negative order-level amount in hundredths (0 when absent or unusable)."""
    value = properties.get(key)
    if value is None:
        return 0
    return max(money_cents(value) or 0, 0)


def parse_order(properties: Mapping[str, Any], message_id: str) -> Order:
    """An ``Order Completed`` call's facts; the order id defaults to the message id."""
    lines: list[ProductLine] = []
    products = properties.get("products")
    if type(products) is list:
        for raw in products:
            line = _product_line(raw)
            if line is not None:
                lines.append(line)
    shipping = _amount(properties, "shipping")
    tax = _amount(properties, "tax")
    fallback = 0
    if not lines:
        if properties.get("subtotal") is not None:
            fallback = _amount(properties, "subtotal")
        elif properties.get("total") is not None:
            fallback = max(_amount(properties, "total") - shipping - tax, 0)
        else:
            fallback = _amount(properties, "revenue")
    redeemed = properties.get("points_redeemed")
    redeemed = min(max(whole_number(redeemed) or 0, 0), MAX_POINTS) if redeemed is not None else 0
    order_id = properties.get("order_id")
    order_id = order_id.strip() if type(order_id) is str else text(order_id)
    return Order(
        order_id or message_id,
        lines,
        any(line.discount for line in lines),
        _amount(properties, "discount"),
        shipping,
        tax,
        fallback,
        redeemed,
    )


class Refund(msgspec.Struct, gc=False):
    """An ``Order Refunded`` call: returned lines, or a money amount, or (neither) everything."""

    refund_id: str
    order_id: str
    returned: list[tuple[str, str, int]]  # (product_id, sku, quantity)
    amount: int | None


def parse_refund(properties: Mapping[str, Any], message_id: str) -> Refund | None:
    order_id = text(properties.get("order_id"))
    if not order_id:
        return None
    returned: list[tuple[str, str, int]] = []
    products = properties.get("products")
    if isinstance(products, list):
        for raw in products:
            if not isinstance(raw, dict):
                continue
            quantity = whole_number(raw.get("quantity", 1))
            if quantity is None or quantity < 1:
                continue
            returned.append((text(raw.get("product_id")), text(raw.get("sku")), quantity))
    amount = None
    if not returned:
        for key in ("amount", "total"):
            found = money_cents(properties.get(key))
            if found is not None and found > 0:
                amount = found
                break
    return Refund(
        refund_id=text(properties.get("refund_id")) or message_id,
        order_id=order_id,
        returned=returned,
        amount=amount,
    )


class Adjustment(msgspec.Struct, gc=False):
    adjustment_id: str
    points: int
    reason: str


def parse_adjustment(properties: Mapping[str, Any], message_id: str) -> Adjustment | None:
    """A ``Points Adjusted`` command; None without a non-zero ``points`` or a ``reason``."""
    points = whole_number(properties.get("points"))
    reason = text(properties.get("reason"))
    if not points or abs(points) > MAX_POINTS or not reason:
        return None
    adjustment_id = text(properties.get("adjustment_id")) or message_id
    return Adjustment(adjustment_id=adjustment_id, points=points, reason=reason[:200])


class RedemptionRequest(msgspec.Struct, frozen=True, gc=False):
    """What a member asks to redeem: a reward (``quantity`` times) or ``points`` as payment."""

    reward_id: str
    idempotency_key: str
    quantity: int = 1
    points: int = 0
    order_id: str = ""


def parse_redemption(properties: Mapping[str, Any]) -> RedemptionRequest | None:
    """A ``Reward Redeemed`` command; None without a reward id or an idempotency key."""
    reward_id = text(properties.get("reward_id"))
    key = text(properties.get("idempotency_key"))
    quantity = whole_number(properties.get("quantity", 1))
    points = whole_number(properties.get("points", 0))
    if not reward_id or not key or quantity is None or points is None:
        return None
    if not 0 <= points <= MAX_POINTS or abs(quantity) > MAX_QUANTITY:
        return None
    return RedemptionRequest(
        reward_id=reward_id,
        idempotency_key=key,
        quantity=quantity,
        points=points,
        order_id=text(properties.get("order_id")),
    )


def parse_birthday(value: Any) -> tuple[int, int] | None:
    """(month, day) from ``YYYY-MM-DD``, ``--MM-DD`` or ``MM-DD`` (ISO dates), else None."""
    if not isinstance(value, str):
        return None
    parts = value.strip()[:10].lstrip("-").split("-")
    if len(parts) == 3:
        parts = parts[1:]
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return None
    month, day = int(parts[0]), int(parts[1])
    limits = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    if 1 <= month <= 12 and 1 <= day <= limits[month - 1]:
        return month, day
    return None
