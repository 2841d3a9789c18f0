"""Counts of a member's events in a time window ("3+ Pet Food orders in 180 days").

A :class:`CountSpec` names an event, optional filters (a product line's category, brand,
product id or SKU; the channel) and a window in days. The count at ``as_of`` is the number
of matching events with ``as_of - days < timestamp <= as_of`` (the signals' convention).

Two specs are answered from what the profile fold already keeps: all orders within 365
days (``activity.purchases.recent``) and all app sessions within 30 days
(``activity.engagement.recent_app_opens``). Every other spec needs the timestamps of its
matching events, kept in :class:`EventWindows` by a :class:`WindowPlan` built from the
configured segments: only the specs some condition uses, each pruned to the longest window
asked for, so the state stays bounded. The windows are order independent for the same
reason the profile's are: each is pruned against the latest timestamp of its own kind.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import msgspec

from loyalty_cdp.core.identifiers import DecodedEvent
from loyalty_cdp.core.profile import APP_WINDOW_DAYS, DAY_MS, MAX_KEY_CHARS, ORDER_WINDOW_DAYS, Profile
from loyalty_cdp.core.segments.validation import convert
from loyalty_cdp.errors import InvalidInput

ORDER_COMPLETED = "Order Completed"
APP_OPENED = "Application Opened"
MAX_WINDOW_DAYS = 730
LINE_FILTERS = ("category", "brand", "product_id", "sku")


class CountSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which events to count and over how many days (see the module docstring)."""

    event: str
    days: int
    category: str | None = None
    brand: str | None = None
    product_id: str | None = None
    sku: str | None = None
    channel: str | None = None

    @property
    def key(self) -> str:
        """The spec without its window: specs that differ only in days share their events."""
        return _key(self)

    @property
    def filtered(self) -> bool:
        return any(getattr(self, name) for name in (*LINE_FILTERS, "channel"))


@lru_cache(maxsize=1024)
def _key(spec: CountSpec) -> str:
    filters = [f"{name}={getattr(spec, name)}" for name in (*LINE_FILTERS, "channel") if getattr(spec, name)]
    return "|".join([spec.event, *filters])


def label(value: Any) -> str | None:
    """A category, brand or id as the profile keeps it: inner white space collapsed, 64 chars."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    return " ".join(value.split())[:MAX_KEY_CHARS] or None


def parse_count(raw: Any, field: str) -> CountSpec:
    """The ``count:`` object written at ``field``, checked."""
    if not isinstance(raw, dict):
        raise InvalidInput(field, "expected an object with 'event' and 'days'")
    spec: CountSpec = convert(raw, CountSpec, field)
    if not spec.event.strip():
        raise InvalidInput(f"{field}.event", "must not be empty")
    if not 1 <= spec.days <= MAX_WINDOW_DAYS:
        raise InvalidInput(f"{field}.days", f"must be between 1 and {MAX_WINDOW_DAYS}")
    cleaned = {name: label(getattr(spec, name)) for name in LINE_FILTERS}
    channel = spec.channel.strip().lower() if spec.channel else None
    return msgspec.structs.replace(spec, **cleaned, channel=channel)


@lru_cache(maxsize=1024)
def served_by_profile(spec: CountSpec) -> bool:
    """Whether the profile fold already keeps what ``spec`` counts."""
    if spec.filtered:
        return False
    return (spec.event == ORDER_COMPLETED and spec.days <= ORDER_WINDOW_DAYS) or (
        spec.event == APP_OPENED and spec.days <= APP_WINDOW_DAYS
    )


def matches(spec: CountSpec, event: DecodedEvent) -> bool:
    """Whether ``event`` is one that ``spec`` counts (an order counts once, whatever its lines)."""
    if event.type != "track" or event.event != spec.event:
        return False
    if spec.channel is not None and event.channel != spec.channel:
        return False
    wanted = [(name, getattr(spec, name)) for name in LINE_FILTERS if getattr(spec, name)]
    if not wanted:
        return True
    props = event.properties
    products = props.get("products")
    lines = [line for line in products if isinstance(line, dict)] if isinstance(products, list) else []
    return any(all(label(line.get(name)) == value for name, value in wanted) for line in [props, *lines])


class EventWindows(msgspec.Struct, gc=False, array_like=True, omit_defaults=True):
    """Timestamps of the events each planned spec counts, sorted, per spec key.

    Proposed as a profile field (``Profile.activity.windows``), maintained by the fold
    through :meth:`WindowPlan.add` and :meth:`WindowPlan.prune` so that it sees each event
    once (the fold already skips message ids it has folded)."""

    times: dict[str, list[int]] = msgspec.field(default_factory=dict)


class WindowPlan:
    """The windows that some count conditions need and the profile does not keep."""

    def __init__(self, specs: Iterable[CountSpec]) -> None:
        windows: dict[str, tuple[CountSpec, int]] = {}
        for spec in specs:
            if served_by_profile(spec):
                continue
            kept = windows.get(spec.key)
            windows[spec.key] = (spec, max(spec.days, kept[1] if kept else 0))
        self.windows = dict(sorted(windows.items()))

    def __bool__(self) -> bool:
        return bool(self.windows)

    def add(self, windows: EventWindows, event: DecodedEvent) -> None:
        """Record one (new, not yet folded) event in ``windows``, in place."""
        for key, (spec, _) in self.windows.items():
            if matches(spec, event):
                insort(windows.times.setdefault(key, []), event.timestamp)

    def prune(self, windows: EventWindows) -> None:
        """Drop what left its window (against the latest time of its kind) and unplanned keys."""
        for key in list(windows.times):
            planned = self.windows.get(key)
            times = windows.times[key]
            if planned is None or not times:
                del windows.times[key]
                continue
            del times[: bisect_right(times, times[-1] - planned[1] * DAY_MS)]

    def record(self, windows: EventWindows | None, events: Iterable[DecodedEvent]) -> EventWindows:
        """A new :class:`EventWindows`: ``windows`` plus ``events`` (each given once), pruned."""
        result = EventWindows({key: list(times) for key, times in (windows.times if windows else {}).items()})
        for event in events:
            self.add(result, event)
        self.prune(result)
        return result

    def merge(self, first: EventWindows, second: EventWindows) -> EventWindows:
        """The windows of two members' disjoint events together (an identity merge)."""
        keys = set(first.times) | set(second.times)
        merged = EventWindows({key: sorted([*first.times.get(key, ()), *second.times.get(key, ())]) for key in keys})
        self.prune(merged)
        return merged


def _within(times: list[int], as_of: int, days: int) -> int:
    return bisect_right(times, as_of) - bisect_right(times, as_of - days * DAY_MS)


def window_count(spec: CountSpec, profile: Profile, windows: EventWindows | None, as_of: int) -> int | None:
    """How many events ``spec`` counts at ``as_of``; None when nothing keeps them."""
    if served_by_profile(spec):
        act = profile.activity
        times = act.purchases.recent if spec.event == ORDER_COMPLETED else act.engagement.recent_app_opens
        return _within(times, as_of, spec.days)
    if windows is None:
        return None
    return _within(windows.times.get(spec.key, []), as_of, spec.days)
