"""The five personas of the seed documents and the drawing of one member's plan from them.

A persona is a table of parameter ranges; :func:`draw_member` turns it, with the member's own
random stream, into a :class:`MemberPlan`: the planted truth (what tests score against) plus
the numbers the behaviour model needs (days as floats from the simulation start).
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import accumulate

from loyalty_cdp.core.events import format_time
from loyalty_cdp.simulator.catalog import DAY_MS, Catalog, Product
from loyalty_cdp.simulator.people import (
    FIRST_NAMES,
    LAST_NAMES,
    IdentityFactory,
    random_uuid,
)
from loyalty_cdp.simulator.truth import MemberTruth, Replenishment, Spend

CHANNELS = ("pos", "web", "app")
COOKIE_RESET_RATE = 1 / 120  # a web visitor clears cookies (new anonymousId) every ~4 months
APP_REINSTALL_RATE = 1 / 300
MAX_LIFETIME_DAYS = 36_500
FAVOURITE_WEIGHT = 6.0


@dataclass(frozen=True)
class Persona:
    name: str
    share: float
    purchase_rate_mean: float  # discretionary orders per day
    purchase_rate_shape: float  # gamma shape: heterogeneity within the persona
    lifetime_mean_days: float | None  # exponential dropout; None: a lapse date instead
    basket_items_mean: float
    quantity_mean: float
    premium_affinity: tuple[float, float]
    brand_loyalty: tuple[float, float]
    discount_affinity: tuple[float, float]
    redemption_propensity: tuple[float, float]
    browse_rate: float  # browsing sessions per day
    email_open_rate: tuple[float, float]
    email_click_rate: tuple[float, float]
    return_rate: float
    review_rate: float
    channel_alpha: tuple[float, float, float]  # Dirichlet over (pos, web, app)
    replenished_products: tuple[int, int]


PERSONAS: tuple[Persona, ...] = (
    Persona(
        name="price_sensitive",
        share=0.27,
        purchase_rate_mean=1 / 16,
        purchase_rate_shape=3.0,
        lifetime_mean_days=700,
        basket_items_mean=2.5,
        quantity_mean=1.6,
        premium_affinity=(0.0, 0.3),
        brand_loyalty=(0.15, 0.35),
        discount_affinity=(0.7, 0.95),
        redemption_propensity=(0.7, 0.95),
        browse_rate=0.15,
        email_open_rate=(0.25, 0.5),
        email_click_rate=(0.1, 0.3),
        return_rate=0.04,
        review_rate=0.05,
        channel_alpha=(5, 3, 2),
        replenished_products=(1, 2),
    ),
    Persona(
        name="brand_enthusiast",
        share=0.18,
        purchase_rate_mean=1 / 14,
        purchase_rate_shape=3.0,
        lifetime_mean_days=900,
        basket_items_mean=2.0,
        quantity_mean=1.2,
        premium_affinity=(0.6, 1.0),
        brand_loyalty=(0.8, 0.95),
        discount_affinity=(0.0, 0.1),
        redemption_propensity=(0.05, 0.25),
        browse_rate=0.25,
        email_open_rate=(0.4, 0.7),
        email_click_rate=(0.2, 0.45),
        return_rate=0.05,
        review_rate=0.2,
        channel_alpha=(2, 4, 4),
        replenished_products=(0, 2),
    ),
    Persona(
        name="at_risk",
        share=0.2,
        purchase_rate_mean=1 / 18,
        purchase_rate_shape=3.0,
        lifetime_mean_days=None,
        basket_items_mean=2.0,
        quantity_mean=1.3,
        premium_affinity=(0.2, 0.6),
        brand_loyalty=(0.3, 0.6),
        discount_affinity=(0.2, 0.5),
        redemption_propensity=(0.1, 0.4),
        browse_rate=0.08,
        email_open_rate=(0.05, 0.2),
        email_click_rate=(0.02, 0.1),
        return_rate=0.06,
        review_rate=0.03,
        channel_alpha=(5, 3, 1),
        replenished_products=(0, 1),
    ),
    Persona(
        name="high_value",
        share=0.1,
        purchase_rate_mean=1 / 7,
        purchase_rate_shape=4.0,
        lifetime_mean_days=1500,
        basket_items_mean=4.5,
        quantity_mean=1.8,
        premium_affinity=(0.5, 0.9),
        brand_loyalty=(0.4, 0.7),
        discount_affinity=(0.05, 0.3),
        redemption_propensity=(0.2, 0.5),
        browse_rate=0.3,
        email_open_rate=(0.4, 0.75),
        email_click_rate=(0.2, 0.5),
        return_rate=0.05,
        review_rate=0.12,
        channel_alpha=(3, 3, 4),
        replenished_products=(1, 3),
    ),
    Persona(
        name="new",
        share=0.25,
        purchase_rate_mean=1 / 21,
        purchase_rate_shape=2.0,
        lifetime_mean_days=250,
        basket_items_mean=1.8,
        quantity_mean=1.2,
        premium_affinity=(0.2, 0.7),
        brand_loyalty=(0.3, 0.6),
        discount_affinity=(0.2, 0.6),
        redemption_propensity=(0.1, 0.4),
        browse_rate=0.2,
        email_open_rate=(0.3, 0.6),
        email_click_rate=(0.1, 0.3),
        return_rate=0.05,
        review_rate=0.06,
        channel_alpha=(2, 4, 4),
        replenished_products=(0, 2),
    ),
)
PERSONA_NAMES = tuple(p.name for p in PERSONAS)
_PERSONA_CUM = list(accumulate(p.share for p in PERSONAS))


@dataclass(frozen=True)
class AppInstall:
    day: float
    anonymous_id: str
    device_id: str
    os: str


@dataclass(frozen=True)
class MemberPlan:
    """A member's truth plus the day-based numbers that drive their behaviour."""

    truth: MemberTruth
    join_day: float
    dropout_day: float
    # (first day in use, anonymousId), in order; the first may precede joining (browsing).
    web_cookies: tuple[tuple[float, str], ...]
    app_installs: tuple[AppInstall, ...]
    category_cum_weights: tuple[float, ...]
    favourite_brand: dict[str, str]
    channel_cum: tuple[float, ...]
    replenished: tuple[tuple[Product, Replenishment], ...]


def _between(rng: random.Random, bounds: tuple[float, float]) -> float:
    return round(rng.uniform(*bounds), 3)


def _dirichlet(rng: random.Random, alpha: tuple[float, ...]) -> list[float]:
    draws = [rng.gammavariate(a, 1.0) for a in alpha]
    total = sum(draws)
    return [d / total for d in draws]


def _iso(start_ms: int, day: float) -> str:
    return format_time(start_ms + int(day * DAY_MS))


def _renewals(rng: random.Random, first: float, rate: float, horizon: float) -> list[float]:
    """Times of a Poisson process of ``rate`` on [first, horizon), starting with ``first``."""
    times = [first]
    while True:
        following = times[-1] + rng.expovariate(rate)
        if following >= horizon:
            return times
        times.append(following)


def _replenished(
    rng: random.Random, catalog: Catalog, persona: Persona, favourites: list[str],
    favourite_brand: dict[str, str],
) -> list[tuple[Product, Replenishment]]:
    replenishable = [(c, c.cycle_days) for c in catalog.categories if c.cycle_days]
    preferred = [pair for pair in replenishable if pair[0].name in favourites]
    others = [pair for pair in replenishable if pair[0].name not in favourites]
    rng.shuffle(others)
    chosen = (preferred + others)[: rng.randint(*persona.replenished_products)]
    result = []
    for category, typical_cycle in chosen:
        brand = favourite_brand.get(category.name) or rng.choice(category.brands)
        product = rng.choice(catalog.on_sale(category.name, brand, 0))
        cycle = round(typical_cycle * rng.uniform(0.8, 1.25), 1)
        jitter = round(min(rng.uniform(0.5, 2.0), cycle / 6), 2)
        truth = Replenishment(product.product_id, product.sku, category.name, cycle, jitter)
        result.append((product, truth))
    return result


def draw_member(
    index: int,
    rng: random.Random,
    catalog: Catalog,
    identities: IdentityFactory,
    start: date,
    days: int,
) -> MemberPlan:
    """Draw member ``index``'s persona, identity and behaviour parameters from ``rng``."""
    start_ms = int((start - date(1970, 1, 1)).total_seconds() * 1000)
    drawn = bisect(_PERSONA_CUM, rng.random() * _PERSONA_CUM[-1])
    persona = PERSONAS[min(drawn, len(PERSONAS) - 1)]
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    birthday = start - timedelta(days=rng.randint(18 * 365, 80 * 365))

    is_new = persona.name == "new"
    join_day = rng.uniform(0, days) if is_new else 0.0
    rate = rng.gammavariate(persona.purchase_rate_shape, persona.purchase_rate_mean
                            / persona.purchase_rate_shape)
    half_life: float | None = None
    if persona.lifetime_mean_days is None:
        dropout_day = rng.uniform(0.3, 1.2) * days
        half_life = round(max(dropout_day / 2, 1.0), 3)
    else:
        lifetime = min(rng.expovariate(1 / persona.lifetime_mean_days), MAX_LIFETIME_DAYS)
        dropout_day = join_day + lifetime

    categories = catalog.categories
    favourites = _popular_picks(rng, catalog)
    favourite_brand = {name: rng.choice(catalog.category(name).brands) for name in favourites}
    weights = [
        c.popularity * (FAVOURITE_WEIGHT if c.name in favourites else 1.0) for c in categories
    ]
    mix = _dirichlet(rng, persona.channel_alpha)
    replenished = _replenished(rng, catalog, persona, favourites, favourite_brand)

    pre_join = rng.uniform(1, 10) if is_new else 0.0
    web_cookies = tuple(
        (day, random_uuid(rng))
        for day in _renewals(rng, max(join_day - pre_join, 0.0), COOKIE_RESET_RATE, days)
    )
    app_installs: tuple[AppInstall, ...] = ()
    if mix[2] > 0.1:
        os_name = rng.choice(("ios", "android"))
        app_installs = tuple(
            AppInstall(day, random_uuid(rng), random_uuid(rng).upper(), os_name)
            for day in _renewals(rng, join_day, APP_REINSTALL_RATE, days)
        )

    truth = MemberTruth(
        index=index,
        user_id=identities.user_id(index),
        persona=persona.name,
        first_name=first,
        last_name=last,
        email=identities.email(index, first, last),
        phone=identities.phone(index),
        birthday=birthday.isoformat(),
        card_number=identities.card_number(index),
        pos_customer_id=identities.pos_customer_id(index),
        anonymous_ids=[cookie for _, cookie in web_cookies]
        + [install.anonymous_id for install in app_installs],
        device_ids=[install.device_id for install in app_installs],
        joined_at=_iso(start_ms, join_day) if is_new else None,
        purchase_rate_per_day=round(rate, 5),
        rate_half_life_days=half_life,
        order_rate_per_day=round(rate + sum(1 / r.cycle_days for _, r in replenished), 5),
        dropout_at=_iso(start_ms, dropout_day),
        alive_at_end=dropout_day >= days,
        replenishment=[r for _, r in replenished],
        favourite_categories=favourites,
        favourite_brands=[favourite_brand[c] for c in favourites],
        brand_loyalty=_between(rng, persona.brand_loyalty),
        channel_mix={c: round(share, 3) for c, share in zip(CHANNELS, mix, strict=True)},
        spend=Spend(
            basket_items_mean=persona.basket_items_mean,
            quantity_mean=persona.quantity_mean,
            premium_affinity=_between(rng, persona.premium_affinity),
        ),
        discount_affinity=_between(rng, persona.discount_affinity),
        redemption_propensity=_between(rng, persona.redemption_propensity),
        browse_rate_per_day=round(persona.browse_rate * rng.uniform(0.5, 1.5), 4),
        email_open_rate=_between(rng, persona.email_open_rate),
        email_click_rate=_between(rng, persona.email_click_rate),
        return_rate=persona.return_rate,
        review_rate=persona.review_rate,
        consent=consent_answer(identities.user_id(index), bool(app_installs)),
        push_tokens=[push_token(install.device_id) for install in app_installs],
    )
    return MemberPlan(
        truth=truth,
        join_day=join_day,
        dropout_day=dropout_day,
        web_cookies=web_cookies,
        app_installs=app_installs,
        category_cum_weights=tuple(accumulate(weights)),
        favourite_brand=favourite_brand,
        channel_cum=tuple(accumulate(mix)),
        replenished=tuple(replenished),
    )


# The consent banner: how many members never answer it, and how many of those who do allow
# each category (app users are asked for push notifications by the app).
CONSENT_UNANSWERED = 0.15
CONSENT_SHARES = {"Email Marketing": 0.85, "SMS Marketing": 0.4, "Advertising": 0.5}
PUSH_SHARE = 0.75
PERSONALIZATION_SHARE = 0.7  # "Personalization": profiling and automated decisions (scores used for offers)


def consent_answer(user_id: str, app_user: bool) -> dict[str, bool] | None:
    """A member's consent categories, or None if they never answered.

    Drawn from a stream of its own (seeded by the member), so that adding it changed no other
    draw of the simulation."""
    rng = random.Random(f"consent:{user_id}")
    if rng.random() < CONSENT_UNANSWERED:
        return None
    answer = {category: rng.random() < share for category, share in CONSENT_SHARES.items()}
    if app_user:
        answer["Push Notifications"] = rng.random() < PUSH_SHARE
    answer["Personalization"] = rng.random() < PERSONALIZATION_SHARE  # drawn last: the others stay as they were
    return answer


def push_token(device_id: str) -> str:
    """The app's push registration token on one install (shaped like an FCM token)."""
    digest = hashlib.blake2b(device_id.encode(), digest_size=48).hexdigest()
    return f"{digest[:22]}:APA91b{digest[22:]}"


def _popular_picks(rng: random.Random, catalog: Catalog) -> list[str]:
    """Two or three distinct categories, drawn in proportion to their popularity."""
    names = [c.name for c in catalog.categories]
    weights = [c.popularity for c in catalog.categories]
    picks: list[str] = []
    wanted = rng.randint(2, 3)
    while len(picks) < wanted:
        name = rng.choices(names, weights)[0]
        if name not in picks:
            picks.append(name)
    return picks
