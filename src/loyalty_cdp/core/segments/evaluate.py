"""Whether a condition holds for one member (the incremental, per-profile path).

Semantics, shared exactly by the vectorised path (:mod:`.batch`): a comparison whose
field is absent, null, or of another kind than its operand (text against number, boolean
against number...) is false, whatever the operator, except ``exists``. So ``ne`` and
``not_in`` hold only for a present value of the same kind; ``not: {...}`` negates all of
that. Numbers compare as numbers (``1 == 1.0``); booleans are not numbers.
"""

from __future__ import annotations

from typing import Any

from loyalty_cdp.core.segments.conditions import All, AnyOf, Compare, Condition, Count, Not, kind
from loyalty_cdp.core.segments.facts import MemberFacts


def holds(condition: Condition, facts: MemberFacts) -> bool:
    """The truth of ``condition`` for the member of ``facts``."""
    if isinstance(condition, Compare):
        return compare(condition.op, facts.value(condition.path), condition.value)
    if isinstance(condition, Count):
        return compare(condition.op, facts.count(condition.spec), condition.value)
    if isinstance(condition, All):
        return all(holds(item, facts) for item in condition.items)
    if isinstance(condition, AnyOf):
        return any(holds(item, facts) for item in condition.items)
    if isinstance(condition, Not):
        return not holds(condition.item, facts)
    raise TypeError(f"not a condition: {condition!r}")


def compare(op: str, actual: Any, operand: Any) -> bool:
    """``actual <op> operand`` under the module's semantics."""
    if op == "exists":
        return (actual is not None) is operand
    if op == "contains":
        if isinstance(actual, dict):
            return operand in actual
        return isinstance(actual, list) and any(isinstance(item, str) and item == operand for item in actual)
    got = kind(actual)
    if got is None:
        return False
    if op in ("in", "not_in"):
        if got != kind(operand[0]):
            return False
        return (actual in operand) is (op == "in")
    if op == "between":
        return got == "number" and operand[0] <= actual <= operand[1]
    if got != kind(operand):
        return False
    if op == "eq":
        return bool(actual == operand)
    if op == "ne":
        return bool(actual != operand)
    if got != "number":
        return False
    if op == "lt":
        return bool(actual < operand)
    if op == "lte":
        return bool(actual <= operand)
    if op == "gt":
        return bool(actual > operand)
    return bool(actual >= operand)
