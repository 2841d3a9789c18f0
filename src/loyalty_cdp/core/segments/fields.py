"""Field paths of the condition language: parsing, checking against what exists, reading.

A path names one value of a member: ``traits.first_name``, ``signals.purchase.orders_90d``,
``loyalty.progress.remaining``, ``scores.lapse_risk``, ``consent.sms``, ``segments`` (the
ids of the segments the member is in) or, in trigger conditions, ``event.to_tier`` (a
property of the triggering event). A path may end with an aggregate over a map or list:
``@count``, ``@sum``, ``@max``, ``@min`` or ``@top`` (the key of a map's largest value), as
in ``signals.affinity.brand.@max``. Paths are written as dotted text, or as a list of keys
when a key itself holds a dot. ``signals`` and ``loyalty`` paths are checked against the
shape the signals and the loyalty summary really have, so a typo is an error, not a
condition that is silently never true.
"""

from __future__ import annotations

import difflib
import math
from functools import lru_cache
from typing import Any

import msgspec

from loyalty_cdp.core.consent import PURPOSES
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.core.signals import compute_signals
from loyalty_cdp.errors import InvalidInput

NAMESPACES = ("traits", "signals", "loyalty", "scores", "consent", "segments", "event")
AGGREGATES = ("@count", "@sum", "@max", "@min", "@top")
MAX_DEPTH = 8


class FieldPath(msgspec.Struct, frozen=True):
    """A parsed path: its namespace, the keys below it, an optional aggregate, and its text."""

    namespace: str
    keys: tuple[str, ...]
    aggregate: str | None
    text: str


@lru_cache(maxsize=1)
def signal_specimen() -> dict[str, Any]:
    """What :func:`compute_signals` answers for an empty profile: the shape of every signal.

    Maps that are empty here (``affinity.category``, ``channels``...) are keyed by data, so
    any key is accepted below them."""
    return compute_signals(Profile(member_id="specimen"), 0)


class FieldCatalog:
    """Which paths a condition may use where it is written.

    ``loyalty`` is a specimen of the profile's loyalty object (``loyalty_summary`` of a new
    member) to check ``loyalty`` paths against, or None to accept any. ``segments`` says
    whether the ``segments`` field may be read (not inside segment definitions, which are
    evaluated together), ``event`` whether ``event.*`` may (only in trigger conditions).
    """

    def __init__(
        self, loyalty: dict[str, Any] | None = None, *, segments: bool = True, event: bool = False
    ) -> None:
        self._loyalty = loyalty
        self._segments = segments
        self._event = event

    def with_options(self, *, segments: bool, event: bool) -> FieldCatalog:
        return FieldCatalog(self._loyalty, segments=segments, event=event)

    def parse(self, raw: Any, field: str) -> FieldPath:
        """The path written as ``raw`` at ``field``, or :class:`InvalidInput` naming it."""
        parts = _parts(raw, field)
        namespace, keys = parts[0], tuple(parts[1:])
        aggregate = None
        if keys and keys[-1].startswith("@"):
            aggregate, keys = keys[-1], keys[:-1]
            if aggregate not in AGGREGATES:
                raise InvalidInput(field, f"unknown aggregate {aggregate!r}; expected one of {', '.join(AGGREGATES)}")
        if any(key.startswith("@") for key in keys):
            raise InvalidInput(field, "an aggregate (@...) may only end a path")
        if namespace not in NAMESPACES:
            raise InvalidInput(field, f"unknown namespace {namespace!r}{_hint(namespace, NAMESPACES)}")
        if namespace == "segments":
            if not self._segments:
                raise InvalidInput(field, "a segment cannot depend on segment membership; repeat the condition")
            if keys:
                raise InvalidInput(field, "'segments' is the list of the member's segment ids: use 'contains'")
        elif namespace == "event" and not self._event:
            raise InvalidInput(field, "'event' fields exist only in trigger conditions")
        elif namespace == "consent" and (len(keys) != 1 or keys[0] not in PURPOSES or aggregate):
            name = keys[0] if keys else ""
            raise InvalidInput(field, f"consent.<purpose> names one purpose{_hint(name, PURPOSES)}")
        elif not keys and aggregate is None:
            raise InvalidInput(field, f"name a field under {namespace!r}, e.g. {namespace}.<key>")
        if namespace == "signals":
            _check(signal_specimen(), keys, aggregate, "signals", field)
        elif namespace == "loyalty" and self._loyalty is not None:
            _check(self._loyalty, keys, aggregate, "loyalty", field)
        return FieldPath(namespace, keys, aggregate, ".".join(parts))


def _parts(raw: Any, field: str) -> list[str]:
    if isinstance(raw, str):
        parts = raw.split(".")
    elif isinstance(raw, list) and all(isinstance(part, str) for part in raw):
        parts = list(raw)
    else:
        raise InvalidInput(field, "expected a dotted path (text) or a list of keys")
    if not parts or any(not part.strip() for part in parts):
        raise InvalidInput(field, f"{raw!r} has an empty key")
    if len(parts) > MAX_DEPTH:
        raise InvalidInput(field, f"a path has at most {MAX_DEPTH} keys")
    return parts


def _hint(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(known)}"


def _check(specimen: Any, keys: tuple[str, ...], aggregate: str | None, root: str, field: str) -> None:
    node = specimen
    where = root
    for key in keys:
        if isinstance(node, dict) and node:
            if key not in node:
                raise InvalidInput(field, f"unknown field {key!r} under {where}{_hint(key, node)}")
            node = node[key]
            where = f"{where}.{key}"
        elif isinstance(node, dict) or node is None:
            return  # a map keyed by data (or an object absent from the specimen): any key
        else:
            raise InvalidInput(field, f"{where} is a value, it has no field {key!r}")
    if aggregate is not None and not (node is None or isinstance(node, (dict, list))):
        raise InvalidInput(field, f"{aggregate} needs a map or a list, and {where} is a single value")


def resolve(root: Any, keys: tuple[str, ...]) -> Any:
    """The value at ``keys`` under ``root`` (nested dicts), or None when absent."""
    node = root
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


EXACT_INTEGER = 1 << 53


def is_number(value: Any) -> bool:
    """A finite float, or an integer that a float holds exactly (larger ones are not comparable)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and -EXACT_INTEGER <= value <= EXACT_INTEGER


def aggregate(value: Any, name: str) -> Any:
    """``name`` (``@count``...) of a map or list; None when it does not apply."""
    if not isinstance(value, (dict, list)):
        return None
    if name == "@count":
        return len(value)
    if name == "@top":
        if not isinstance(value, dict):
            return None
        ranked = [(-item, key) for key, item in value.items() if is_number(item)]
        return min(ranked)[1] if ranked else None
    numbers = [item for item in (value.values() if isinstance(value, dict) else value) if is_number(item)]
    if not numbers:
        return None
    if name == "@sum":
        return sum(numbers)
    return max(numbers) if name == "@max" else min(numbers)
