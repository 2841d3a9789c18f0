"""Vectorised evaluation of conditions over many members with NumPy: backfills and previews.

:class:`MemberTable` holds, for a list of members, one typed column per field path and per
count a set of conditions reads (built in one pass over the profiles). Evaluating a
condition is then a handful of array operations per comparison, with exactly the semantics
of :func:`~loyalty_cdp.core.segments.evaluate.holds` (a property test checks they agree):
evaluating a new or edited segment over a million members takes milliseconds once the
table exists, and building the table is one linear pass (``bench/segments.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.core.segments.conditions import All, AnyOf, Compare, Condition, Count, Not, counts_of, fields_of, kind
from loyalty_cdp.core.segments.counts import CountSpec
from loyalty_cdp.core.segments.facts import MemberFacts
from loyalty_cdp.core.segments.fields import FieldPath
from loyalty_cdp.errors import InvalidInput

Mask = NDArray[np.bool_]


class Column:
    """One field over all members, split by kind: numbers (NaN elsewhere), texts as codes
    (-1 elsewhere), booleans (-1 elsewhere), presence, and the texts held by list or map
    values as (row, code) pairs for ``contains``."""

    __slots__ = ("flags", "item_codes", "item_rows", "labels", "numbers", "present", "vocabulary")

    def __init__(self, values: list[Any]) -> None:
        size = len(values)
        self.vocabulary: dict[str, int] = {}
        numbers = np.full(size, np.nan)
        labels = np.full(size, -1, dtype=np.int32)
        flags = np.full(size, -1, dtype=np.int8)
        present = np.zeros(size, dtype=np.bool_)
        rows: list[int] = []
        codes: list[int] = []
        code = self.vocabulary.setdefault
        for row, value in enumerate(values):
            if value is None:
                continue
            present[row] = True
            got = kind(value)
            if got == "number":
                numbers[row] = value
            elif got == "text":
                labels[row] = code(value, len(self.vocabulary))
            elif got == "bool":
                flags[row] = value
            elif isinstance(value, (list, dict)):
                for item in value:
                    if isinstance(item, str):
                        rows.append(row)
                        codes.append(code(item, len(self.vocabulary)))
        self.numbers, self.labels, self.flags, self.present = numbers, labels, flags, present
        self.item_rows = np.asarray(rows, dtype=np.int64)
        self.item_codes = np.asarray(codes, dtype=np.int32)

    def compare(self, op: str, operand: Any) -> Mask:
        size = len(self.present)
        if op == "exists":
            return self.present.copy() if operand else ~self.present
        if op == "contains":
            mask = np.zeros(size, dtype=np.bool_)
            code = self.vocabulary.get(operand)
            if code is not None:
                mask[self.item_rows[self.item_codes == code]] = True
            return mask
        if op == "between":
            return _numbers(self.numbers, op, operand)
        sample = operand[0] if op in ("in", "not_in") else operand
        wanted = kind(sample)
        if wanted == "number":
            return _numbers(self.numbers, op, operand)
        if wanted == "bool":
            return _codes(self.flags.astype(np.int32), op, [int(v) for v in _listed(op, operand)])
        known = [self.vocabulary[v] for v in _listed(op, operand) if v in self.vocabulary]
        if op not in ("eq", "ne", "in", "not_in"):
            return np.zeros(size, dtype=np.bool_)
        return _codes(self.labels, op, known)


def _listed(op: str, operand: Any) -> list[Any]:
    return list(operand) if op in ("in", "not_in") else [operand]


def _mask(values: Any) -> Mask:
    """A comparison's result typed as the boolean array it is."""
    return np.asarray(values, dtype=np.bool_)


def _numbers(values: NDArray[np.float64], op: str, operand: Any) -> Mask:
    valid = ~np.isnan(values)
    with np.errstate(invalid="ignore"):
        if op == "between":
            return _mask((values >= operand[0]) & (values <= operand[1]))
        if op == "eq":
            return _mask(values == operand)
        if op == "ne":
            return _mask(valid & (values != operand))
        if op == "in":
            return _mask(np.isin(values, np.asarray(operand, dtype=np.float64)))
        if op == "not_in":
            return _mask(valid & ~np.isin(values, np.asarray(operand, dtype=np.float64)))
        if op == "lt":
            return _mask(values < operand)
        if op == "lte":
            return _mask(values <= operand)
        if op == "gt":
            return _mask(values > operand)
        return _mask(values >= operand)


def _codes(codes: NDArray[np.int32], op: str, wanted: list[int]) -> Mask:
    """eq/in (and ne/not_in among present values of the kind) over integer codes, -1 = absent."""
    hit = np.isin(codes, np.asarray(wanted, dtype=np.int32)) if wanted else np.zeros(len(codes), dtype=np.bool_)
    if op in ("eq", "in"):
        return hit
    return (codes >= 0) & ~hit


class MemberTable:
    """Columns of ``fields`` and ``counts`` for ``member_ids``, in one order."""

    def __init__(self, member_ids: list[str], columns: dict[FieldPath, Column],
                 counts: dict[CountSpec, NDArray[np.float64]]) -> None:
        self.member_ids = member_ids
        self.columns = columns
        self.counts = counts

    def __len__(self) -> int:
        return len(self.member_ids)

    @classmethod
    def build(cls, facts: Iterable[MemberFacts], conditions: Iterable[Condition]) -> MemberTable:
        """One pass over ``facts`` collecting every field and count ``conditions`` read."""
        paths: list[FieldPath] = []
        specs: list[CountSpec] = []
        for condition in conditions:
            paths.extend(fields_of(condition))
            specs.extend(counts_of(condition))
        paths, specs = list(dict.fromkeys(paths)), list(dict.fromkeys(specs))
        ids: list[str] = []
        raw: list[list[Any]] = [[] for _ in paths]
        counted: list[list[float]] = [[] for _ in specs]
        readers: list[Callable[[MemberFacts], Any]] = [_reader(path) for path in paths]
        for member in facts:
            ids.append(member.member_id)
            for values, read in zip(raw, readers, strict=True):
                values.append(read(member))
            for numbers, spec in zip(counted, specs, strict=True):
                found = member.count(spec)
                numbers.append(np.nan if found is None else found)
        columns = {path: Column(values) for path, values in zip(paths, raw, strict=True)}
        counts = {spec: np.asarray(numbers, dtype=np.float64) for spec, numbers in zip(specs, counted, strict=True)}
        return cls(ids, columns, counts)

    def missing(self, condition: Condition) -> list[str]:
        """The fields and counts ``condition`` reads that the table lacks (rebuild to add them)."""
        absent = [path.text for path in fields_of(condition) if path not in self.columns]
        return absent + [f"count({spec.key}, {spec.days}d)" for spec in counts_of(condition) if spec not in self.counts]

    def evaluate(self, condition: Condition) -> Mask:
        """One boolean per member: whether ``condition`` holds."""
        absent = self.missing(condition)
        if absent:
            lacking = ", ".join(absent)
            raise InvalidInput("condition", f"the member table lacks {lacking}; rebuild it with this condition")
        return self._evaluate(condition)

    def _evaluate(self, condition: Condition) -> Mask:
        if isinstance(condition, Compare):
            return self.columns[condition.path].compare(condition.op, condition.value)
        if isinstance(condition, Count):
            return _numbers(self.counts[condition.spec], condition.op, condition.value)
        if isinstance(condition, Not):
            return ~self._evaluate(condition.item)
        masks = [self._evaluate(item) for item in condition.items]
        if isinstance(condition, All):
            return _mask(np.logical_and.reduce(masks))
        if isinstance(condition, AnyOf):
            return _mask(np.logical_or.reduce(masks))
        raise TypeError(f"not a condition: {condition!r}")


def _reader(path: FieldPath) -> Callable[[MemberFacts], Any]:
    def read(member: MemberFacts) -> Any:
        return member.value(path)

    return read
