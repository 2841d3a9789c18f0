"""Signals of many members at once, from the profiles' raw aggregates, with NumPy (the batch path).

Computing every signal member by member costs about 0.1 ms each (``compute_signals``),
too much for a million members. The signal paths of :func:`vectorised` are instead
computed here for all members together, by the definitions of ``docs/signals.md`` and with
the same floating-point operations in the same order as :mod:`loyalty_cdp.core.signals`
(integer sums, then one division; decayed weights summed era by era and key by key), so
the values are identical, not merely close: a property test compares every one of them
with ``compute_signals``. Other signal paths are read member by member.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.core.profile import APP_WINDOW_DAYS, DAY_MS, DECAY_ERA_HALF_LIVES, DECAY_ERAS_KEPT, MONEY_SCALE
from loyalty_cdp.core.segments.column import Column
from loyalty_cdp.core.segments.facts import MemberFacts
from loyalty_cdp.core.segments.fields import FieldPath
from loyalty_cdp.core.signals import ORDER_WINDOWS_DAYS, SignalSettings
from loyalty_cdp.errors import InvalidInput

Floats = NDArray[np.float64]
MAPS: dict[tuple[str, ...], str] = {
    ("affinity", "category"): "purchases.categories",
    ("affinity", "brand"): "purchases.brands",
    ("browse", "category_interest"): "browse.categories",
}
STAGES = {"new": 0, "prospect": 1, "active": 2, "at_risk": 3, "lapsed": 4}
BASES = {"own": 0, "fallback": 1}
SCALARS = frozenset({
    "first_seen", "last_seen",
    *(f"purchase.{name}" for name in ("orders", "orders_30d", "orders_90d", "orders_365d", "mean_interval_days",
                                      "days_since_last_order", "first_order_at", "last_order_at")),
    *(f"monetary.{name}" for name in ("total_spend", "refunds", "refunded", "net_spend", "average_order_value")),
    *(f"price_sensitivity.{name}" for name in ("discounted_order_share", "coupon_order_share", "discount_rate")),
    *(f"redemption.{name}" for name in ("points_earned", "points_redeemed", "redemption_rate", "redemptions",
                                        "mean_points_per_redemption", "days_since_last_redemption",
                                        "mean_days_between_redemptions", "points_paid_order_share")),
    *(f"engagement.{name}" for name in ("emails_delivered", "email_opens", "email_clicks", "open_rate",
                                        "click_to_open_rate", "app_sessions", "app_sessions_30d",
                                        "days_since_last_app_session", "reviews", "mean_rating")),
    "lifecycle.stage", "lifecycle.cadence_days", "lifecycle.cadence_basis",
})
def _purchases(act: Any) -> tuple[Any, ...]:
    b = act.purchases
    return (b.orders, b.spend, b.first_at, b.last_at, b.discounted, b.discount_amount, b.coupon_orders,
            b.points_paid, b.refunds, b.refund_amount)


def _seen(act: Any) -> tuple[Any, ...]:
    return act.first_seen, act.last_seen


def _points(act: Any) -> tuple[Any, ...]:
    p = act.points
    return p.earned, p.redeemed, p.redemptions, p.first_redemption_at, p.last_redemption_at


def _engagement(act: Any) -> tuple[Any, ...]:
    e = act.engagement
    return (e.emails_delivered, e.email_opens, e.email_clicks, e.app_opens, e.last_app_open, e.reviews, e.ratings,
            e.rating_total)


# The raw aggregates read from each profile, by group: their names, and how to read them at once.
GROUPS: dict[str, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {
    "purchases": (("orders", "spend", "first_at", "last_at", "discounted", "discount_amount", "coupon_orders",
                   "points_paid", "refunds", "refund_amount"), _purchases),
    "seen": (("first_seen", "last_seen"), _seen),
    "points": (("earned", "redeemed", "redemptions", "first_redemption", "last_redemption"), _points),
    "engagement": (("delivered", "opens", "clicks", "app_opens", "last_app_open", "reviews", "ratings",
                    "rating_total"), _engagement),
}
LISTS: dict[str, Callable[[Any], list[int]]] = {
    "recent": lambda a: a.purchases.recent, "recent_app_opens": lambda a: a.engagement.recent_app_opens,
}
CHUNK = 1 << 16
Ints = NDArray[np.int64]


class _IntChunks:
    """Integers gathered as Python references (fast to extend), turned into int64 arrays by chunks
    so that a million members never hold tens of millions of Python objects."""

    __slots__ = ("chunks", "pending")

    def __init__(self) -> None:
        self.pending: list[int] = []
        self.chunks: list[Ints] = []

    def extend(self, values: Any) -> None:
        self.pending.extend(values)
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.chunks.append(np.array(self.pending, dtype=np.int64))
            self.pending = []

    def array(self) -> Ints:
        self.flush()
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int64)


class _Timestamps:
    """A list of timestamps per member (orders, app sessions): how many each, and all of them."""

    __slots__ = ("counts", "read", "times")

    def __init__(self, read: Callable[[Any], list[int]]) -> None:
        self.read = read
        self.counts: list[int] = []
        self.times = _IntChunks()

    def add(self, act: Any) -> None:
        found = self.read(act)
        self.counts.append(len(found))
        if found:
            self.times.extend(found)

    def arrays(self) -> tuple[Ints, Ints]:
        """(owner row, timestamp) of every timestamp."""
        owners = np.repeat(np.arange(len(self.counts), dtype=np.int64), self.counts)
        return owners, self.times.array()


class _Decayed:
    """A decayed map (``Decayed.sums``) per member: keys as codes, era sums as integers."""

    __slots__ = ("counts", "eras", "field", "key_codes", "keys", "lengths", "section")

    def __init__(self, source: str) -> None:
        self.section, self.field = source.split(".")
        self.counts: list[int] = []  # keys per member
        self.keys: dict[str, int] = {}  # key -> code, in order of first sight
        self.key_codes: list[int] = []
        self.lengths: list[int] = []  # eras per key
        self.eras = _IntChunks()

    def add(self, act: Any) -> None:
        sums = getattr(getattr(act, self.section), self.field).sums
        self.counts.append(len(sums))
        if sums:
            code, keys = self.keys.setdefault, self.keys
            self.key_codes.extend([code(key, len(keys)) for key in sums])
            found = sums.values()
            self.lengths.extend(map(len, found))
            self.eras.extend(chain.from_iterable(found))

    def arrays(self) -> tuple[Ints, NDArray[np.int32], dict[str, int], NDArray[np.float64]]:
        """(owner row, key code, vocabulary, era sums as a keys x eras matrix) with codes in key order."""
        vocabulary = {name: index for index, name in enumerate(sorted(self.keys))}
        remap = np.zeros(len(self.keys), dtype=np.int32)
        for name, first_seen in self.keys.items():
            remap[first_seen] = vocabulary[name]
        codes = remap[np.asarray(self.key_codes, dtype=np.int64)] if self.key_codes else np.zeros(0, np.int32)
        owners = np.repeat(np.arange(len(self.counts), dtype=np.int64), self.counts)
        lengths = np.asarray(self.lengths, dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        key_of = np.repeat(np.arange(lengths.size), lengths)
        by_era = np.zeros((lengths.size, DECAY_ERAS_KEPT))
        by_era[key_of, np.arange(key_of.size) - starts[key_of]] = self.eras.array().astype(np.float64)
        return owners, codes, vocabulary, by_era


def _needs(name: str) -> set[str]:
    """The raw groups and lists one scalar signal is computed from."""
    section = name.split(".")[0]
    needs = {"purchase": {"purchases"}, "monetary": {"purchases"}, "price_sensitivity": {"purchases"},
             "redemption": {"points", "purchases"}, "engagement": {"engagement"},
             "lifecycle": {"purchases", "seen"}}.get(section, {"seen"})
    if name.startswith("purchase.orders_"):
        needs = needs | {"recent"}
    if name == "engagement.app_sessions_30d":
        needs = needs | {"recent_app_opens"}
    return needs


def vectorised(path: FieldPath) -> bool:
    """Whether :class:`SignalGatherer` computes ``path`` for all members at once."""
    if path.namespace != "signals":
        return False
    if path.keys[:2] in MAPS:
        return True
    return path.aggregate is None and ".".join(path.keys) in SCALARS


class SignalGatherer:
    """Collects the raw aggregates of members one by one, then computes signal columns at once."""

    def __init__(self, paths: list[FieldPath]) -> None:
        self.paths = paths
        self.maps = sorted({path.keys[:2] for path in paths if path.keys[:2] in MAPS})
        needs: set[str] = set().union(*(_needs(".".join(p.keys)) for p in paths if p.keys[:2] not in MAPS))
        self.groups: dict[str, tuple[Callable[[Any], tuple[Any, ...]], list[tuple[Any, ...]]]] = {
            name: (GROUPS[name][1], []) for name in GROUPS if name in needs}
        self.lists = {name: _Timestamps(LISTS[name]) for name in LISTS if name in needs}
        self.entries = {key: _Decayed(MAPS[key]) for key in self.maps}
        self.as_of: int | None = None
        self.settings: SignalSettings | None = None
        self.size = 0

    def add(self, facts: MemberFacts) -> None:
        if self.as_of is None:
            self.as_of, self.settings = facts.as_of, facts.settings or SignalSettings()
        elif facts.as_of != self.as_of or (facts.settings or SignalSettings()) != self.settings:
            raise InvalidInput("as_of", "a member table is built for one instant and one set of signal settings")
        act = facts.profile.activity
        for read, rows in self.groups.values():
            rows.append(read(act))
        for timestamps in self.lists.values():
            timestamps.add(act)
        for decayed in self.entries.values():
            decayed.add(act)
        self.size += 1

    def columns(self) -> dict[FieldPath, Column]:
        """The column of every gathered path."""
        if self.as_of is None or self.settings is None:
            return {path: Column(0) for path in self.paths}
        scalars = _Scalars(self, self.as_of, self.settings)
        maps = {key: _Shares(self, key, self.settings.top) for key in self.maps}
        return {path: maps[path.keys[:2]].column(path) if path.keys[:2] in maps else scalars.column(path)
                for path in self.paths}


def _ratio(numerator: Floats, denominator: Floats) -> Floats:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator != 0, numerator / denominator, np.nan)


def _days(later: int, earlier: Floats) -> Floats:
    return np.maximum(later - earlier, 0) / DAY_MS


class _Scalars:
    """The per-member signals, computed as :mod:`loyalty_cdp.core.signals` computes them."""

    def __init__(self, raw: SignalGatherer, as_of: int, settings: SignalSettings) -> None:
        self.raw: dict[str, Floats] = {}
        for group, (_, rows) in raw.groups.items():
            table = np.array(rows, dtype=np.float64).reshape(raw.size, len(GROUPS[group][0]))  # None -> NaN
            self.raw.update({name: table[:, index] for index, name in enumerate(GROUPS[group][0])})
        self.lists = {name: timestamps.arrays() for name, timestamps in raw.lists.items()}
        self.as_of, self.settings, self.size = as_of, settings, raw.size

    def _within(self, name: str, days: int) -> Floats:
        rows, times = self.lists[name]
        inside = (times > self.as_of - days * DAY_MS) & (times <= self.as_of)
        return np.bincount(rows[inside], minlength=self.size).astype(np.float64)

    def _interval(self, count: Floats, first: Floats, last: Floats) -> Floats:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count >= 2, (last - first) / (count - 1) / DAY_MS, np.nan)

    def value(self, name: str) -> Floats:
        r, as_of = self.raw, self.as_of
        if name in ("first_seen", "last_seen"):
            return r[name]
        section, field = name.split(".")
        table: dict[str, Callable[[], Floats]] = {
            "purchase.orders": lambda: r["orders"],
            "purchase.mean_interval_days": lambda: self._interval(r["orders"], r["first_at"], r["last_at"]),
            "purchase.days_since_last_order": lambda: _days(as_of, r["last_at"]),
            "purchase.first_order_at": lambda: r["first_at"], "purchase.last_order_at": lambda: r["last_at"],
            "monetary.total_spend": lambda: r["spend"] / MONEY_SCALE, "monetary.refunds": lambda: r["refunds"],
            "monetary.refunded": lambda: r["refund_amount"] / MONEY_SCALE,
            "monetary.net_spend": lambda: (r["spend"] - r["refund_amount"]) / MONEY_SCALE,
            "monetary.average_order_value": lambda: _ratio(r["spend"], r["orders"]) / MONEY_SCALE,
            "price_sensitivity.discounted_order_share": lambda: _ratio(r["discounted"], r["orders"]),
            "price_sensitivity.coupon_order_share": lambda: _ratio(r["coupon_orders"], r["orders"]),
            "price_sensitivity.discount_rate": lambda: _ratio(r["discount_amount"],
                                                              r["spend"] + r["discount_amount"]),
            "redemption.points_earned": lambda: r["earned"], "redemption.points_redeemed": lambda: r["redeemed"],
            "redemption.redemption_rate": lambda: _ratio(r["redeemed"], r["earned"]),
            "redemption.redemptions": lambda: r["redemptions"],
            "redemption.mean_points_per_redemption": lambda: _ratio(r["redeemed"], r["redemptions"]),
            "redemption.days_since_last_redemption": lambda: _days(as_of, r["last_redemption"]),
            "redemption.mean_days_between_redemptions": lambda: self._interval(
                r["redemptions"], r["first_redemption"], r["last_redemption"]),
            "redemption.points_paid_order_share": lambda: _ratio(r["points_paid"], r["orders"]),
            "engagement.emails_delivered": lambda: r["delivered"], "engagement.email_opens": lambda: r["opens"],
            "engagement.email_clicks": lambda: r["clicks"],
            "engagement.open_rate": lambda: np.minimum(_ratio(r["opens"], r["delivered"]), 1.0),
            "engagement.click_to_open_rate": lambda: np.minimum(_ratio(r["clicks"], r["opens"]), 1.0),
            "engagement.app_sessions": lambda: r["app_opens"],
            "engagement.app_sessions_30d": lambda: self._within("recent_app_opens", APP_WINDOW_DAYS),
            "engagement.days_since_last_app_session": lambda: _days(as_of, r["last_app_open"]),
            "engagement.reviews": lambda: r["reviews"],
            "engagement.mean_rating": lambda: _ratio(r["rating_total"], r["ratings"]) / MONEY_SCALE,
        }
        for days in ORDER_WINDOWS_DAYS:
            table[f"purchase.orders_{days}d"] = lambda days=days: self._within("recent", days)  # type: ignore[misc]
        return table[f"{section}.{field}"]()

    def _lifecycle(self) -> tuple[NDArray[np.int32], Floats, NDArray[np.int32]]:
        """(stage code, cadence days, cadence basis code) as ``signals.lifecycle`` decides them."""
        r, s = self.raw, self.settings
        orders, first, last = r["orders"], r["first_at"], r["last_at"]
        since_first = _days(self.as_of, np.where(orders > 0, first, r["first_seen"]))
        new = since_first <= s.new_days
        prospect = ~new & ((orders == 0) | np.isnan(last) | np.isnan(first))
        with np.errstate(invalid="ignore", divide="ignore"):
            own = (last - first) / (orders - 1) / DAY_MS
        cadence = np.maximum(np.where(orders >= 2, own, s.fallback_interval_days), s.min_interval_days)
        since_last = _days(self.as_of, last)
        with np.errstate(invalid="ignore"):
            stage = np.where(since_last > s.lapsed_factor * cadence, STAGES["lapsed"],
                             np.where(since_last > s.at_risk_factor * cadence, STAGES["at_risk"], STAGES["active"]))
        judged = ~new & ~prospect
        stage = np.where(new, STAGES["new"], np.where(prospect, STAGES["prospect"], stage)).astype(np.int32)
        basis = np.where(judged, np.where(orders >= 2, BASES["own"], BASES["fallback"]), -1).astype(np.int32)
        return stage, np.where(judged, cadence, np.nan), basis

    def column(self, path: FieldPath) -> Column:
        name = ".".join(path.keys)
        if name.startswith("lifecycle."):
            stage, cadence, basis = self._lifecycle()
            if name == "lifecycle.stage":
                return Column(self.size, labels=stage, vocabulary=dict(STAGES))
            if name == "lifecycle.cadence_basis":
                return Column(self.size, labels=basis, vocabulary=dict(BASES))
            return Column(self.size, numbers=cadence)
        return Column(self.size, numbers=self.value(name))


class _Shares:
    """Shares of a decayed map, ranked and cut to the top keys, as ``signals.shares`` makes them."""

    def __init__(self, raw: SignalGatherer, key: tuple[str, ...], top: int) -> None:
        rows, codes, self.vocabulary, by_era = raw.entries[key].arrays()
        self.size = raw.size
        value = np.zeros(rows.size)
        for index in range(DECAY_ERAS_KEPT):  # era by era, as signals._relative sums them
            value = value + by_era[:, index] * 2.0 ** (-DECAY_ERA_HALF_LIVES * index)
        total = np.bincount(rows, weights=value, minlength=self.size)  # key by key, in the profile's order
        order = np.lexsort((codes, -value, rows))
        rows, codes, value = rows[order], codes[order], value[order]
        rank = np.arange(rows.size) - np.searchsorted(rows, rows, side="left")
        kept = (rank < top) & (total[rows] != 0)
        self.rows, self.codes, self.rank = rows[kept], codes[kept], rank[kept]
        self.shares = value[kept] / total[self.rows]

    def column(self, path: FieldPath) -> Column:
        below = path.keys[2:]
        size = self.size
        if below:
            numbers = np.full(size, np.nan)
            if path.aggregate is not None or len(below) > 1:
                return Column(size, numbers=numbers)
            code = self.vocabulary.get(below[0])
            if code is not None:
                hit = self.codes == code
                numbers[self.rows[hit]] = self.shares[hit]
            return Column(size, numbers=numbers)
        if path.aggregate is None:
            return Column(size, present=np.ones(size, dtype=np.bool_), vocabulary=self.vocabulary,
                          item_rows=self.rows, item_codes=self.codes)
        first = self.rank == 0
        if path.aggregate == "@count":
            return Column(size, numbers=np.bincount(self.rows, minlength=size).astype(np.float64))
        if path.aggregate == "@top":
            labels = np.full(size, -1, dtype=np.int32)
            labels[self.rows[first]] = self.codes[first]
            return Column(size, labels=labels, vocabulary=self.vocabulary)
        numbers = np.full(size, np.nan)
        if path.aggregate == "@max":
            numbers[self.rows[first]] = self.shares[first]
        elif path.aggregate == "@min":
            last = np.ones(self.rows.size, dtype=np.bool_)
            last[:-1] = self.rows[1:] != self.rows[:-1]
            numbers[self.rows[last]] = self.shares[last]
        else:
            sums = np.bincount(self.rows, weights=self.shares, minlength=size)
            numbers = np.where(np.bincount(self.rows, minlength=size) > 0, sums, np.nan)
        return Column(size, numbers=numbers)
