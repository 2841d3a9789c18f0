"""Cross-sell: co-occurrence, lift and cosine by hand, exclusions, category diversity, popularity top-ups,
and the offline evaluation against popularity on simulated members."""

from __future__ import annotations

import numpy as np
import pytest
from eval.crosssell import evaluate
from eval.simdata import simulated_history

from loyalty_cdp.core.predictions.crosssell import (
    CrossSellConfig,
    fit_cross_sell,
    recommend_members,
    recommend_popular,
)
from loyalty_cdp.core.predictions.history import HistoryBuilder, PurchaseHistory
from loyalty_cdp.errors import InvalidInput

DAY_MS = 86_400_000
START = 1_767_225_600_000
CATEGORY = {"pasta": "Dry", "sauce": "Dry", "cheese": "Dairy", "milk": "Dairy", "soap": "Home", "sponge": "Home",
            "salt": "Dry", "oil": "Dry"}


def history_of(orders: list[tuple[str, int, list[str]]]) -> PurchaseHistory:
    builder = HistoryBuilder()
    for number, (member, day, products) in enumerate(orders):
        builder.add_order(member, START + day * DAY_MS, {"order_id": f"o{number}", "products": [
            {"product_id": product, "category": CATEGORY[product]} for product in products]})
    return builder.build()


def named(history: PurchaseHistory, codes: np.ndarray) -> list[str]:
    return history.product_ids[codes].tolist()


BASKETS = (
    [("a", day, ["pasta", "sauce", "cheese"]) for day in range(4)]
    + [("b", day, ["pasta", "sauce"]) for day in range(3)]
    + [("c", day, ["soap", "sponge"]) for day in range(3)]
    + [("d", day, ["milk"]) for day in range(6)]
    + [("e", 0, ["pasta"])]
)


def test_partners_are_associated_pairs_ranked_by_cosine() -> None:
    history = history_of(BASKETS)
    model = fit_cross_sell(history, START + 10 * DAY_MS, CrossSellConfig(min_support=3))
    code = {product: i for i, product in enumerate(history.product_ids.tolist())}
    # 17 baskets; pasta in 8, sauce in 7, together in 7: lift 7 * 17 / 56, cosine 7 / sqrt(56).
    pasta = model.neighbour[code["pasta"]]
    assert named(history, pasta[pasta >= 0]) == ["sauce", "cheese"]
    assert model.lift[code["pasta"], 0] == pytest.approx(7 * 17 / 56)
    assert model.similarity[code["pasta"], 0] == pytest.approx(7 / np.sqrt(56))
    assert model.neighbour[code["milk"], 0] == -1  # milk is never bought with anything
    assert model.to_dict(history.product_ids)["neighbours"]["soap"] == [["sponge", 1.0, round(17 / 3, 3)]]


def test_recommendations_follow_the_baskets_and_skip_what_the_member_buys_regularly() -> None:
    history = history_of(BASKETS)
    as_of = START + 10 * DAY_MS
    config = CrossSellConfig(min_support=3, top=3)
    recommendations = recommend_members(fit_cross_sell(history, as_of, config), history, as_of, config)
    lists = {member: [] for member in "abcde"}
    for member, product, because in zip(recommendations.member.tolist(), recommendations.product.tolist(),
                                        recommendations.because.tolist(), strict=True):
        lists[str(history.member_ids[member])].append((str(history.product_ids[product]),
                                                       None if because < 0 else str(history.product_ids[because])))
    # e bought pasta once: pasta itself may come back, then its partners, then popular products.
    assert lists["e"] == [("pasta", "pasta"), ("sauce", "pasta"), ("cheese", "pasta")]
    # b buys pasta and sauce regularly: cheese goes with them (closest to sauce); then popular products.
    assert lists["b"][0] == ("cheese", "sauce") and all(p not in ("pasta", "sauce") for p, _ in lists["b"])
    assert lists["d"][0][1] is None  # milk has no partners: popular top-ups only
    assert all(len(items) == 3 for items in lists.values())


def test_at_most_so_many_products_of_one_category() -> None:
    orders = [("m", 0, ["pasta", "sauce", "salt", "oil", "cheese"]) for _ in range(5)]
    orders += [(f"x{i}", 1, ["pasta", "sauce", "salt", "oil", "cheese"]) for i in range(5)]
    orders += [("new", 2, ["pasta"])]
    history = history_of(orders)
    as_of = START + 5 * DAY_MS
    config = CrossSellConfig(min_support=2, max_per_category=2, top=4)
    recommendations = recommend_members(fit_cross_sell(history, as_of, config), history, as_of, config)
    mine = recommendations.product[history.member_ids[recommendations.member] == "new"]
    categories = [CATEGORY[p] for p in named(history, mine)]
    assert categories.count("Dry") == 2 and len(mine) == 3  # pasta and one partner of Dry, cheese of Dairy


def test_popularity_baseline_uses_the_same_rules() -> None:
    history = history_of(BASKETS)
    as_of = START + 10 * DAY_MS
    config = CrossSellConfig(top=2, max_per_category=1)
    popular = recommend_popular(fit_cross_sell(history, as_of, config), history, as_of, config)
    mine = popular.product[history.member_ids[popular.member] == "e"]
    assert named(history, mine) == ["pasta", "milk"]  # the most bought of Dry, then of Dairy
    for_a = popular.product[history.member_ids[popular.member] == "a"]
    assert named(history, for_a) == ["milk", "soap"]  # a buys pasta and cheese regularly


def test_bad_configuration_is_refused() -> None:
    for field, overrides in (("top", {"top": 0}), ("ranking", {"ranking": "random"})):
        with pytest.raises(InvalidInput) as caught:
            CrossSellConfig(**overrides)  # type: ignore[arg-type]
        assert caught.value.field == field


def test_hit_rate_on_the_next_basket_beats_popularity() -> None:
    rates = evaluate(simulated_history(members=500, days=200, seed=2), cut_day=160, config=CrossSellConfig())
    assert rates.members > 250
    assert rates.cross_sell > rates.popularity + 0.03
