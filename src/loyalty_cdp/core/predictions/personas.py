"""The seed's five personas, each assigned by a stated rule on a member's signals and scores, with its reason (pure).

A member may match several; ``primary`` is the first match in ``PRIORITY``. Rules, as of the run:

* ``at_risk``: lapse risk at or above the alert threshold (0.7);
* ``new``: first purchase at most ``new_days`` (90) days ago;
* ``high_value``: 12-month CLV in the top ``1 - high_value_quantile`` (10%) of scored members;
* ``brand_enthusiast``: in the category the member buys most (at least ``min_lines`` items), one
  brand holds at least ``brand_share`` (80%) of the items;
* ``price_sensitive``: at least ``promotion_share`` (50%) of the member's items (at least
  ``min_lines``) were bought on promotion (a line ``discount`` above 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from loyalty_cdp.core.predictions.history import PurchaseHistory
from loyalty_cdp.core.predictions.lapse import DEFAULT_THRESHOLD
from loyalty_cdp.core.predictions.scoring import MemberScores
from loyalty_cdp.errors import InvalidInput

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

PRIORITY = ("at_risk", "new", "high_value", "brand_enthusiast", "price_sensitive")


@dataclass(frozen=True, slots=True)
class PersonaConfig:
    lapse_threshold: float = DEFAULT_THRESHOLD
    new_days: float = 90.0
    high_value_quantile: float = 0.9
    brand_share: float = 0.8
    promotion_share: float = 0.5
    min_lines: int = 4

    def __post_init__(self) -> None:
        for name in ("lapse_threshold", "high_value_quantile", "brand_share", "promotion_share"):
            if not 0 < getattr(self, name) < 1:
                raise InvalidInput(name, "must be between 0 and 1")
        if not self.new_days > 0 or self.min_lines < 1:
            raise InvalidInput("new_days", "new_days and min_lines must be positive")


@dataclass(frozen=True, slots=True)
class PersonaSignals:
    """Per member code: items bought, the share on promotion, and the favourite brand of the top category."""

    lines: IntArray
    promotion_share: FloatArray
    top_category: NDArray[np.str_]
    top_category_lines: IntArray
    top_brand: NDArray[np.str_]
    top_brand_share: FloatArray


def _codes(labels: NDArray[np.str_]) -> tuple[NDArray[np.str_], IntArray]:
    names, codes = np.unique(labels, return_inverse=True)
    return names, np.asarray(codes, dtype=np.int64)


def persona_signals(history: PurchaseHistory, as_of_ms: int) -> PersonaSignals:
    """The purchase signals the persona rules read, from the lines up to ``as_of_ms``."""
    history = history.until(as_of_ms)
    members = history.member_ids.size
    member = history.line_member
    lines = np.bincount(member, minlength=members)
    promoted = np.bincount(member, weights=(history.line_discount > 0).astype(np.float64), minlength=members)
    categories, category_of_product = _codes(history.product_category)
    brands, brand_of_product = _codes(history.product_brand)
    category, brand = category_of_product[history.line_product], brand_of_product[history.line_product]
    known = (categories[category] != "") & (brands[brand] != "")
    member, category, brand = member[known], category[known], brand[known]
    top_category = np.full(members, -1, dtype=np.int64)
    top_category_lines = np.zeros(members, dtype=np.int64)
    top_brand = np.full(members, -1, dtype=np.int64)
    top_brand_share = np.zeros(members)
    if member.size:
        cells = (member * categories.size + category) * brands.size + brand
        cell, count = np.unique(cells, return_counts=True)
        group = cell // brands.size  # member * categories + category
        groups, group_index = np.unique(group, return_inverse=True)
        per_group = np.bincount(group_index, weights=count).astype(np.int64)
        best = np.full(groups.size, -1, dtype=np.int64)
        order = np.lexsort((-count, group_index))  # the largest brand of each group first
        first = order[np.r_[True, group_index[order][1:] != group_index[order][:-1]]]
        best[group_index[first]] = first
        by_member = np.lexsort((-per_group, groups // categories.size))
        owners = groups[by_member] // categories.size
        leader = by_member[np.r_[True, owners[1:] != owners[:-1]]]
        owner = groups[leader] // categories.size
        top_category[owner] = groups[leader] % categories.size
        top_category_lines[owner] = per_group[leader]
        top_brand[owner] = cell[best[leader]] % brands.size
        top_brand_share[owner] = count[best[leader]] / per_group[leader]
    return PersonaSignals(
        lines=lines,
        promotion_share=np.divide(promoted, lines, out=np.zeros(members), where=lines > 0),
        top_category=np.where(top_category >= 0, categories[np.maximum(top_category, 0)], ""),
        top_category_lines=top_category_lines,
        top_brand=np.where(top_brand >= 0, brands[np.maximum(top_brand, 0)], ""),
        top_brand_share=top_brand_share,
    )


def assign_personas(signals: PersonaSignals, scores: MemberScores,
                    config: PersonaConfig | None = None) -> list[tuple[str | None, list[dict[str, str]]]]:
    """(primary persona or None, every matching persona with its reason) per row of ``scores``."""
    config = config or PersonaConfig()
    codes = scores.member_codes
    clv_cut = float(np.quantile(scores.clv, config.high_value_quantile)) if scores.clv.size else 0.0
    matches = {
        "at_risk": scores.lapse_risk >= config.lapse_threshold,
        "new": scores.days_since_first_purchase <= config.new_days,
        "high_value": scores.clv >= clv_cut,
        "brand_enthusiast": (signals.top_category_lines[codes] >= config.min_lines)
        & (signals.top_brand_share[codes] >= config.brand_share),
        "price_sensitive": (signals.lines[codes] >= config.min_lines)
        & (signals.promotion_share[codes] >= config.promotion_share),
    }
    top_percent = f"{(1 - config.high_value_quantile) * 100:g}"
    risk, quiet = scores.lapse_risk.tolist(), scores.days_since_last_purchase.tolist()
    usual, first = scores.usual_interval_days.tolist(), scores.days_since_first_purchase.tolist()
    clv = scores.clv.tolist()
    brand_share, promotion = signals.top_brand_share[codes].tolist(), signals.promotion_share[codes].tolist()
    category, brand = signals.top_category[codes].tolist(), signals.top_brand[codes].tolist()
    reasons: dict[str, Callable[[int], str]] = {
        "at_risk": lambda r: (f"lapse risk {risk[r]:.2f}: no purchase for {quiet[r]:.0f} days, "
                              f"usually every {usual[r]:.0f}"),
        "new": lambda r: f"first purchase {first[r]:.0f} days ago",
        "high_value": lambda r: f"expected 12-month value {clv[r]:.2f}, in the top {top_percent}% of members",
        "brand_enthusiast": lambda r: f"{brand_share[r]:.0%} of your {category[r]} items are {brand[r]}",
        "price_sensitive": lambda r: f"{promotion[r]:.0%} of your items were bought on promotion",
    }
    found: list[list[dict[str, str]]] = [[] for _ in range(codes.size)]
    for persona in PRIORITY:  # in priority order, so each member's first match is their primary persona
        reason = reasons[persona]
        for row in np.flatnonzero(matches[persona]).tolist():
            found[row].append({"persona": persona, "reason": reason(row)})
    return [(matched[0]["persona"] if matched else None, matched) for matched in found]
