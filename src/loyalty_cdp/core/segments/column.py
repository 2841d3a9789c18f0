"""One field of many members as typed NumPy arrays, and the comparisons of the condition language on it."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.core.segments.conditions import kind

Mask = NDArray[np.bool_]


class Column:
    """One field over all members, split by kind: numbers (NaN elsewhere), texts as codes
    (-1 elsewhere), booleans (-1 elsewhere), presence, and the texts held by list or map
    values as (row, code) pairs for ``contains``."""

    __slots__ = ("flags", "item_codes", "item_rows", "labels", "numbers", "present", "vocabulary")

    def __init__(self, size: int, *, numbers: NDArray[np.float64] | None = None,
                 labels: NDArray[np.int32] | None = None, vocabulary: dict[str, int] | None = None,
                 present: NDArray[np.bool_] | None = None, item_rows: NDArray[np.int64] | None = None,
                 item_codes: NDArray[np.int32] | None = None, flags: NDArray[np.int8] | None = None) -> None:
        """A column from arrays (a part not given holds nothing of its kind); ``present``
        defaults to wherever a number or a text is."""
        self.numbers = numbers if numbers is not None else np.full(size, np.nan)
        self.labels = labels if labels is not None else np.full(size, -1, dtype=np.int32)
        self.vocabulary = vocabulary if vocabulary is not None else {}
        self.flags = flags if flags is not None else np.full(size, -1, dtype=np.int8)
        self.present = present if present is not None else ~np.isnan(self.numbers) | (self.labels >= 0)
        self.item_rows = item_rows if item_rows is not None else np.zeros(0, dtype=np.int64)
        self.item_codes = item_codes if item_codes is not None else np.zeros(0, dtype=np.int32)

    @classmethod
    def of_values(cls, values: list[Any]) -> Column:
        """The column of one Python value per member (as :meth:`MemberFacts.value` answers them)."""
        size = len(values)
        vocabulary: dict[str, int] = {}
        numbers = np.full(size, np.nan)
        labels = np.full(size, -1, dtype=np.int32)
        flags = np.full(size, -1, dtype=np.int8)
        present = np.zeros(size, dtype=np.bool_)
        rows: list[int] = []
        codes: list[int] = []
        code = vocabulary.setdefault
        for row, value in enumerate(values):
            if value is None:
                continue
            present[row] = True
            got = kind(value)
            if got == "number":
                numbers[row] = value
            elif got == "text":
                labels[row] = code(value, len(vocabulary))
            elif got == "bool":
                flags[row] = value
            elif isinstance(value, (list, dict)):
                for item in value:
                    if isinstance(item, str):
                        rows.append(row)
                        codes.append(code(item, len(vocabulary)))
        return cls(size, numbers=numbers, labels=labels, vocabulary=vocabulary, present=present, flags=flags,
                   item_rows=np.asarray(rows, dtype=np.int64), item_codes=np.asarray(codes, dtype=np.int32))

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
            return compare_numbers(self.numbers, op, operand)
        sample = operand[0] if op in ("in", "not_in") else operand
        wanted = kind(sample)
        if wanted == "number":
            return compare_numbers(self.numbers, op, operand)
        if wanted == "bool":
            return _codes(self.flags.astype(np.int32), op, [int(v) for v in _listed(op, operand)])
        known = [self.vocabulary[v] for v in _listed(op, operand) if v in self.vocabulary]
        if op not in ("eq", "ne", "in", "not_in"):
            return np.zeros(size, dtype=np.bool_)
        return _codes(self.labels, op, known)


def _listed(op: str, operand: Any) -> list[Any]:
    return list(operand) if op in ("in", "not_in") else [operand]


def as_mask(values: Any) -> Mask:
    """A comparison's result typed as the boolean array it is."""
    return np.asarray(values, dtype=np.bool_)


def compare_numbers(values: NDArray[np.float64], op: str, operand: Any) -> Mask:
    valid = ~np.isnan(values)
    with np.errstate(invalid="ignore"):
        if op == "between":
            return as_mask((values >= operand[0]) & (values <= operand[1]))
        if op == "eq":
            return as_mask(values == operand)
        if op == "ne":
            return as_mask(valid & (values != operand))
        if op == "in":
            return as_mask(np.isin(values, np.asarray(operand, dtype=np.float64)))
        if op == "not_in":
            return as_mask(valid & ~np.isin(values, np.asarray(operand, dtype=np.float64)))
        if op == "lt":
            return as_mask(values < operand)
        if op == "lte":
            return as_mask(values <= operand)
        if op == "gt":
            return as_mask(values > operand)
        return as_mask(values >= operand)


def _codes(codes: NDArray[np.int32], op: str, wanted: list[int]) -> Mask:
    """eq/in (and ne/not_in among present values of the kind) over integer codes, -1 = absent."""
    hit = np.isin(codes, np.asarray(wanted, dtype=np.int32)) if wanted else np.zeros(len(codes), dtype=np.bool_)
    if op in ("eq", "in"):
        return hit
    return (codes >= 0) & ~hit
