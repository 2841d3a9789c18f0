"""Cross-sell: item-to-item recommendations from basket co-occurrence (pure, vectorised).

Fit (:func:`fit_cross_sell`): over the orders up to ``as_of``, ``n_ij`` counts the baskets
holding both products i and j, ``n_i`` those holding i and ``N`` all baskets. A pair is
associated when it shares at least ``min_support`` baskets and its lift
``n_ij * N / (n_i * n_j)`` is above 1; each product keeps its ``neighbours`` associated partners
of highest cosine similarity ``n_ij / sqrt(n_i * n_j)``. Ranking by lift itself
(``ranking="lift"``: partners by lift, similarity ``log(lift)``) favours rare products and did
worse than popularity in the offline evaluation (``docs/models.md``), so by default lift only
decides which pairs are associated and is quoted in the reasons.

Recommend (:func:`recommend_members`): a member's candidates are the partners of the last
``history_items`` products they bought, and those products themselves; a candidate scores the
sum of its similarities to them (1 to itself). Products the member already buys regularly (on
``regular_purchases`` days or more) are left out, at most ``max_per_category`` come from one
category, and short lists are topped up with the most popular products under the same rules.
The reason of a recommendation is the member's product that adds most to its score.
:func:`recommend_popular` is the top-up alone: the baseline of the offline evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from loyalty_cdp.core.predictions.history import PurchaseHistory
from loyalty_cdp.core.profile import DAY_MS
from loyalty_cdp.errors import InvalidInput

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

# Members are scored in blocks of about this many (member, product) cells.
CHUNK_CELLS = 2_000_000


@dataclass(frozen=True, slots=True)
class CrossSellConfig:
    neighbours: int = 20
    min_support: int = 3
    top: int = 10
    max_per_category: int = 3
    regular_purchases: int = 2
    history_items: int = 100
    ranking: Literal["cosine", "lift"] = "cosine"

    def __post_init__(self) -> None:
        if self.ranking not in ("cosine", "lift"):
            raise InvalidInput("ranking", "must be cosine or lift")
        for name in ("neighbours", "min_support", "top", "max_per_category", "regular_purchases", "history_items"):
            if getattr(self, name) < 1:
                raise InvalidInput(name, "must be at least 1")


@dataclass(frozen=True, slots=True)
class CrossSellModel:
    """Each product's associated partners (``-1`` pads), best first, with their cosine and lift."""

    baskets: int
    popularity: IntArray
    neighbour: IntArray
    similarity: FloatArray
    lift: FloatArray

    def to_dict(self, product_ids: NDArray[np.str_]) -> dict[str, Any]:
        """The artefact: per product id, ``[partner id, cosine, lift]`` rows (JSON-ready)."""
        rows: dict[str, list[list[Any]]] = {}
        for product in np.flatnonzero(self.neighbour[:, 0] >= 0).tolist():
            partners = self.neighbour[product]
            kept = partners >= 0
            rows[str(product_ids[product])] = [
                [str(product_ids[partner]), round(cosine, 4), round(lift, 3)]
                for partner, cosine, lift in zip(partners[kept].tolist(), self.similarity[product][kept].tolist(),
                                                 self.lift[product][kept].tolist(), strict=True)
            ]
        return {"model": "cross_sell_cooccurrence", "baskets": self.baskets, "neighbours": rows}


@dataclass(frozen=True, slots=True)
class Recommendations:
    """One row per (member, recommended product), best first within each member.

    ``because`` is the member's product that adds most to the score (the product itself when
    the member bought it before, -1 for a popularity top-up) and ``lift`` that pair's lift.
    """

    member: IntArray
    product: IntArray
    score: FloatArray
    because: IntArray
    lift: FloatArray


def _top_per_group(groups: IntArray, keys: FloatArray, limit: int) -> IntArray:
    """Positions of the ``limit`` largest ``keys`` of each group, grouped, largest first (ties: first)."""
    order = np.lexsort((-keys, groups))
    ordered = groups[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if ordered.size else ordered
    rank = np.arange(ordered.size) - np.repeat(starts, np.diff(np.r_[starts, ordered.size]))
    return np.asarray(order[rank < limit], dtype=np.int64)


def fit_cross_sell(history: PurchaseHistory, as_of_ms: int, config: CrossSellConfig | None = None) -> CrossSellModel:
    """Co-occurrence, lift and cosine over the baskets up to ``as_of_ms`` (module docstring)."""
    config = config or CrossSellConfig()
    history = history.until(as_of_ms)
    products = history.product_ids.size
    baskets = sparse.csr_matrix(
        (np.ones(history.line_order.size), (history.line_order, history.line_product)),
        shape=(history.order_time.size, products))
    baskets.data[:] = 1.0  # a product twice in a basket counts once
    popularity = np.asarray(baskets.sum(axis=0), dtype=np.int64).ravel()
    together = sparse.triu(baskets.T @ baskets, k=1).tocoo()
    first, second, shared = together.row.astype(np.int64), together.col.astype(np.int64), together.data
    expected = popularity[first] * popularity[second] / max(baskets.shape[0], 1)
    lift = shared / expected
    associated = (shared >= config.min_support) & (lift > 1)
    first, second, shared, lift = first[associated], second[associated], shared[associated], lift[associated]
    cosine = shared / np.sqrt(popularity[first] * popularity[second])
    if config.ranking == "lift":
        cosine = np.log(lift)
    rows, partners = np.r_[first, second], np.r_[second, first]
    cosines, lifts = np.r_[cosine, cosine], np.r_[lift, lift]
    best = _top_per_group(rows, cosines, config.neighbours)
    rows, partners, cosines, lifts = rows[best], partners[best], cosines[best], lifts[best]
    slot = np.arange(rows.size) - np.searchsorted(rows, rows)
    neighbour = np.full((products, config.neighbours), -1, dtype=np.int64)
    similarity = np.zeros((products, config.neighbours))
    pair_lift = np.zeros((products, config.neighbours))
    neighbour[rows, slot], similarity[rows, slot], pair_lift[rows, slot] = partners, cosines, lifts
    return CrossSellModel(int(baskets.shape[0]), popularity, neighbour, similarity, pair_lift)


@dataclass(frozen=True, slots=True)
class _Bought:
    """Distinct (member, product) pairs, grouped by member, with their purchase days and last purchase."""

    member: IntArray
    product: IntArray
    days: IntArray
    last_ms: IntArray


def _bought(history: PurchaseHistory) -> _Bought:
    products = max(history.product_ids.size, 1)
    by_time = history.lines_by_time()
    pair = (history.line_member * products + history.line_product)[by_time]
    time = history.line_time[by_time]
    order = np.argsort(pair, kind="stable")  # grouped by pair, in time order within each
    pair, time = pair[order], time[order]
    new_pair = np.r_[True, pair[1:] != pair[:-1]] if pair.size else np.zeros(0, dtype=bool)
    day = time // DAY_MS
    new_day = new_pair | (np.r_[True, day[1:] != day[:-1]] if pair.size else new_pair)
    starts = np.flatnonzero(new_pair)
    ends = np.r_[starts[1:], pair.size] - 1
    days = np.add.reduceat(new_day.astype(np.int64), starts) if starts.size else starts
    return _Bought(pair[starts] // products, pair[starts] % products, days, time[ends])


def _recent(bought: _Bought, limit: int) -> NDArray[np.bool_]:
    """Which pairs are among their member's ``limit`` most recently bought products."""
    counts = np.bincount(bought.member)
    keep = np.ones(bought.member.size, dtype=bool)
    crowded = np.flatnonzero(counts[bought.member] > limit)
    if crowded.size:
        keep[crowded] = False
        keep[crowded[_top_per_group(bought.member[crowded], bought.last_ms[crowded].astype(np.float64), limit)]] = True
    return keep


@dataclass(frozen=True, slots=True)
class _Partners:
    """The model as product x candidate matrices: similarity (1 on the diagonal, sparse and dense) and lift."""

    similarity: sparse.csr_matrix
    dense: NDArray[np.float32]
    lift: NDArray[np.float32]


def _partners(model: CrossSellModel) -> _Partners:
    products, width = model.neighbour.shape
    present = model.neighbour >= 0
    sources = np.r_[np.repeat(np.arange(products), width)[present.ravel()], np.arange(products)]
    targets = np.r_[model.neighbour[present], np.arange(products)]
    weights = np.r_[model.similarity[present], np.ones(products)]
    dense = np.zeros((products, products), dtype=np.float32)
    lift = np.zeros((products, products), dtype=np.float32)
    dense[sources, targets] = weights
    lift[sources[:-products], targets[:-products]] = model.lift[present]
    return _Partners(sparse.csr_matrix((weights, (sources, targets)), shape=(products, products)), dense, lift)


def _categories(history: PurchaseHistory) -> IntArray:
    return np.asarray(np.unique(history.product_category, return_inverse=True)[1], dtype=np.int64)


def _pick(scores: FloatArray, category: IntArray, config: CrossSellConfig) -> tuple[IntArray, IntArray]:
    """(row, product) of the best ``top`` finite scores per row, at most ``max_per_category`` per category."""
    rows, products = scores.shape
    depth = min(products, config.top * (config.max_per_category + 1))
    shortlist = np.argpartition(-scores, depth - 1, axis=1)[:, :depth] if depth < products else np.tile(
        np.arange(products), (rows, 1))
    order = np.argsort(-np.take_along_axis(scores, shortlist, axis=1), axis=1, kind="stable")
    shortlist = np.take_along_axis(shortlist, order, axis=1)
    finite = np.isfinite(np.take_along_axis(scores, shortlist, axis=1))
    taken = np.zeros((rows, int(category.max(initial=0)) + 1), dtype=np.int64)
    keep = np.zeros(shortlist.shape, dtype=bool)
    every_row = np.arange(rows)
    for column in range(depth):
        group = category[shortlist[:, column]]
        allowed = finite[:, column] & (taken[every_row, group] < config.max_per_category)
        taken[every_row[allowed], group[allowed]] += 1
        keep[:, column] = allowed
    keep &= np.cumsum(keep, axis=1) <= config.top
    kept_row, kept_column = np.nonzero(keep)
    return kept_row.astype(np.int64), shortlist[kept_row, kept_column].astype(np.int64)


def _because(partners: _Partners, held_row: IntArray, held_product: IntArray, rows: int, row: IntArray,
             pick: IntArray) -> tuple[IntArray, FloatArray]:
    """For each pick, the member's product most similar to it (-1: none) and that pair's lift."""
    per_row = np.bincount(held_row, minlength=rows)
    width = int(per_row.max(initial=0))
    if width == 0:
        return np.full(pick.size, -1, dtype=np.int64), np.zeros(pick.size)
    order = np.argsort(held_row, kind="stable")
    slot = np.arange(order.size) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    held = np.full((rows, width), -1, dtype=np.int64)
    held[held_row[order], slot] = held_product[order]
    sources = held[row]
    weight = np.where(sources >= 0, partners.dense[np.maximum(sources, 0), pick[:, None]], 0.0)
    best = weight.argmax(axis=1)
    every = np.arange(pick.size)
    found = weight[every, best] > 0
    because = np.where(found, sources[every, best], -1)
    return because, np.where(found, partners.lift[np.maximum(because, 0), pick], 0.0).astype(np.float64)


# Popularity breaks ties and tops lists up: a weight far below any similarity.
_POPULARITY_WEIGHT = 1e-12


def _recommend(model: CrossSellModel, history: PurchaseHistory, as_of_ms: int, config: CrossSellConfig,
               use_history: bool) -> Recommendations:
    history = history.until(as_of_ms)
    products = history.product_ids.size
    bought = _bought(history)
    regular = bought.days >= config.regular_purchases
    sources = _recent(bought, config.history_items) if use_history else np.zeros(bought.member.size, dtype=bool)
    partners = _partners(model)
    category = _categories(history)
    prior = _POPULARITY_WEIGHT * model.popularity / max(int(model.popularity.max(initial=0)), 1)
    members = np.unique(bought.member)
    first_pair = np.searchsorted(bought.member, members)
    chunk = max(1, CHUNK_CELLS // max(products, 1))
    parts: list[tuple[IntArray, IntArray, FloatArray, IntArray, FloatArray]] = []
    for start in range(0, members.size, chunk):
        block = members[start:start + chunk]
        low = first_pair[start]
        high = first_pair[start + chunk] if start + chunk < members.size else bought.member.size
        local = np.searchsorted(block, bought.member[low:high])
        product, from_history, is_regular = bought.product[low:high], sources[low:high], regular[low:high]
        held = sparse.csr_matrix((np.ones(int(from_history.sum())), (local[from_history], product[from_history])),
                                 shape=(block.size, products))
        scores = (held @ partners.similarity).toarray() + prior
        scores[local[is_regular], product[is_regular]] = -np.inf
        row, pick = _pick(scores, category, config)
        score = scores[row, pick]
        because, lift = _because(partners, local[from_history], product[from_history], block.size, row, pick)
        parts.append((block[row], pick, np.where(because >= 0, score - prior[pick], 0.0), because, lift))
    if not parts:
        nothing = np.zeros(0, dtype=np.int64)
        return Recommendations(nothing, nothing, np.zeros(0), nothing, np.zeros(0))
    member, product, score, because, lift = (np.concatenate(column) for column in zip(*parts, strict=True))
    return Recommendations(member, product, score, because, lift)


def recommend_members(model: CrossSellModel, history: PurchaseHistory, as_of_ms: int,
                      config: CrossSellConfig | None = None) -> Recommendations:
    """Up to ``top`` recommendations for every member with an order up to ``as_of_ms``."""
    return _recommend(model, history, as_of_ms, config or CrossSellConfig(), use_history=True)


def recommend_popular(model: CrossSellModel, history: PurchaseHistory, as_of_ms: int,
                      config: CrossSellConfig | None = None) -> Recommendations:
    """The baseline: the most popular products, with the same exclusions and category rule."""
    return _recommend(model, history, as_of_ms, config or CrossSellConfig(), use_history=False)


def _label(history: PurchaseHistory, product: int) -> str:
    return str(history.product_name[product] or history.product_ids[product])


def member_cross_sell(recommendations: Recommendations, history: PurchaseHistory) -> dict[int, list[dict[str, Any]]]:
    """Per member code, its recommendations best first, each with a plain-language reason."""
    entries: dict[int, list[dict[str, Any]]] = {}
    rows = zip(recommendations.member.tolist(), recommendations.product.tolist(), recommendations.because.tolist(),
               recommendations.lift.tolist(), strict=True)
    for member, product, because, lift in rows:
        if because < 0:
            reason = "popular with members"
        elif because == product:
            reason = "you bought it before"
        else:
            reason = f"often bought with {_label(history, because)} ({lift:.1f}x more often than by chance)"
        entries.setdefault(member, []).append({
            "product_id": str(history.product_ids[product]), "name": str(history.product_name[product]),
            "category": str(history.product_category[product]), "reason": reason,
        })
    return entries
