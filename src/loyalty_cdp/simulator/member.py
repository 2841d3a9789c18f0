"""One member's behaviour: the processes that turn a :class:`MemberPlan` into Segment calls.

Processes (all stop at the member's dropout, except email opens, which fade to 15%):
discretionary orders (Poisson at the planted rate, halving every ``rate_half_life_days`` for
at-risk members), one replenishment schedule per replenished product (cycle plus normal
jitter), early full-price orders of favourite-brand launches (brand enthusiasts), browsing
sessions on web and app, and email opens and clicks of the weekly campaign. Orders may be
followed by a partial refund and a review. A Poisson arrival fixes the day; the hour comes
from the channel's daily rhythm (store hours for POS, evening peaks online).
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from loyalty_cdp.simulator.calls import (
    IsoClock,
    call,
    external_id,
    order_line,
    product_properties,
)
from loyalty_cdp.simulator.catalog import DAY_MS, Catalog, Category, Product
from loyalty_cdp.simulator.people import random_uuid, styled_email, styled_phone
from loyalty_cdp.simulator.personas import CHANNELS, AppInstall, MemberPlan, push_token
from loyalty_cdp.simulator.scheduler import Scheduler
from loyalty_cdp.simulator.shopping import Line, Shopper, poisson

HOUR_WEIGHTS = {
    "pos": (0, 0, 0, 0, 0, 0, 0, 0, 2, 4, 6, 7, 8, 7, 5, 5, 6, 8, 8, 6, 4, 2, 0, 0),
    "web": (1, .6, .4, .3, .3, .5, 1, 2, 3, 3, 3, 3, 4, 4, 3, 3, 3, 4, 5, 6, 7, 7, 5, 2),
    "app": (.5, .3, .2, .2, .3, .8, 2, 4, 5, 4, 3, 3, 4, 4, 3, 3, 3, 4, 5, 6, 6, 5, 3, 1),
}
_HOUR_CUM = {channel: tuple(accumulate(w)) for channel, w in HOUR_WEIGHTS.items()}
STORES = 40
APP = {"name": "Shop", "version": "4.2.0", "build": "4200"}
LAPSED_EMAIL_FACTOR = 0.15
LAUNCH_BUY_PROBABILITY = 0.75
RATINGS = (1, 2, 3, 4, 5)
RATING_CUM = tuple(accumulate((0.04, 0.06, 0.15, 0.35, 0.40)))
REVIEWS = {
    1: "Disappointed, not as described.",
    2: "Below expectations for the price.",
    3: "Does the job, nothing special.",
    4: "Good quality, would buy again.",
    5: "Excellent, exactly what I needed!",
}


@dataclass(frozen=True)
class World:
    """What every member shares: the random stream, catalog, scheduler and calendar."""

    rng: random.Random
    catalog: Catalog
    scheduler: Scheduler
    iso: IsoClock
    start_ms: int
    days: int
    currency: str


@dataclass(frozen=True)
class Order:
    """What a later refund needs to know about an order."""

    order_id: str
    channel: str
    lines: tuple[Line, ...]


class MemberAgent:
    """Schedules one member's processes on the shared scheduler and emits their calls."""

    def __init__(self, plan: MemberPlan, world: World) -> None:
        self.plan = plan
        self.truth = plan.truth
        self.world = world
        self.rng = world.rng
        self.linked: set[str] = set()
        self.shopper = Shopper(plan, world.catalog, world.rng)
        self.home_store = f"S{world.rng.randrange(STORES) + 1:03d}"

    # ----------------------------------------------------------------- helpers
    def _ms(self, day: float) -> int:
        return self.world.start_ms + int(day * DAY_MS)

    def _day(self, time_ms: int) -> float:
        return (time_ms - self.world.start_ms) / DAY_MS

    def _gap(self) -> int:
        """Milliseconds between two steps of a session: 3 to 90 seconds."""
        return 3000 + int(self.rng.random() * 87_000)

    def _emit(self, time_ms: int, kind: str, user: str | None, anon: str | None,
              context: dict[str, Any], **fields: Any) -> None:
        world = self.world
        message = call(kind, random_uuid(self.rng), world.iso(time_ms), user, anon, context)
        message.update(fields)
        world.scheduler.emit(time_ms, message)

    def _track(self, time_ms: int, event: str, user: str | None, anon: str | None,
               context: dict[str, Any], properties: dict[str, Any]) -> None:
        world = self.world
        message = call("track", random_uuid(self.rng), world.iso(time_ms), user, anon, context)
        message["event"] = event
        message["properties"] = properties
        world.scheduler.emit(time_ms, message)

    def _time_in_day(self, day: int, channel: str) -> float:
        cumulative = _HOUR_CUM[channel]
        hour = bisect(cumulative, self.rng.random() * cumulative[-1])
        return day + (hour + self.rng.random()) / 24

    def _session_day(self, raw_day: float, channel: str) -> float | None:
        """When in ``raw_day``'s date the session happens; None if the member is gone by then."""
        day = self._time_in_day(int(raw_day), channel)
        if day < self.plan.join_day:
            day = self.plan.join_day + self.rng.uniform(0.001, 0.02)
        return day if day < self.plan.dropout_day else None

    def _channel(self) -> str:
        cumulative = self.plan.channel_cum
        return CHANNELS[bisect(cumulative, self.rng.random() * cumulative[-1])]

    def _online_channel(self) -> str:
        mix = self.truth.channel_mix
        if not self.plan.app_installs:
            return "web"
        return "web" if self.rng.random() * (mix["web"] + mix["app"]) < mix["web"] else "app"

    def _cookie(self, day: float) -> str:
        current = self.plan.web_cookies[0][1]
        for first_day, cookie in self.plan.web_cookies:
            if first_day > day:
                break
            current = cookie
        return current

    def _install(self, day: float) -> AppInstall | None:
        current = None
        for install in self.plan.app_installs:
            if install.day > day:
                break
            current = install
        return current

    def _context(self, channel: str, install: AppInstall | None = None) -> dict[str, Any]:
        if channel == "app" and install is not None:
            return {
                "channel": "app",
                "app": dict(APP),
                "device": {"id": install.device_id, "type": install.os},
                "os": {"name": "iOS" if install.os == "ios" else "Android"},
            }
        if channel in ("pos", "loyalty"):
            ids = [external_id(self.truth.card_number, "card_number")]
            if channel == "pos":
                ids.append(external_id(self.truth.pos_customer_id, "pos_customer_id"))
            return {"channel": channel, "externalIds": ids}
        return {"channel": channel}

    def _traits(self, time_ms: int | None = None) -> dict[str, Any]:
        truth = self.truth
        traits = {
            "email": styled_email(truth.email, self.rng),
            "phone": styled_phone(truth.phone, self.rng),
            "first_name": truth.first_name,
            "last_name": truth.last_name,
            "birthday": truth.birthday,
            "card_number": truth.card_number,
        }
        install = None if time_ms is None else self._install(self._day(time_ms))
        if install is not None and self._allows_push():
            traits["push_token"] = push_token(install.device_id)
        return traits

    def _allows_push(self) -> bool:
        return bool(self.truth.consent and self.truth.consent.get("Push Notifications"))

    def _with_consent(self, context: dict[str, Any]) -> dict[str, Any]:
        """``context`` with the member's consent banner answer, as Segment's consent manager adds it."""
        if self.truth.consent is not None:
            context["consent"] = {"categoryPreferences": dict(self.truth.consent)}
        return context

    # --------------------------------------------------------------- processes
    def start(self) -> None:
        """Schedule enrolment and the first occurrence of every process."""
        plan, rng, at = self.plan, self.rng, self.world.scheduler.at
        if self.truth.joined_at is None:
            at(self._ms(rng.uniform(0, 1)), self._enrol_existing)
        else:
            first_visit = plan.web_cookies[0][0]
            for _ in range(rng.randint(1, 3)):
                at(self._ms(rng.uniform(first_visit, plan.join_day)), self._browse, "web")
            at(self._ms(plan.join_day), self._enrol_new)
        self._next_order(plan.join_day)
        for product, replenishment in plan.replenished:
            due = plan.join_day + rng.uniform(0, replenishment.cycle_days)
            at(self._ms(int(due)), self._replenish, (due, product, replenishment))
        self._next_browse(plan.join_day)
        if self.truth.persona == "brand_enthusiast":
            self._plan_launch_orders()

    def _next_arrival(self, after: float, rate: float) -> float | None:
        plan, rng = self.plan, self.rng
        half_life = self.truth.rate_half_life_days
        stop = min(plan.dropout_day, self.world.days)
        moment = after
        while True:
            moment += rng.expovariate(rate)
            if moment >= stop:
                return None
            if half_life is None or rng.random() < 0.5 ** (moment / half_life):
                return moment

    def _next_order(self, after: float) -> None:
        arrival = self._next_arrival(after, self.truth.purchase_rate_per_day)
        if arrival is not None:
            self.world.scheduler.at(self._ms(int(arrival)), self._order_wake, arrival)

    def _order_wake(self, _: int, arrival: float) -> None:
        channel = self._channel()
        day = self._session_day(arrival, channel)
        if day is not None:
            self.world.scheduler.at(self._ms(day), self._order, (channel, ()))
        self._next_order(arrival)

    def _replenish(self, _: int, argument: tuple[float, Product, Any]) -> None:
        due, product, replenishment = argument
        channel = self._channel()
        day = self._session_day(due, channel)
        if day is None:
            return
        self.world.scheduler.at(self._ms(day), self._order, (channel, (product,)))
        jitter = replenishment.jitter_days
        noise = max(-3 * jitter, min(3 * jitter, self.rng.gauss(0, jitter)))
        following = due + replenishment.cycle_days + noise
        self.world.scheduler.at(
            self._ms(int(following)), self._replenish, (following, product, replenishment)
        )

    def _next_browse(self, after: float) -> None:
        arrival = self._next_arrival(after, self.truth.browse_rate_per_day)
        if arrival is not None:
            self.world.scheduler.at(self._ms(int(arrival)), self._browse_wake, arrival)

    def _browse_wake(self, _: int, arrival: float) -> None:
        channel = self._online_channel()
        day = self._session_day(arrival, channel)
        if day is not None:
            self.world.scheduler.at(self._ms(day), self._browse, channel)
        self._next_browse(arrival)

    def _plan_launch_orders(self) -> None:
        plan = self.plan
        for product in self.world.catalog.launches():
            if plan.favourite_brand.get(product.category) != product.brand:
                continue
            day = product.launch_day + self.rng.uniform(0, 3)
            if plan.join_day <= day < plan.dropout_day and (
                self.rng.random() < LAUNCH_BUY_PROBABILITY
            ):
                channel = self._online_channel()
                self.world.scheduler.at(self._ms(day), self._order, (channel, (product,)))

    def on_campaign(self, send_ms: int, campaign: tuple[str, str, str]) -> None:
        """The weekly campaign email reached this member: maybe open it, later."""
        day = self._day(send_ms)
        if day < self.plan.join_day:
            return
        rate = self.truth.email_open_rate
        if day >= self.plan.dropout_day:
            rate *= LAPSED_EMAIL_FACTOR
        if self.rng.random() < rate:
            delay_hours = min(self.rng.expovariate(1 / 8), 72)
            self.world.scheduler.at(send_ms + int(delay_hours * 3_600_000), self._email, campaign)

    # ---------------------------------------------------------------- sessions
    def _enrol_existing(self, time_ms: int, _: Any) -> None:
        self._emit(time_ms, "identify", self.truth.user_id, None, self._with_consent(self._context("loyalty")),
                   traits=self._traits(time_ms))

    def _enrol_new(self, time_ms: int, _: Any) -> None:
        channel = self._channel()
        if channel == "pos":
            self._emit(time_ms, "identify", self.truth.user_id, self.truth.pos_customer_id,
                       self._with_consent(self._context("pos")), traits=self._traits(time_ms))
            return
        moment, _, anon, context = self._open_session(time_ms, channel, login=0.0)
        at = moment + self._gap()
        self._emit(at, "identify", self.truth.user_id, anon, self._with_consent(context()),
                   traits=self._traits(at))
        self.linked.add(anon)

    def _open_session(
        self, time_ms: int, channel: str, login: float
    ) -> tuple[int, str | None, str, Callable[[], dict[str, Any]]]:
        """Open an online session; log in with probability ``login`` if not yet linked.

        Returns the time reached, the userId (None while anonymous), the anonymousId and a
        maker of fresh context objects.
        """
        day = self._day(time_ms)
        install = self._install(day) if channel == "app" else None
        if install is None:
            channel = "web"
            anon = self._cookie(day)
        else:
            anon = install.anonymous_id

        def context() -> dict[str, Any]:
            return self._context(channel, install)

        user = self.truth.user_id if anon in self.linked else None
        if channel == "app":
            self._track(time_ms, "Application Opened", user, anon, context(),
                        {"from_background": self.rng.random() < 0.4, "version": APP["version"],
                         "build": APP["build"]})
            self._emit(time_ms + 1500, "screen", user, anon, context(), name="Home",
                       properties={})
        else:
            self._emit(time_ms, "page", user, anon, context(), name="Home",
                       properties={"path": "/", "url": "https://shop.example.com/",
                                   "title": "Shop"})
        moment = time_ms + 2000
        if user is None and day >= self.plan.join_day and self.rng.random() < login:
            moment += self._gap()
            traits = {"email": styled_email(self.truth.email, self.rng)}
            session = context()
            if install is not None and self._allows_push():  # the app registers for push on login
                traits["push_token"] = push_token(install.device_id)
                session["device"]["token"] = traits["push_token"]
            self._emit(moment, "identify", self.truth.user_id, anon, session, traits=traits)
            self.linked.add(anon)
            user = self.truth.user_id
        return moment, user, anon, context

    def _browse(self, time_ms: int, channel: str) -> None:
        rng, currency = self.rng, self.world.currency
        login = 0.3 if channel == "web" else 0.7
        moment, user, anon, context = self._open_session(time_ms, channel, login)
        day = int(self._day(time_ms))
        searched: Category | None = None
        if rng.random() < 0.35:
            moment += self._gap()
            searched = self.shopper.category()
            query = rng.choice(searched.search_terms)
            self._track(moment, "Products Searched", user, anon, context(), {"query": query})
        for _ in range(1 + poisson(rng, 1.5)):
            product = self.shopper.pick(day, shopping=False, category=searched)
            price = round(product.price * (1 - product.discount_percent(day) / 100), 2)
            moment += self._gap()
            self._track(moment, "Product Viewed", user, anon, context(),
                        product_properties(product, price, currency))
            if self.shopper.wish(product):
                moment += self._gap()
                properties = product_properties(product, price, currency)
                properties["wishlist_id"] = f"wl-{self.truth.user_id}"
                properties["wishlist_name"] = "Favourites"
                self._track(moment, "Product Added to Wishlist", user, anon, context(),
                            properties)

    def _order(self, time_ms: int, argument: tuple[str, tuple[Product, ...]]) -> None:
        channel, forced = argument
        rng, truth, currency = self.rng, self.truth, self.world.currency
        day = int(self._day(time_ms))
        lines = self.shopper.basket(day, forced)
        if channel == "pos":
            moment, user, anon = time_ms, None, truth.pos_customer_id
            context = self._context("pos")
            store = self.home_store if rng.random() < 0.85 else f"S{rng.randrange(STORES) + 1:03d}"
        else:
            moment, user, anon, make_context = self._open_session(time_ms, channel, login=1.0)
            context = make_context()
            channel = context["channel"]
            for product, _, _ in lines[:2]:
                moment += self._gap()
                self._track(moment, "Product Viewed", user, anon, make_context(),
                            product_properties(product, product.price, currency))
            store = None
        subtotal = sum(product.price * quantity for product, quantity, _ in lines)
        discount = round(sum(line_discount for _, _, line_discount in lines), 2)
        total = round(subtotal - discount, 2)
        order = Order(f"O{rng.getrandbits(60):015x}", channel, tuple(lines))
        properties: dict[str, Any] = {
            "order_id": order.order_id,
            "total": total,
            "discount": discount,
            "currency": currency,
            "products": [order_line(p, q, d) for p, q, d in lines],
        }
        if store is not None:
            properties["store_id"] = store
        redeemed = self.shopper.redeem(day, total)
        if redeemed:
            properties["points_redeemed"] = redeemed
        self._track(moment + self._gap(), "Order Completed", user, anon, context, properties)
        self.shopper.earn(day, total)

        at = self.world.scheduler.at
        return_rate = truth.return_rate * (3 if any(p.category == "Apparel" for p, _, _ in lines)
                                           else 1)
        if rng.random() < return_rate:
            at(moment + int(rng.uniform(1, 20) * DAY_MS), self._refund, order)
        if rng.random() < truth.review_rate:
            at(moment + int(rng.uniform(3, 21) * DAY_MS), self._review, rng.choice(lines)[0])

    def _refund(self, time_ms: int, order: Order) -> None:
        rng = self.rng
        if rng.random() < 0.25:
            returned = list(order.lines)
        else:
            product, quantity, discount = rng.choice(order.lines)
            back = rng.randint(1, quantity)
            returned = [(product, back, round(discount * back / quantity, 2))]
        total = round(sum(p.price * q - d for p, q, d in returned), 2)
        properties = {
            "order_id": order.order_id,
            "total": total,
            "currency": self.world.currency,
            "products": [order_line(p, q, d) for p, q, d in returned],
        }
        if order.channel == "pos":
            user, anon = None, self.truth.pos_customer_id
        else:
            user, anon = self.truth.user_id, None
        self._track(time_ms, "Order Refunded", user, anon, self._context(order.channel),
                    properties)

    def _review(self, time_ms: int, product: Product) -> None:
        rating = RATINGS[bisect(RATING_CUM, self.rng.random() * RATING_CUM[-1])]
        self._track(time_ms, "Product Reviewed", self.truth.user_id, None, self._context("web"),
                    {"product_id": product.product_id, "review_id": random_uuid(self.rng),
                     "review_body": REVIEWS[rating], "rating": rating})

    def _email(self, time_ms: int, campaign: tuple[str, str, str]) -> None:
        campaign_id, name, subject = campaign
        user = self.truth.user_id
        properties = {"email_id": f"{campaign_id}-{user}", "email_subject": subject,
                      "campaign_id": campaign_id, "campaign_name": name}
        self._track(time_ms, "Email Opened", user, None, self._context("email"), properties)
        if self.rng.random() >= self.truth.email_click_rate:
            return
        link = f"https://shop.example.com/?utm_campaign={campaign_id}"
        clicked = dict(properties, link_id="cta", link_url=link)
        moment = time_ms + self._gap()
        self._track(moment, "Email Link Clicked", user, None, self._context("email"), clicked)
        if self._day(moment) < self.plan.dropout_day and self.rng.random() < 0.6:
            self.world.scheduler.at(moment + 20_000, self._browse, "web")
