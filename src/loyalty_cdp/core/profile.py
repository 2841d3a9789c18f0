"""The member profile as a deterministic fold of the member's events (pure: no I/O, no clock).

``fold(state, events, member)`` returns the new :class:`Profile`. Replaying the same
events in any order, in any batches, or with duplicates gives the same profile as one
replay sorted by (timestamp, message_id), because every piece of state is either

* a commutative aggregate (counts, integer sums, min/max timestamps),
* last-writer-wins on event time, ties broken by message id (traits, wishlist items),
* an exponentially time-decayed sum kept exactly (:class:`Decayed`: each event adds an
  integer term computed from its own timestamp, summed per era), or
* a window of timestamps pruned against the latest timestamp of its own kind,

and message ids already folded are skipped (``seen``: sorted 64-bit hashes). For the
same reasons two profiles of disjoint events combine exactly (:func:`merge_profiles`),
which is how a caller handles an identity merge without re-reading the log.
Definitions of the derived signals are in ``docs/signals.md``.
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from hashlib import blake2b
from typing import Any

import msgspec

from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.core.identity import Member
from loyalty_cdp.errors import Conflict, InvalidInput

DAY_MS = 86_400_000
MONEY_SCALE = 1000  # amounts are kept as integer thousandths of the currency unit
MAX_AMOUNT = 1e9  # larger (or non-finite) amounts and line values are bad data
DECAY_FRACTION_BITS = 16
DECAY_ERA_HALF_LIVES = 4  # an era spans four half-lives
DECAY_ERAS_KEPT = 4  # weight older than three whole eras (>= 12 half-lives) is dropped
DECAY_CAP = (1 << 62) - 1  # per-era sums saturate here, so they always fit 64 bits
AFFINITY_HALF_LIFE_DAYS = 90
BROWSE_HALF_LIFE_DAYS = 30
ORDER_WINDOW_DAYS = 365
APP_WINDOW_DAYS = 30
WISHLIST_WINDOW_DAYS = 365
RECENT_SEARCHES = 10
MAX_KEY_CHARS = 64


class Trait(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One identify trait: its value, the event time it was set and the event that set it."""

    value: Any
    updated_at: int
    message_id: str


class ChannelActivity(msgspec.Struct, array_like=True, gc=False):
    first_seen: int
    last_seen: int
    events: int = 0
    orders: int = 0
    spend: int = 0


class WishlistItem(msgspec.Struct, frozen=True, gc=False, array_like=True, omit_defaults=True):
    """The latest wishlist action on a product; ``price`` is the price when it was added."""

    updated_at: int
    message_id: str
    on_list: bool
    price: float | None = None
    name: str | None = None
    category: str | None = None
    brand: str | None = None


class Decayed(msgspec.Struct, gc=False, array_like=True):
    """Exponentially time-decayed weights per key, kept exactly and order-independently.

    Time is cut into eras of ``DECAY_ERA_HALF_LIVES`` half-lives since 1970. An event of
    weight ``w`` at ``t`` in era ``e`` (starting at ``s``) adds the integer
    ``floor(w * 2**((t - s) / half_life + 16))`` to ``sums[key][era - e]``: a term that
    depends on that event alone, added with integer sums, so the order of events cannot
    matter. Only the ``DECAY_ERAS_KEPT`` latest eras are kept (``era`` is the latest era
    seen). :func:`loyalty_cdp.core.signals.decayed_values` evaluates the sums at a time.
    """

    half_life_days: int
    era: int | None = None
    sums: dict[str, tuple[int, ...]] = msgspec.field(default_factory=dict)

    def add(self, key: str, weight: float, timestamp: int) -> None:
        if weight <= 0:
            return
        half_life_ms = self.half_life_days * DAY_MS
        era = timestamp // (DECAY_ERA_HALF_LIVES * half_life_ms)
        latest = self.era
        if latest is None or era > latest:
            self._advance(era)
            latest = era
        index = latest - era
        if index >= DECAY_ERAS_KEPT:
            return
        start = era * DECAY_ERA_HALF_LIVES * half_life_ms
        term = int(weight * 2.0 ** ((timestamp - start) / half_life_ms + DECAY_FRACTION_BITS))
        if term:
            self.sums[key] = _plus(self.sums.get(key, ()), index, term)

    def _advance(self, era: int) -> None:
        shift = 0 if self.era is None else era - self.era
        self.era = era
        if shift:
            for key, eras in list(self.sums.items()):
                shifted = ((0,) * min(shift, DECAY_ERAS_KEPT) + eras)[:DECAY_ERAS_KEPT]
                while shifted and not shifted[-1]:
                    shifted = shifted[:-1]
                if shifted:
                    self.sums[key] = shifted
                else:
                    del self.sums[key]

    def merge(self, other: Decayed) -> None:
        """Add ``other``'s weights (same half-life) as if its events had been added here."""
        if other.era is None:
            return
        latest = self.era
        if latest is None or other.era > latest:
            self._advance(other.era)
            latest = other.era
        offset = latest - other.era
        for key, theirs in other.sums.items():
            for index, value in enumerate(theirs[: max(DECAY_ERAS_KEPT - offset, 0)]):
                if value:
                    self.sums[key] = _plus(self.sums.get(key, ()), index + offset, value)


def _plus(eras: tuple[int, ...], index: int, value: int) -> tuple[int, ...]:
    """``eras`` with ``value`` added at ``index`` (saturating at ``DECAY_CAP``)."""
    padded = eras + (0,) * (index + 1 - len(eras))
    return (*padded[:index], min(padded[index] + value, DECAY_CAP), *padded[index + 1 :])


def _affinity() -> Decayed:
    return Decayed(AFFINITY_HALF_LIFE_DAYS)


def _interest() -> Decayed:
    return Decayed(BROWSE_HALF_LIFE_DAYS)


class Purchases(msgspec.Struct, kw_only=True, gc=False, array_like=True, omit_defaults=True):
    orders: int = 0
    spend: int = 0
    first_at: int | None = None
    last_at: int | None = None
    recent: list[int] = msgspec.field(default_factory=list)
    discounted: int = 0
    discount_amount: int = 0
    coupon_orders: int = 0
    points_paid: int = 0
    refunds: int = 0
    refund_amount: int = 0
    categories: Decayed = msgspec.field(default_factory=_affinity)
    brands: Decayed = msgspec.field(default_factory=_affinity)


class Browse(msgspec.Struct, kw_only=True, gc=False, array_like=True, omit_defaults=True):
    product_views: int = 0
    categories: Decayed = msgspec.field(default_factory=_interest)
    searches: int = 0
    recent_searches: dict[str, int] = msgspec.field(default_factory=dict)


class Engagement(msgspec.Struct, kw_only=True, gc=False, array_like=True, omit_defaults=True):
    emails_delivered: int = 0
    email_opens: int = 0
    email_clicks: int = 0
    app_opens: int = 0
    last_app_open: int | None = None
    recent_app_opens: list[int] = msgspec.field(default_factory=list)
    reviews: int = 0
    ratings: int = 0
    rating_total: int = 0


class PointsActivity(msgspec.Struct, kw_only=True, gc=False, array_like=True, omit_defaults=True):
    earned: int = 0
    redeemed: int = 0
    redemptions: int = 0
    first_redemption_at: int | None = None
    last_redemption_at: int | None = None


class Activity(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """The raw aggregates the signals are computed from (see ``docs/signals.md``)."""

    events: int = 0
    first_seen: int | None = None
    last_seen: int | None = None
    channels: dict[str, ChannelActivity] = msgspec.field(default_factory=dict)
    purchases: Purchases = msgspec.field(default_factory=Purchases)
    browse: Browse = msgspec.field(default_factory=Browse)
    engagement: Engagement = msgspec.field(default_factory=Engagement)
    points: PointsActivity = msgspec.field(default_factory=PointsActivity)
    wishlist: dict[str, WishlistItem] = msgspec.field(default_factory=dict)


class Profile(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """One member's unified profile. ``loyalty``, ``scores``, ``segments``, ``windows`` and
    ``consent`` belong to the loyalty engine, the scoring jobs, segmentation and privacy: the
    fold carries them over untouched. ``windows`` holds the event times that segment count
    conditions need and the fold does not keep (``EventWindows.times``, see
    :mod:`loyalty_cdp.core.segments.counts`)."""

    member_id: str
    user_id: str | None = None
    identities: dict[str, list[str]] = msgspec.field(default_factory=dict)
    traits: dict[str, Trait] = msgspec.field(default_factory=dict)
    activity: Activity = msgspec.field(default_factory=Activity)
    seen: bytes = b""
    loyalty: dict[str, Any] = msgspec.field(default_factory=dict)
    scores: dict[str, Any] = msgspec.field(default_factory=dict)
    segments: dict[str, Any] = msgspec.field(default_factory=dict)
    windows: dict[str, list[int]] = msgspec.field(default_factory=dict)
    consent: dict[str, Any] = msgspec.field(default_factory=dict)


def _copy_decayed(decayed: Decayed) -> Decayed:
    return Decayed(decayed.half_life_days, decayed.era, dict(decayed.sums))


def _copy_activity(act: Activity) -> Activity:
    """A copy the fold may change without touching the input profile (frozen parts shared)."""
    replace = msgspec.structs.replace
    buy, browse, engagement = act.purchases, act.browse, act.engagement
    return replace(
        act,
        channels={name: replace(stats) for name, stats in act.channels.items()},
        purchases=replace(
            buy,
            recent=list(buy.recent),
            categories=_copy_decayed(buy.categories),
            brands=_copy_decayed(buy.brands),
        ),
        browse=replace(
            browse,
            categories=_copy_decayed(browse.categories),
            recent_searches=dict(browse.recent_searches),
        ),
        engagement=replace(engagement, recent_app_opens=list(engagement.recent_app_opens)),
        points=replace(act.points),
        wishlist=dict(act.wishlist),
    )


def message_hash(message_id: str) -> int:
    """The 64-bit hash under which a folded message id is remembered."""
    return int.from_bytes(blake2b(message_id.encode(), digest_size=8).digest(), "little")


def caller_of(profile: Profile) -> dict[str, str]:
    """Who an event about this member is from, as a Segment call says it: ``userId``, or the
    member's first ``anonymousId`` when they have not logged in (a made-up user id would
    create a member of its own)."""
    if profile.user_id is not None:
        return {"userId": profile.user_id}
    anonymous = profile.identities.get("anonymous_id")
    return {"anonymousId": anonymous[0] if anonymous else profile.member_id}


def unseen(state: Profile | None, events: Sequence[DecodedEvent]) -> list[DecodedEvent]:
    """The events of ``events`` that ``state`` has not folded yet (each once), in their order."""
    seen = _unpack(state.seen) if state is not None else array("Q")
    count = len(seen)
    fresh: list[DecodedEvent] = []
    taken: set[int] = set()
    for event in events:
        digest = message_hash(event.message_id)
        index = bisect_left(seen, digest)
        if digest in taken or (index < count and seen[index] == digest):
            continue
        taken.add(digest)
        fresh.append(event)
    return fresh


def _unpack(blob: bytes) -> array[int]:
    hashes = array("Q")
    hashes.frombytes(blob)
    if sys.byteorder == "big":
        hashes.byteswap()
    return hashes


def _pack(hashes: array[int]) -> bytes:
    if sys.byteorder == "big":
        hashes = array("Q", hashes)
        hashes.byteswap()
    return hashes.tobytes()


def _insert_all(hashes: array[int], new: Iterable[int]) -> array[int]:
    """``hashes`` (sorted) with ``new`` added, still sorted."""
    added = sorted(new)
    if len(added) > 64:
        return array("Q", sorted([*hashes, *added]))
    for value in added:
        hashes.insert(bisect_left(hashes, value), value)
    return hashes


def amount(value: Any) -> float | None:
    """A JSON value as a finite amount (numbers and numeric strings), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) and abs(number) <= MAX_AMOUNT else None


def _money(value: Any) -> int | None:
    number = amount(value)
    return None if number is None else round(number * MONEY_SCALE)


def _label(value: Any) -> str | None:
    """A category, brand or query as a bounded key with its white space collapsed."""
    return _collapse(value) if isinstance(value, str) else None


@lru_cache(maxsize=1 << 14)
def _collapse(text: str) -> str | None:
    return " ".join(text.split())[:MAX_KEY_CHARS] or None


def _storable(value: Any) -> Any:
    """A trait value that every msgspec codec can store: integers beyond 64 bits (which
    JSON allows but MessagePack cannot hold) become their decimal text."""
    if isinstance(value, int) and not -(1 << 63) <= value < (1 << 64):
        return str(value)
    if isinstance(value, dict):
        return {key: _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def _lww_wins(updated_at: int, message_id: str, current: Trait | WishlistItem | None) -> bool:
    if current is None:
        return True
    return (updated_at, message_id) > (current.updated_at, current.message_id)


# --- event handlers: each adds one event's contribution to a working Activity ----------


def _line_value(line: dict[str, Any]) -> int:
    """Price times quantity (1 when absent) of one product line, in thousandths."""
    price = amount(line.get("price"))
    if price is None:
        return 0
    quantity = amount(line.get("quantity"))
    value = price * (1.0 if quantity is None else quantity)
    return round(value * MONEY_SCALE) if abs(value) <= MAX_AMOUNT else 0


def _order_value(props: dict[str, Any], lines: list[Any]) -> int:
    """``total``, else ``revenue``, else the sum of the product lines, in thousandths."""
    value = _money(props.get("total"))
    if value is None:
        value = _money(props.get("revenue"))
    if value is None:
        value = sum(_line_value(line) for line in lines if isinstance(line, dict))
    return value


def _order(act: Activity, event: DecodedEvent, props: dict[str, Any], channel: str) -> None:
    buy = act.purchases
    at = event.timestamp
    products = props.get("products")
    lines: list[Any] = products if isinstance(products, list) else []
    total = _order_value(props, lines)
    buy.orders += 1
    buy.spend += total
    if buy.first_at is None or at < buy.first_at:
        buy.first_at = at
    if buy.last_at is None or at > buy.last_at:
        buy.last_at = at
    insort(buy.recent, at)
    discount = _money(props.get("discount")) or 0
    coupon = props.get("coupon")
    has_coupon = isinstance(coupon, str) and coupon.strip() != ""
    if discount > 0 or has_coupon:
        buy.discounted += 1
        buy.discount_amount += max(discount, 0)
    buy.coupon_orders += has_coupon
    payment = props.get("payment_method")
    points_paid = (amount(props.get("points_redeemed")) or 0) > 0
    if points_paid or (isinstance(payment, str) and payment.strip().lower() == "points"):
        buy.points_paid += 1
    stats = act.channels[channel]
    stats.orders += 1
    stats.spend += total
    for line in lines:
        if not isinstance(line, dict):
            continue
        category = _label(line.get("category"))
        brand = _label(line.get("brand"))
        if category is None and brand is None:
            continue
        value = _line_value(line)
        if category is not None:
            buy.categories.add(category, value, at)
        if brand is not None:
            buy.brands.add(brand, value, at)


def _refund(act: Activity, event: DecodedEvent, props: dict[str, Any], channel: str) -> None:
    products = props.get("products")
    refunded = _order_value(props, products if isinstance(products, list) else [])
    act.purchases.refunds += 1
    act.purchases.refund_amount += abs(refunded)


def _view(act: Activity, event: DecodedEvent, props: dict[str, Any], channel: str) -> None:
    if event.type == "track":
        act.browse.product_views += 1
    category = _label(props.get("category"))
    if category is not None:
        act.browse.categories.add(category, MONEY_SCALE, event.timestamp)


def _search(act: Activity, event: DecodedEvent, props: dict[str, Any], channel: str) -> None:
    act.browse.searches += 1
    query = _label(props.get("query"))
    if query is not None:
        query = query.lower()
        recent = act.browse.recent_searches
        if query not in recent or recent[query] < event.timestamp:
            recent[query] = event.timestamp


def _wishlist(on_list: bool) -> Callable[[Activity, DecodedEvent, dict[str, Any], str], None]:
    def handle(act: Activity, event: DecodedEvent, props: dict[str, Any], channel: str) -> None:
        product = props.get("product_id") or props.get("sku")
        if not isinstance(product, (str, int)) or isinstance(product, bool):
            return
        key = str(product)[:MAX_KEY_CHARS]
        if not _lww_wins(event.timestamp, event.message_id, act.wishlist.get(key)):
            return
        act.wishlist[key] = WishlistItem(
            updated_at=event.timestamp,
            message_id=event.message_id,
            on_list=on_list,
            price=amount(props.get("price")) if on_list else None,
            name=_label(props.get("name")) if on_list else None,
            category=_label(props.get("category")) if on_list else None,
            brand=_label(props.get("brand")) if on_list else None,
        )

    return handle


def _counter(section: str, field: str) -> Callable[[Activity, DecodedEvent, dict[str, Any], str], None]:
    def handle(act: Activity, event: DecodedEvent, props: dict[str, Any], channel: str) -> None:
        part = getattr(act, section)
        setattr(part, field, getattr(part, field) + 1)

    return handle


def _app_open(act: Activity, event: DecodedEvent, props: dict[str, Any], channel: str) -> None:
    engagement = act.engagement
    engagement.app_opens += 1
    last = engagement.last_app_open
    engagement.last_app_open = event.timestamp if last is None else max(last, event.timestamp)
    insort(engagement.recent_app_opens, event.timestamp)


def _review(act: Activity, event: DecodedEvent, props: dict[str, Any], channel: str) -> None:
    engagement = act.engagement
    engagement.reviews += 1
    rating = _money(props.get("rating"))
    if rating is not None:
        engagement.ratings += 1
        engagement.rating_total += rating


def _points(props: dict[str, Any]) -> int:
    points = amount(props.get("points"))
    return 0 if points is None else abs(round(points))


def _earned(act: Activity, event: DecodedEvent, props: dict[str, Any], channel: str) -> None:
    act.points.earned += _points(props)


def _redeemed(act: Activity, event: DecodedEvent, props: dict[str, Any], channel: str) -> None:
    points = act.points
    points.redemptions += 1
    points.redeemed += _points(props)
    at = event.timestamp
    first, last = points.first_redemption_at, points.last_redemption_at
    points.first_redemption_at = at if first is None else min(first, at)
    points.last_redemption_at = at if last is None else max(last, at)


TRACK_HANDLERS: dict[str, Callable[[Activity, DecodedEvent, dict[str, Any], str], None]] = {
    "Order Completed": _order,
    "Order Refunded": _refund,
    "Product Viewed": _view,
    "Product List Viewed": _view,
    "Products Searched": _search,
    "Product Added to Wishlist": _wishlist(True),
    "Product Removed from Wishlist": _wishlist(False),
    "Email Delivered": _counter("engagement", "emails_delivered"),
    "Email Opened": _counter("engagement", "email_opens"),
    "Email Link Clicked": _counter("engagement", "email_clicks"),
    "Application Opened": _app_open,
    "Product Reviewed": _review,
    "Points Earned": _earned,
    "Points Redeemed": _redeemed,
}


def _apply(act: Activity, traits: dict[str, Trait], event: DecodedEvent) -> None:
    at = event.timestamp
    act.events += 1
    if act.first_seen is None or at < act.first_seen:
        act.first_seen = at
    if act.last_seen is None or at > act.last_seen:
        act.last_seen = at
    channel = (event.channel or "unknown")[:MAX_KEY_CHARS]
    stats = act.channels.get(channel)
    if stats is None:
        act.channels[channel] = stats = ChannelActivity(at, at)
    elif at < stats.first_seen:
        stats.first_seen = at
    elif at > stats.last_seen:
        stats.last_seen = at
    stats.events += 1
    kind = event.type
    if kind == "track":
        handler = TRACK_HANDLERS.get(event.event or "")
        if handler is not None:
            handler(act, event, event.properties, channel)
    elif kind == "identify":
        for key, value in event.traits.items():
            if _lww_wins(at, event.message_id, traits.get(key)):
                traits[key] = Trait(_storable(value), at, event.message_id)
    elif kind in ("page", "screen"):
        _view(act, event, event.properties, channel)


def _prune(act: Activity) -> None:
    """Drop what has left its window; each window ends at the latest time of its own kind."""
    buy = act.purchases
    if buy.last_at is not None:
        del buy.recent[: bisect_right(buy.recent, buy.last_at - ORDER_WINDOW_DAYS * DAY_MS)]
    engagement = act.engagement
    if engagement.last_app_open is not None:
        start = engagement.last_app_open - APP_WINDOW_DAYS * DAY_MS
        del engagement.recent_app_opens[: bisect_right(engagement.recent_app_opens, start)]
    searches = act.browse.recent_searches
    if len(searches) > RECENT_SEARCHES:
        by_recency = sorted(searches.items(), key=lambda item: (item[1], item[0]))
        act.browse.recent_searches = dict(by_recency[-RECENT_SEARCHES:])
    if act.wishlist:
        start = (act.last_seen or 0) - WISHLIST_WINDOW_DAYS * DAY_MS
        if any(item.updated_at <= start for item in act.wishlist.values()):
            act.wishlist = {k: v for k, v in act.wishlist.items() if v.updated_at > start}


def fold(
    state: Profile | None, events: Sequence[DecodedEvent], member: Member | None = None
) -> Profile:
    """The profile after ``events``, starting from ``state`` (None: a new member).

    ``member`` (from the identity graph) sets ``member_id``, ``user_id`` and
    ``identities``; it is required for a new member. Events already folded are skipped.
    """
    if state is None:
        if member is None:
            raise InvalidInput("member", "a new profile needs its member from the identity graph")
        state = Profile(member_id=member.id)
    act = _copy_activity(state.activity)
    traits = dict(state.traits)
    old_seen = _unpack(state.seen)
    old_count = len(old_seen)
    new_seen: set[int] = set()
    for event in events:
        digest = message_hash(event.message_id)
        if digest in new_seen:
            continue
        index = bisect_left(old_seen, digest)
        if index < old_count and old_seen[index] == digest:
            continue
        new_seen.add(digest)
        _apply(act, traits, event)
    if not new_seen:
        return _with_member(state, member)
    _prune(act)
    seen = _pack(_insert_all(old_seen, new_seen))
    return _with_member(msgspec.structs.replace(state, traits=traits, activity=act, seen=seen), member)


def _with_member(profile: Profile, member: Member | None) -> Profile:
    if member is None or (
        member.id == profile.member_id and member.identities == profile.identities
    ):
        return profile
    return msgspec.structs.replace(
        profile,
        member_id=member.id,
        user_id=member.user_id,
        identities={kind: list(values) for kind, values in member.identities.items()},
    )


def merge_profiles(first: Profile, second: Profile, member: Member) -> Profile:
    """The profile of ``member`` after an identity merge: exactly what folding the events of
    both profiles would give. ``loyalty``, ``scores``, ``segments`` and ``consent`` are
    taken from ``first`` (their owners recompute them). Raises :class:`Conflict` when the
    two profiles share an event, which a caller can only settle by re-folding from the log.
    """
    first_seen, second_seen = _unpack(first.seen), _unpack(second.seen)
    shared = set(first_seen).intersection(second_seen)
    if shared:
        raise Conflict(
            f"profiles {first.member_id!r} and {second.member_id!r} share {len(shared)} "
            "events; rebuild the member from the event log instead"
        )
    traits = dict(first.traits)
    for key, trait in second.traits.items():
        if _lww_wins(trait.updated_at, trait.message_id, traits.get(key)):
            traits[key] = trait
    act = _copy_activity(first.activity)
    _merge_activity(act, second.activity)
    _prune(act)
    profile = msgspec.structs.replace(
        first, traits=traits, activity=act, seen=_pack(_insert_all(first_seen, second_seen))
    )
    return _with_member(profile, member)


def _earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _add_fields(target: msgspec.Struct, other: msgspec.Struct, fields: Iterable[str]) -> None:
    for name in fields:
        setattr(target, name, getattr(target, name) + getattr(other, name))


def _merge_activity(act: Activity, other: Activity) -> None:
    act.events += other.events
    act.first_seen = _earliest(act.first_seen, other.first_seen)
    act.last_seen = _latest(act.last_seen, other.last_seen)
    for name, theirs in other.channels.items():
        mine = act.channels.get(name)
        if mine is None:
            act.channels[name] = msgspec.structs.replace(theirs)
        else:
            mine.first_seen = min(mine.first_seen, theirs.first_seen)
            mine.last_seen = max(mine.last_seen, theirs.last_seen)
            _add_fields(mine, theirs, ("events", "orders", "spend"))
    buy, their_buy = act.purchases, other.purchases
    _add_fields(buy, their_buy, ("orders", "spend", "discounted", "discount_amount",
                                 "coupon_orders", "points_paid", "refunds", "refund_amount"))
    buy.first_at = _earliest(buy.first_at, their_buy.first_at)
    buy.last_at = _latest(buy.last_at, their_buy.last_at)
    buy.recent = sorted([*buy.recent, *their_buy.recent])
    buy.categories.merge(their_buy.categories)
    buy.brands.merge(their_buy.brands)
    browse = act.browse
    _add_fields(browse, other.browse, ("product_views", "searches"))
    browse.categories.merge(other.browse.categories)
    for query, at in other.browse.recent_searches.items():
        browse.recent_searches[query] = max(at, browse.recent_searches.get(query, at))
    engagement, theirs_engagement = act.engagement, other.engagement
    _add_fields(engagement, theirs_engagement, ("emails_delivered", "email_opens",
                                                "email_clicks", "app_opens", "reviews",
                                                "ratings", "rating_total"))
    engagement.last_app_open = _latest(engagement.last_app_open, theirs_engagement.last_app_open)
    engagement.recent_app_opens = sorted(
        [*engagement.recent_app_opens, *theirs_engagement.recent_app_opens]
    )
    points = act.points
    _add_fields(points, other.points, ("earned", "redeemed", "redemptions"))
    points.first_redemption_at = _earliest(points.first_redemption_at,
                                           other.points.first_redemption_at)
    points.last_redemption_at = _latest(points.last_redemption_at,
                                        other.points.last_redemption_at)
    for product, item in other.wishlist.items():
        if _lww_wins(item.updated_at, item.message_id, act.wishlist.get(product)):
            act.wishlist[product] = item
