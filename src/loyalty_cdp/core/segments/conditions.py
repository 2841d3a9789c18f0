"""The condition tree of segments and triggers: its model and its parser.

Written in YAML or JSON as nested objects::

    all:                                   # also: any: [...], not: {...}
      - {field: loyalty.tier, in: [Gold, Platinum]}
      - {field: signals.lifecycle.stage, eq: at_risk}
      - count: {event: Order Completed, category: Pet Food, days: 180}
        gte: 3

A leaf is a ``field`` (see :mod:`.fields`) or a ``count`` (see :mod:`.counts`) with exactly
one operator: ``eq``, ``ne``, ``lt``, ``lte``, ``gt``, ``gte``, ``between`` ([low, high],
inclusive), ``in``, ``not_in``, ``exists`` (true/false), ``contains`` (a list holds the
text, or a map has it as a key). Every error names the path of the offending key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from loyalty_cdp.core.segments.counts import CountSpec, parse_count
from loyalty_cdp.core.segments.fields import FieldCatalog, FieldPath, is_number
from loyalty_cdp.errors import InvalidInput

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "not_in", "exists", "contains")
NUMERIC = frozenset({"lt", "lte", "gt", "gte", "between"})
COUNT_OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "between")
MAX_NESTING = 16
MAX_LEAVES = 256


class Compare(msgspec.Struct, frozen=True):
    """A field compared with a constant."""

    path: FieldPath
    op: str
    value: Any


class Count(msgspec.Struct, frozen=True):
    """A count of events in a window compared with a constant."""

    spec: CountSpec
    op: str
    value: Any


class All(msgspec.Struct, frozen=True):
    items: tuple[Condition, ...]


class AnyOf(msgspec.Struct, frozen=True):
    items: tuple[Condition, ...]


class Not(msgspec.Struct, frozen=True):
    item: Condition


Condition = Compare | Count | All | AnyOf | Not


def kind(value: Any) -> str | None:
    """The comparison kind of a value: ``bool``, ``number``, ``text``, or None (incomparable)."""
    if isinstance(value, bool):
        return "bool"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "text"
    return None


def parse_condition(raw: Any, field: str, catalog: FieldCatalog) -> Condition:
    """The condition written as ``raw`` at ``field`` (``InvalidInput`` names what is wrong)."""
    return _parse(raw, field, catalog, 0, [0])


def _parse(raw: Any, field: str, catalog: FieldCatalog, depth: int, budget: list[int]) -> Condition:
    if depth > MAX_NESTING:
        raise InvalidInput(field, f"conditions nest at most {MAX_NESTING} levels")
    if not isinstance(raw, dict) or not raw:
        raise InvalidInput(field, "expected a condition: an object with all, any, not, field or count")
    for combinator in ("all", "any"):
        if combinator in raw:
            _only(raw, {combinator}, field)
            items = raw[combinator]
            where = f"{field}.{combinator}"
            if not isinstance(items, list) or not items:
                raise InvalidInput(where, "expected a non-empty list of conditions")
            parsed = tuple(_parse(item, f"{where}[{i}]", catalog, depth + 1, budget) for i, item in enumerate(items))
            return All(parsed) if combinator == "all" else AnyOf(parsed)
    if "not" in raw:
        _only(raw, {"not"}, field)
        return Not(_parse(raw["not"], f"{field}.not", catalog, depth + 1, budget))
    budget[0] += 1
    if budget[0] > MAX_LEAVES:
        raise InvalidInput(field, f"a condition has at most {MAX_LEAVES} comparisons")
    if "field" in raw and "count" in raw:
        raise InvalidInput(field, "a comparison has either 'field' or 'count', not both")
    if "count" in raw:
        op, value = _operator(raw, "count", COUNT_OPERATORS, field)
        spec = parse_count(raw["count"], f"{field}.count")
        return Count(spec, op, _value(op, value, f"{field}.{op}", numeric=True))
    if "field" in raw:
        op, value = _operator(raw, "field", OPERATORS, field)
        path = catalog.parse(raw["field"], f"{field}.field")
        return Compare(path, op, _value(op, value, f"{field}.{op}", numeric=False))
    unknown = sorted(raw)[0]
    raise InvalidInput(f"{field}.{unknown}", f"unknown key {unknown!r}; expected all, any, not, field or count")


def _only(raw: dict[str, Any], allowed: set[str], field: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise InvalidInput(f"{field}.{extra[0]}", f"{next(iter(allowed))!r} takes no other key")


def _operator(raw: dict[str, Any], subject: str, allowed: tuple[str, ...], field: str) -> tuple[str, Any]:
    rest = [key for key in raw if key != subject]
    if len(rest) != 1:
        listed = ", ".join(allowed)
        if not rest:
            raise InvalidInput(field, f"a comparison needs one operator: {listed}")
        raise InvalidInput(f"{field}.{rest[1]}", f"a comparison has exactly one operator, got {', '.join(rest)}")
    op = rest[0]
    if op not in allowed:
        listed = ", ".join(allowed)
        raise InvalidInput(f"{field}.{op}", f"unknown operator {op!r} for {subject}; expected one of {listed}")
    return op, raw[op]


def _value(op: str, value: Any, field: str, *, numeric: bool) -> Any:
    """The operand of ``op``, checked (and lists made tuples, so conditions are hashable)."""
    if op == "exists":
        if not isinstance(value, bool):
            raise InvalidInput(field, "expected true or false")
        return value
    if op == "contains":
        if not isinstance(value, str):
            raise InvalidInput(field, "expected a text (an item of a list, or a key of a map)")
        return value
    if op == "between":
        if not (isinstance(value, list) and len(value) == 2 and all(is_number(v) for v in value)):
            raise InvalidInput(field, "expected [low, high], two numbers")
        if value[0] > value[1]:
            raise InvalidInput(field, "low must not exceed high")
        return (value[0], value[1])
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise InvalidInput(field, "expected a non-empty list")
        kinds = {kind(item) for item in value}
        if None in kinds or len(kinds) > 1 or (numeric and kinds != {"number"}):
            wanted = "numbers" if numeric else "texts, numbers or booleans"
            raise InvalidInput(field, f"expected a list of {wanted}, all of one kind")
        return tuple(value)
    if op in NUMERIC or numeric:
        if kind(value) != "number":
            raise InvalidInput(field, f"expected a number, got {value!r}")
        return value
    if kind(value) is None:
        raise InvalidInput(field, f"expected a text, a number or a boolean, got {value!r}")
    return value


def leaves(condition: Condition) -> Iterator[Compare | Count]:
    """Every comparison of ``condition``, depth first."""
    if isinstance(condition, (Compare, Count)):
        yield condition
    elif isinstance(condition, Not):
        yield from leaves(condition.item)
    else:
        for item in condition.items:
            yield from leaves(item)


def fields_of(condition: Condition) -> list[FieldPath]:
    return list(dict.fromkeys(leaf.path for leaf in leaves(condition) if isinstance(leaf, Compare)))


def counts_of(condition: Condition) -> list[CountSpec]:
    return list(dict.fromkeys(leaf.spec for leaf in leaves(condition) if isinstance(leaf, Count)))


# Signals that change with the passage of time alone (docs/signals.md): a condition on them
# can start or stop holding while the member does nothing.
TIME_DEPENDENT_SIGNALS = frozenset({
    "as_of", "purchase.orders_30d", "purchase.orders_90d", "purchase.orders_365d", "purchase.days_since_last_order",
    "redemption.days_since_last_redemption", "engagement.app_sessions_30d", "engagement.days_since_last_app_session",
    "browse.decayed_category_views", "lifecycle.stage", "lifecycle.cadence_days", "lifecycle.cadence_basis",
})


def time_dependent(condition: Condition) -> bool:
    """Whether the condition's truth can change with time alone (then a scheduler re-evaluates)."""
    for leaf in leaves(condition):
        if isinstance(leaf, Count):
            return True
        path = leaf.path
        if path.namespace == "signals":
            name = ".".join(path.keys)
            if any(name == known or known.startswith(name + ".") or name.startswith(known + ".")
                   for known in TIME_DEPENDENT_SIGNALS) or not path.keys:
                return True
    return False
