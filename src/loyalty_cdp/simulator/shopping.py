"""What a member buys: product choice by taste, baskets, wishlists and points redemption."""

from __future__ import annotations

import math
import random
from bisect import bisect

from loyalty_cdp.simulator.catalog import Catalog, Category, Product
from loyalty_cdp.simulator.personas import MemberPlan

# The simulator's own, cautious reckoning of spendable points, so that redemptions stay
# within what a typical program (1 point per currency unit, 30-day pending window) grants.
POINTS_PER_UNIT = 0.8
PENDING_DAYS = 30
REDEMPTION_BLOCK = 100
MAX_QUANTITY = 6
WISHLIST_RECALL = 0.2

Line = tuple[Product, int, float]  # product, quantity, discount amount on the line


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw by Knuth's method (the means used here are small)."""
    if mean <= 0:
        return 0
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class Shopper:
    """One member's tastes and purchase state, drawing from the shared random stream."""

    def __init__(self, plan: MemberPlan, catalog: Catalog, rng: random.Random) -> None:
        self.plan = plan
        self.truth = plan.truth
        self.catalog = catalog
        self.rng = rng
        self.wishlist: list[Product] = []
        self.replenished = frozenset(product for product, _ in plan.replenished)
        self.points = 0.0
        self.pending_points: list[tuple[int, float]] = []

    def category(self) -> Category:
        cumulative = self.plan.category_cum_weights
        return self.catalog.categories[bisect(cumulative, self.rng.random() * cumulative[-1])]

    def pick(self, day: int, shopping: bool, category: Category | None = None) -> Product:
        """A product the member looks at (or, ``shopping``, buys) on ``day``, by their tastes.

        Wishlisted items come back (sooner when on promotion); a discount seeker (with
        probability ``discount_affinity``) takes a promoted product of the category.
        Products on a replenishment cycle are bought on that cycle only.
        """
        for _ in range(3):
            product = self._draw(day, shopping, category)
            if not shopping or product not in self.replenished:
                break
        return product

    def _draw(self, day: int, shopping: bool, category: Category | None) -> Product:
        rng, truth, catalog = self.rng, self.truth, self.catalog
        if shopping and self.wishlist and rng.random() < WISHLIST_RECALL:
            wished = rng.choice(self.wishlist)
            if wished.discount_percent(day) or rng.random() < 0.5:
                self.wishlist.remove(wished)
                return wished
        if category is None:
            category = self.category()
        if rng.random() < truth.discount_affinity:
            deals = catalog.deals(category.name, day)
            if deals:
                return rng.choice(deals)
        favourite = self.plan.favourite_brand.get(category.name)
        if favourite is not None and rng.random() < truth.brand_loyalty:
            brand = favourite
        elif rng.random() < truth.spend.premium_affinity * 0.5:
            brand = category.brands[0]
        else:
            brand = rng.choice(category.brands)
        return rng.choice(catalog.on_sale(category.name, brand, day))

    def wish(self, product: Product) -> bool:
        """Maybe add ``product`` to the wishlist (discount seekers wish more); True if added."""
        chance = 0.05 + 0.1 * self.truth.discount_affinity
        if product in self.wishlist or self.rng.random() >= chance:
            return False
        self.wishlist.append(product)
        return True

    def basket(self, day: int, forced: tuple[Product, ...]) -> list[Line]:
        """The lines of an order on ``day``: the ``forced`` products, plus the member's picks."""
        rng, spend = self.rng, self.truth.spend
        quantities: dict[Product, int] = dict.fromkeys(forced, 1)
        extra = poisson(rng, 0.5) if forced else 1 + poisson(rng, spend.basket_items_mean - 1)
        for _ in range(extra):
            product = self.pick(day, shopping=True)
            quantity = min(1 + poisson(rng, spend.quantity_mean - 1), MAX_QUANTITY)
            quantities[product] = quantities.get(product, 0) + quantity
        return [
            (product, quantity,
             round(product.price * product.discount_percent(day) / 100 * quantity, 2))
            for product, quantity in quantities.items()
        ]

    def redeem(self, day: int, total: float) -> int:
        """Points spent on an order of ``total`` on ``day`` (0 most of the time)."""
        matured = [points for earned, points in self.pending_points if earned + PENDING_DAYS < day]
        if matured:
            self.points += sum(matured)
            self.pending_points = [
                entry for entry in self.pending_points if entry[0] + PENDING_DAYS >= day
            ]
        blocks = min(int(self.points // REDEMPTION_BLOCK), int(total), self.rng.randint(1, 3))
        if blocks < 1 or self.rng.random() >= self.truth.redemption_propensity:
            return 0
        self.points -= blocks * REDEMPTION_BLOCK
        return blocks * REDEMPTION_BLOCK

    def earn(self, day: int, total: float) -> None:
        self.pending_points.append((day, total * POINTS_PER_UNIT))
