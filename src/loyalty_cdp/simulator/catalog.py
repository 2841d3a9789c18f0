"""The simulated retailer's product catalog: categories, brands, prices, promotions and launches."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

DAY_MS = 86_400_000
WEEK_DAYS = 7
# New products launch during the first year; a launch is never on promotion for four weeks.
LAUNCH_WINDOW_DAYS = (3, 365)
LAUNCH_FULL_PRICE_DAYS = 28
LAUNCHES = 18
PROMO_PERCENTS = (10, 15, 20, 25, 30)


@dataclass(frozen=True)
class Category:
    name: str
    slug: str
    # Typical days between two purchases of one product, None when not replenished.
    cycle_days: float | None
    price_range: tuple[float, float]
    popularity: float
    brands: tuple[str, ...]
    items: tuple[str, ...]
    search_terms: tuple[str, ...]


CATEGORIES: tuple[Category, ...] = (
    Category(
        "Pet Food", "pet-food", 30, (14, 70), 1.2,
        ("Barkley", "Whisker & Co", "TrueTail"),
        ("Dry Dog Food 12kg", "Grain-Free Dog Food 6kg", "Indoor Cat Food 4kg",
         "Wet Cat Food 12-pack", "Puppy Formula 3kg", "Dental Chews 30-pack"),
        ("dog food", "cat food", "grain free", "puppy", "dental chews"),
    ),
    Category(
        "Coffee", "coffee", 14, (6, 28), 1.3,
        ("Northroast", "Cafe Alba", "Summit Beans"),
        ("Whole Bean Espresso 1kg", "Ground Colombia 500g", "Decaf Blend 500g",
         "Cold Brew Pack", "Single-Origin Ethiopia 250g", "Capsules 50-pack"),
        ("espresso", "coffee beans", "decaf", "cold brew", "capsules"),
    ),
    Category(
        "Produce", "produce", 7, (1.5, 9), 1.5,
        ("Green Acre", "Orchard Lane", "FreshFold"),
        ("Bananas 1kg", "Organic Apples 1.5kg", "Avocados 4-pack", "Baby Spinach 200g",
         "Cherry Tomatoes 500g", "Berry Mix 400g"),
        ("organic", "avocado", "berries", "salad", "fruit"),
    ),
    Category(
        "Beauty", "beauty", 45, (8, 90), 1.0,
        ("Lumiere", "Oakmoss", "Dermaline"),
        ("Hydrating Serum 30ml", "Daily SPF Moisturiser", "Shampoo 400ml", "Conditioner 400ml",
         "Night Cream 50ml", "Lip Balm Trio"),
        ("serum", "spf", "shampoo", "night cream", "vegan skincare"),
    ),
    Category(
        "Baby", "baby", 10, (8, 45), 0.5,
        ("Little Nest", "Pebble", "Snugbee"),
        ("Diapers Size 3 84-pack", "Baby Wipes 6-pack", "Infant Formula 800g",
         "Baby Lotion 300ml"),
        ("diapers", "wipes", "formula", "baby lotion"),
    ),
    Category(
        "Household", "household", 35, (4, 30), 0.9,
        ("Brightwell", "Clearhome", "Evergreen"),
        ("Laundry Detergent 2L", "Dish Tablets 60-pack", "Paper Towels 8-roll",
         "Multi-Surface Spray", "Trash Bags 50-pack"),
        ("detergent", "dish tablets", "paper towels", "eco cleaning"),
    ),
    Category(
        "Snacks", "snacks", None, (2, 14), 1.1,
        ("Crunchly", "Nutwise", "Goldleaf"),
        ("Sea Salt Chips", "Trail Mix 500g", "Dark Chocolate Bar", "Protein Bars 12-pack",
         "Rice Crackers"),
        ("chips", "trail mix", "chocolate", "protein bar"),
    ),
    Category(
        "Electronics", "electronics", None, (15, 650), 0.6,
        ("Voltra", "Nimbus", "Aperture"),
        ("Wireless Earbuds", "Bluetooth Speaker", "USB-C Charger 65W", "Smart Watch",
         "4K Streaming Stick", "Noise-Cancelling Headphones"),
        ("earbuds", "speaker", "charger", "smart watch", "headphones"),
    ),
    Category(
        "Apparel", "apparel", None, (12, 180), 0.8,
        ("Northline", "Harbor & Pine", "Kinetic"),
        ("Crew T-Shirt", "Slim Jeans", "Running Shoes", "Rain Jacket", "Merino Sweater",
         "Yoga Leggings"),
        ("t-shirt", "jeans", "running shoes", "rain jacket", "sweater"),
    ),
    Category(
        "Home", "home", None, (10, 250), 0.7,
        ("Hearth", "Linden", "Casa Viva"),
        ("Cotton Bath Towel Set", "Cast Iron Skillet", "Scented Candle", "Throw Blanket",
         "Ceramic Mug Set", "Table Lamp"),
        ("towels", "skillet", "candle", "blanket", "lamp"),
    ),
)


@dataclass(frozen=True, eq=False)
class Product:
    """One product; compared and hashed by identity (the catalog holds each exactly once)."""

    index: int
    product_id: str
    sku: str
    name: str
    category: str
    brand: str
    price: float
    url: str
    # Day (from the simulation start) the product goes on sale; 0 when it always was.
    launch_day: int
    # On promotion in week w when (w + promo_phase) % promo_every_weeks == 0.
    promo_every_weeks: int
    promo_phase: int
    promo_percent: int

    def discount_percent(self, day: int) -> int:
        """Percentage off the list price on simulation day ``day`` (0 when not on promotion)."""
        if self.launch_day and day < self.launch_day + LAUNCH_FULL_PRICE_DAYS:
            return 0
        if (day // WEEK_DAYS + self.promo_phase) % self.promo_every_weeks == 0:
            return self.promo_percent
        return 0


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def _price(rng: random.Random, low: float, high: float, premium: bool) -> float:
    value = math.exp(rng.uniform(math.log(low), math.log(high)))
    if premium:
        value *= 1.3
    return max(round(value) - 0.01, 0.99)


class Catalog:
    """Products of every category; lookups by category and brand for basket building."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"catalog:{seed}")
        specs: list[tuple[Category, str, str, int]] = []
        for category in CATEGORIES:
            for brand in category.brands:
                for item in category.items:
                    specs.append((category, brand, item, 0))
        for _ in range(LAUNCHES):
            category = rng.choice(CATEGORIES)
            brand = rng.choice(category.brands)
            item = f"{rng.choice(category.items)} Limited Edition"
            specs.append((category, brand, item, rng.randrange(*LAUNCH_WINDOW_DAYS)))
        self.products: tuple[Product, ...] = tuple(
            self._product(index, rng, *spec) for index, spec in enumerate(specs)
        )
        self.categories = CATEGORIES
        self._deals: dict[tuple[str, int], list[Product]] = {}
        # Per (category, brand): products in launch order, so the launched ones are a prefix.
        self._by_category_brand: dict[tuple[str, str], list[Product]] = {}
        for product in sorted(self.products, key=lambda p: p.launch_day):
            self._by_category_brand.setdefault((product.category, product.brand), []).append(
                product
            )

    @staticmethod
    def _product(
        index: int, rng: random.Random, category: Category, brand: str, item: str, launch: int
    ) -> Product:
        name = f"{brand} {item}"
        return Product(
            index=index,
            product_id=f"P{index + 1:05d}",
            sku=f"{category.slug[:3].upper()}-{index + 1:05d}",
            name=name,
            category=category.name,
            brand=brand,
            price=_price(rng, *category.price_range, premium=brand == category.brands[0]),
            url=f"https://shop.example.com/p/{_slug(name)}",
            launch_day=launch,
            promo_every_weeks=rng.randint(3, 8),
            promo_phase=rng.randrange(8),
            promo_percent=rng.choice(PROMO_PERCENTS),
        )

    def category(self, name: str) -> Category:
        return next(c for c in self.categories if c.name == name)

    def on_sale(self, category: str, brand: str, day: int) -> list[Product]:
        """Products of ``brand`` in ``category`` already launched on ``day``."""
        products = self._by_category_brand[(category, brand)]
        if products[-1].launch_day <= day:
            return products
        return [p for p in products if p.launch_day <= day]

    def deals(self, category: str, day: int) -> list[Product]:
        """Products of ``category`` on promotion on ``day`` (computed once per day)."""
        key = (category, day)
        deals = self._deals.get(key)
        if deals is None:
            deals = self._deals[key] = [
                p for p in self.products
                if p.category == category and p.launch_day <= day and p.discount_percent(day)
            ]
        return deals

    def launches(self) -> list[Product]:
        return [p for p in self.products if p.launch_day]
