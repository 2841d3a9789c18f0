"""Members' orders and order lines as columns: what the batch scoring jobs read (pure).

:class:`HistoryBuilder` takes ``Order Completed`` events one at a time (member id, event time,
properties) and :meth:`HistoryBuilder.build` returns a :class:`PurchaseHistory` of NumPy
columns. Members and products are numbered in order of first appearance, so the batch jobs
work on integer codes, never on strings. An order is valued like the profile's signals value it
(``docs/signals.md``): ``total``, else ``revenue``, else the sum of ``price`` x ``quantity``
over ``products[]``; a negative value counts as 0. An ``order_id`` seen again for the same
member is the same order and is kept once (the first one added).

Beside the orders it keeps what the offer propensities learn from: **redemptions** (an order
paid partly with points, ``points_redeemed`` > 0, or a reward redemption added with
:meth:`HistoryBuilder.add_redemption`) and **wishlist additions** (member, time, product).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.core.predictions.summary import PurchaseSummary, summarise_purchases
from loyalty_cdp.core.profile import DAY_MS, amount

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

MAX_KEY_CHARS = 64


def _key(value: Any) -> str | None:
    """A product id, sku or category as a bounded key; None when absent or not text/number."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = " ".join(str(value).split())[:MAX_KEY_CHARS]
    return text or None


def order_value(properties: dict[str, Any]) -> float:
    """``total``, else ``revenue``, else the sum of the lines' price x quantity; at least 0."""
    for name in ("total", "revenue"):
        value = amount(properties.get(name))
        if value is not None:
            return max(value, 0.0)
    lines = properties.get("products")
    total = 0.0
    for line in lines if isinstance(lines, list) else ():
        if isinstance(line, dict):
            price = amount(line.get("price"))
            quantity = amount(line.get("quantity"))
            total += (price or 0.0) * (1.0 if quantity is None else quantity)
    return max(total, 0.0)


def _no_ints() -> IntArray:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class PurchaseHistory:
    """Orders (one row each) and their product lines, with member and product code tables.

    ``order_member[i]`` indexes ``member_ids``; ``line_order[j]`` indexes the orders and
    ``line_product[j]`` indexes ``product_ids`` (``product_category``, ``product_name`` and
    ``product_brand`` describe each product, ``""`` when unknown); ``line_discount`` is the
    amount taken off the line (``products[].discount``, 0 without one). ``redemption_member``
    and ``redemption_time`` list the redemptions, ``wishlist_member``, ``wishlist_time`` and
    ``wishlist_product`` the wishlist additions (product codes index ``product_ids``). Times are
    epoch milliseconds (UTC).
    """

    member_ids: NDArray[np.str_]
    order_member: IntArray
    order_time: IntArray
    order_total: FloatArray
    line_order: IntArray
    line_product: IntArray
    line_quantity: FloatArray
    line_discount: FloatArray
    product_ids: NDArray[np.str_]
    product_category: NDArray[np.str_]
    product_name: NDArray[np.str_]
    product_brand: NDArray[np.str_]
    redemption_member: IntArray = field(default_factory=_no_ints)
    redemption_time: IntArray = field(default_factory=_no_ints)
    wishlist_member: IntArray = field(default_factory=_no_ints)
    wishlist_time: IntArray = field(default_factory=_no_ints)
    wishlist_product: IntArray = field(default_factory=_no_ints)

    @property
    def line_member(self) -> IntArray:
        return self.order_member[self.line_order]

    @property
    def line_time(self) -> IntArray:
        return self.order_time[self.line_order]

    def until(self, as_of_ms: int) -> PurchaseHistory:
        """The orders (and lines, redemptions, wishlist additions) at or before ``as_of_ms``; codes unchanged."""
        return self._orders_where(self.order_time <= as_of_ms, self.redemption_time <= as_of_ms,
                                  self.wishlist_time <= as_of_ms)

    def restricted_to(self, members: NDArray[np.bool_]) -> PurchaseHistory:
        """Only the orders (and lines, redemptions, wishlist additions) of the members where ``members[code]``."""
        return self._orders_where(members[self.order_member], members[self.redemption_member],
                                  members[self.wishlist_member])

    def _orders_where(self, kept: NDArray[np.bool_], redemptions: NDArray[np.bool_],
                      wishlist: NDArray[np.bool_]) -> PurchaseHistory:
        if kept.all() and redemptions.all() and wishlist.all():
            return self
        new_index = np.cumsum(kept) - 1
        lines = kept[self.line_order]
        return PurchaseHistory(
            member_ids=self.member_ids,
            order_member=self.order_member[kept],
            order_time=self.order_time[kept],
            order_total=self.order_total[kept],
            line_order=new_index[self.line_order[lines]],
            line_product=self.line_product[lines],
            line_quantity=self.line_quantity[lines],
            line_discount=self.line_discount[lines],
            product_ids=self.product_ids,
            product_category=self.product_category,
            product_name=self.product_name,
            product_brand=self.product_brand,
            redemption_member=self.redemption_member[redemptions],
            redemption_time=self.redemption_time[redemptions],
            wishlist_member=self.wishlist_member[wishlist],
            wishlist_time=self.wishlist_time[wishlist],
            wishlist_product=self.wishlist_product[wishlist],
        )

    def lines_by_time(self) -> IntArray:
        """Line positions in time order (stable); lines usually arrive that way, which costs one pass."""
        times = self.line_time
        if times.size < 2 or bool((times[1:] >= times[:-1]).all()):
            return np.arange(times.size, dtype=np.int64)
        return np.asarray(np.argsort(times, kind="stable"), dtype=np.int64)

    def summary(self, as_of_ms: int, time_unit_days: float) -> PurchaseSummary:
        """The BTYD summary as of ``as_of_ms``'s day; its ``member_ids`` are member codes."""
        days = (self.order_time // DAY_MS).astype("datetime64[D]")
        end = np.datetime64(as_of_ms // DAY_MS, "D")
        return summarise_purchases(
            self.order_member, days, self.order_total, end, time_unit_days=time_unit_days
        )


class HistoryBuilder:
    """Collects orders event by event; :meth:`build` turns them into a :class:`PurchaseHistory`."""

    def __init__(self) -> None:
        self._members: dict[str, int] = {}
        self._products: dict[str, int] = {}
        self._categories: list[str] = []
        self._names: list[str] = []
        self._brands: list[str] = []
        self._orders_seen: set[tuple[int, str]] = set()
        self._order_member: list[int] = []
        self._order_time: list[int] = []
        self._order_total: list[float] = []
        self._line_order: list[int] = []
        self._line_product: list[int] = []
        self._line_quantity: list[float] = []
        self._line_discount: list[float] = []
        self._redemption_member: list[int] = []
        self._redemption_time: list[int] = []
        self._wishlist_member: list[int] = []
        self._wishlist_time: list[int] = []
        self._wishlist_product: list[int] = []

    def add_order(self, member_id: str, timestamp_ms: int, properties: dict[str, Any]) -> bool:
        """Record one ``Order Completed``; False when it repeats an order id of the member."""
        member = self._members.setdefault(member_id, len(self._members))
        order_id = _key(properties.get("order_id"))
        if order_id is not None:
            if (member, order_id) in self._orders_seen:
                return False
            self._orders_seen.add((member, order_id))
        order = len(self._order_time)
        self._order_member.append(member)
        self._order_time.append(timestamp_ms)
        self._order_total.append(order_value(properties))
        lines = properties.get("products")
        for line in lines if isinstance(lines, list) else ():
            if isinstance(line, dict):
                self._add_line(order, line)
        if (amount(properties.get("points_redeemed")) or 0.0) > 0:
            self._redemption_member.append(member)
            self._redemption_time.append(timestamp_ms)
        return True

    def add_redemption(self, member_id: str, timestamp_ms: int) -> None:
        """Record a reward redemption (points paid at checkout come with their order)."""
        self._redemption_member.append(self._members.setdefault(member_id, len(self._members)))
        self._redemption_time.append(timestamp_ms)

    def add_wishlist(self, member_id: str, timestamp_ms: int, properties: dict[str, Any]) -> bool:
        """Record a ``Product Added to Wishlist``; False (nothing recorded) without a product id or sku."""
        product = self._product(properties)
        if product is None:
            return False
        self._wishlist_member.append(self._members.setdefault(member_id, len(self._members)))
        self._wishlist_time.append(timestamp_ms)
        self._wishlist_product.append(product)
        return True

    def _product(self, line: dict[str, Any]) -> int | None:
        """The product code of a line or wishlist item (new products are numbered), None without an id."""
        product_key = _key(line.get("product_id")) or _key(line.get("sku"))
        if product_key is None:
            return None
        product = self._products.get(product_key)
        category = _key(line.get("category")) or ""
        name = _key(line.get("name")) or ""
        brand = _key(line.get("brand")) or ""
        if product is None:
            product = self._products[product_key] = len(self._products)
            self._categories.append(category)
            self._names.append(name)
            self._brands.append(brand)
        else:
            self._categories[product] = self._categories[product] or category
            self._names[product] = self._names[product] or name
            self._brands[product] = self._brands[product] or brand
        return product

    def _add_line(self, order: int, line: dict[str, Any]) -> None:
        product = self._product(line)
        if product is None:
            return
        quantity = amount(line.get("quantity"))
        self._line_order.append(order)
        self._line_product.append(product)
        self._line_quantity.append(1.0 if quantity is None or quantity <= 0 else quantity)
        self._line_discount.append(max(amount(line.get("discount")) or 0.0, 0.0))

    def build(self) -> PurchaseHistory:
        return PurchaseHistory(
            member_ids=np.array(list(self._members), dtype=np.str_),
            order_member=np.array(self._order_member, dtype=np.int64),
            order_time=np.array(self._order_time, dtype=np.int64),
            order_total=np.array(self._order_total, dtype=np.float64),
            line_order=np.array(self._line_order, dtype=np.int64),
            line_product=np.array(self._line_product, dtype=np.int64),
            line_quantity=np.array(self._line_quantity, dtype=np.float64),
            line_discount=np.array(self._line_discount, dtype=np.float64),
            product_ids=np.array(list(self._products), dtype=np.str_),
            product_category=np.array(self._categories, dtype=np.str_),
            product_name=np.array(self._names, dtype=np.str_),
            product_brand=np.array(self._brands, dtype=np.str_),
            redemption_member=np.array(self._redemption_member, dtype=np.int64),
            redemption_time=np.array(self._redemption_time, dtype=np.int64),
            wishlist_member=np.array(self._wishlist_member, dtype=np.int64),
            wishlist_time=np.array(self._wishlist_time, dtype=np.int64),
            wishlist_product=np.array(self._wishlist_product, dtype=np.int64),
        )
