"""Earn rules: the points an order earns, with the rules that produced them.

The computation, in order (documented in ``docs/loyalty.md``, "Earning"):

1. Each product line's money is its price x quantity less its own ``discount``, or less
   its share of the order's ``discount`` when no line carries one. A line is eligible
   unless excluded by category, brand, SKU, product id, or (if configured) because it
   carries its own discount. Shipping and tax count only when included.
2. When part of the order was paid with points, eligible amounts shrink by that share
   (unless ``earn_on_points_payment``).
3. Line rules (type ``multiplier``) are considered by descending priority, ties by id: a
   ``stackable`` rule adds ``multiplier - 1`` and evaluation goes on; an ``exclusive``
   rule applies only when no rule applied before it on that line, and ends evaluation.
   The line's multiplier is ``1 + sum of (multiplier - 1)``, then times the tier's.
4. Rounding: the order's line points are the floor of the exact sum over its lines;
   that integer is attributed to base / rules / tier by the largest-remainder method
   (so the parts always add up), then each budgeted rule is capped at what is left of
   its member and campaign budgets. Order bonuses (type ``order_bonus``) add whole
   points under the same priority and stacking rules.

All arithmetic is on integers: money in hundredths, rates and multipliers in thousandths.
"""

from __future__ import annotations

import msgspec

from loyalty_cdp.core.loyalty.budgets import CampaignBudgets
from loyalty_cdp.core.loyalty.inputs import Order, ProductLine
from loyalty_cdp.core.loyalty.periods import DAY_MS, NEVER, WEEKDAYS, date_ms, weekday
from loyalty_cdp.core.loyalty.program import Earn, MultiplierRule, OrderBonusRule, cents, milli

# cents x rate (1/1000) x multiplier (1/1000) x tier multiplier (1/1000) -> points
_SCALE = 100 * 1000 * 1000 * 1000
_UNIT = 1000 * 1000  # the multiplier and tier factors of a plain base contribution


class CompiledRule:
    """One earn rule with its conditions in engine units."""

    __slots__ = (
        "brands",
        "categories",
        "channels",
        "days",
        "ends_ms",
        "exclusive",
        "extra_milli",
        "id",
        "matches_all",
        "member_budget",
        "min_cents",
        "points",
        "product_ids",
        "skus",
        "starts_ms",
        "tiers",
        "total_budget",
        "wishlisted",
    )

    def __init__(self, rule: MultiplierRule | OrderBonusRule, field: str) -> None:
        self.id = rule.id
        if isinstance(rule, MultiplierRule):
            self.extra_milli = milli(rule.multiplier, f"{field}.multiplier") - 1000
            self.points = 0
            self.min_cents = 0
        else:
            self.extra_milli = 0
            self.points = rule.points
            self.min_cents = cents(rule.min_eligible_amount, f"{field}.min_eligible_amount")
        self.starts_ms = date_ms(rule.starts) if rule.starts else -1
        self.ends_ms = date_ms(rule.ends) + DAY_MS if rule.ends else NEVER
        self.days = frozenset(WEEKDAYS.index(day) for day in rule.days_of_week)
        self.channels = rule.channels
        self.tiers = rule.tiers
        match = rule.match
        self.categories = frozenset(value.casefold() for value in match.categories)
        self.brands = frozenset(value.casefold() for value in match.brands)
        self.skus = match.skus
        self.product_ids = match.product_ids
        self.wishlisted = match.wishlisted
        self.matches_all = not (
            self.categories or self.brands or self.skus or self.product_ids or self.wishlisted
        )
        self.exclusive = rule.stacking == "exclusive"
        self.total_budget = rule.budget.total_points
        self.member_budget = rule.budget.member_points

    def in_force(self, at: int, day: int, channel: str | None, tier: str) -> bool:
        return (
            self.starts_ms <= at < self.ends_ms
            and (not self.days or day in self.days)
            and (not self.channels or channel in self.channels)
            and (not self.tiers or tier in self.tiers)
        )

    def matches(self, line: ProductLine, wishlist: dict[str, int]) -> bool:
        if self.matches_all:
            return True
        if self.wishlisted and not (
            (line.product_id and line.product_id in wishlist)
            or (line.sku and line.sku in wishlist)
        ):
            return False
        return (
            (not self.categories or line.category in self.categories)
            and (not self.brands or line.brand in self.brands)
            and (not self.skus or line.sku in self.skus)
            and (not self.product_ids or line.product_id in self.product_ids)
        )


class EarnPlan:
    """A program version's earn section, compiled once."""

    __slots__ = (
        "exclude_discounted",
        "excluded_brands",
        "excluded_categories",
        "excluded_product_ids",
        "excluded_skus",
        "include_shipping",
        "include_tax",
        "line_rules",
        "order_rules",
        "paid_points_earn",
        "rate_milli",
    )

    def __init__(self, earn: Earn) -> None:
        self.rate_milli = milli(earn.points_per_unit, "earn.points_per_unit")
        rules = earn.eligibility
        self.excluded_categories = frozenset(value.casefold() for value in rules.exclude_categories)
        self.excluded_brands = frozenset(value.casefold() for value in rules.exclude_brands)
        self.excluded_skus = rules.exclude_skus
        self.excluded_product_ids = rules.exclude_product_ids
        self.exclude_discounted = rules.exclude_discounted_items
        self.include_shipping = rules.include_shipping
        self.include_tax = rules.include_tax
        self.paid_points_earn = rules.earn_on_points_payment
        ordered = sorted(
            ((rule, f"earn.rules[{index}]") for index, rule in enumerate(earn.rules)),
            key=lambda pair: (-pair[0].priority, pair[0].id),
        )
        self.line_rules = tuple(
            CompiledRule(rule, field) for rule, field in ordered if isinstance(rule, MultiplierRule)
        )
        self.order_rules = tuple(
            CompiledRule(rule, field) for rule, field in ordered if isinstance(rule, OrderBonusRule)
        )

    def eligible(self, line: ProductLine) -> bool:
        return not (
            (line.category and line.category in self.excluded_categories)
            or (line.brand and line.brand in self.excluded_brands)
            or (line.sku and line.sku in self.excluded_skus)
            or (line.product_id and line.product_id in self.excluded_product_ids)
            or (self.exclude_discounted and line.discount > 0)
        )


class EarnResult(msgspec.Struct, gc=False):
    """What an order earns. ``rules`` attributes ``points`` to its causes (sums to it)."""

    points: int
    rules: list[tuple[str, int]]
    lines: list[ProductLine]
    line_amounts: list[int]  # eligible hundredths per line (after a points-payment share)
    line_money: list[int]  # hundredths paid per line
    line_points: list[int]
    bonus_points: int
    eligible: int  # sum of line_amounts: the qualifying spend


def largest_remainder(raws: list[int], scale: int) -> list[int]:
    """Integers proportional to ``raws / scale`` whose sum is ``floor(sum(raws) / scale)``."""
    parts = []
    remainders = []
    for raw in raws:
        whole, rest = divmod(raw, scale)
        parts.append(whole)
        remainders.append(rest)
    missing = sum(raws) // scale - sum(parts)
    if missing:
        order = sorted(range(len(raws)), key=lambda index: (-remainders[index], index))
        for index in order[:missing]:
            parts[index] += 1
    return parts


def _order_lines(plan: EarnPlan, order: Order) -> tuple[list[ProductLine], list[int], list[int]]:
    """Lines with their money and eligible amounts (hundredths)."""
    lines = list(order.lines)
    if not lines and order.fallback_amount:
        lines = [ProductLine("", "", "", "", 1, order.fallback_amount, 0)]
    gross_total = sum(line.gross for line in lines)
    prorate = order.discount if order.discount and not order.has_line_discounts else 0
    money: list[int] = []
    amounts: list[int] = []
    for line in lines:
        paid = line.gross - line.discount
        if prorate and gross_total:
            paid -= prorate * line.gross // gross_total
        paid = max(paid, 0)
        money.append(paid)
        amounts.append(paid if plan.eligible(line) else 0)
    for include, label, amount in (
        (plan.include_shipping, "_shipping", order.shipping),
        (plan.include_tax, "_tax", order.tax),
    ):
        if include and amount:
            lines.append(ProductLine("", label, "", "", 1, amount, 0))
            money.append(amount)
            amounts.append(amount)
    return lines, money, amounts


def _applicable(rules: list[CompiledRule], line: ProductLine, wishlist: dict[str, int]) -> list[CompiledRule]:
    applied: list[CompiledRule] = []
    for rule in rules:
        if not rule.matches(line, wishlist):
            continue
        if rule.exclusive:
            if not applied:
                applied.append(rule)
            break
        applied.append(rule)
    return applied


def earn_for_order(
    plan: EarnPlan,
    order: Order,
    *,
    at: int,
    channel: str | None,
    tier: str,
    tier_milli: int,
    paid_cents: int,
    wishlist: dict[str, int],
    rule_points: dict[str, int],
    budgets: CampaignBudgets | None,
    budget_key: str,
) -> EarnResult:
    """Points for ``order`` at ``at``; ``rule_points`` (per-member budget use) is updated."""
    lines, money, amounts = _order_lines(plan, order)
    if paid_cents and not plan.paid_points_earn:
        total_money = sum(money)
        if total_money:
            left = max(total_money - paid_cents, 0)
            amounts = [amount * left // total_money for amount in amounts]
    day = weekday(at)
    line_rules = [rule for rule in plan.line_rules if rule.in_force(at, day, channel, tier)]
    rate = plan.rate_milli
    tier_extra = tier_milli - 1000
    contributions: dict[str, int] = {"base": 0}
    line_raws: list[int] = []
    for line, amount in zip(lines, amounts, strict=True):
        if not amount:
            line_raws.append(0)
            continue
        unit = amount * rate
        multiplier = 1000
        for rule in _applicable(line_rules, line, wishlist):
            multiplier += rule.extra_milli
            contributions[rule.id] = contributions.get(rule.id, 0) + unit * rule.extra_milli * 1000
        contributions["base"] += unit * _UNIT
        if tier_extra:
            contributions["tier"] = contributions.get("tier", 0) + unit * multiplier * tier_extra
        line_raws.append(unit * multiplier * tier_milli)
    names = list(contributions)
    parts = dict(zip(names, largest_remainder(list(contributions.values()), _SCALE), strict=True))

    eligible = sum(amounts)
    applied_bonus: list[CompiledRule] = []
    for rule in plan.order_rules:
        if not (rule.in_force(at, day, channel, tier) and eligible and eligible >= rule.min_cents):
            continue
        if not rule.matches_all and not any(
            amount and rule.matches(line, wishlist)
            for line, amount in zip(lines, amounts, strict=True)
        ):
            continue
        if rule.exclusive:
            if not applied_bonus:
                applied_bonus.append(rule)
            break
        applied_bonus.append(rule)
    for rule in applied_bonus:
        parts[rule.id] = parts.get(rule.id, 0) + rule.points

    for rule in (*line_rules, *applied_bonus):
        granted = parts.get(rule.id, 0)
        if not granted or (rule.member_budget is None and rule.total_budget is None):
            continue
        used = rule_points.get(rule.id, 0)
        if rule.member_budget is not None:
            granted = max(0, min(granted, rule.member_budget - used))
        if rule.total_budget is not None and budgets is not None:
            granted = budgets.grant(rule.id, rule.total_budget, budget_key, granted)
        parts[rule.id] = granted
        rule_points[rule.id] = used + granted

    bonus_points = sum(parts.get(rule.id, 0) for rule in applied_bonus)
    points = sum(parts.values())
    line_points = _spread(points - bonus_points, line_raws)
    return EarnResult(
        points=points,
        rules=[(name, value) for name, value in parts.items() if value],
        lines=lines,
        line_amounts=amounts,
        line_money=money,
        line_points=line_points,
        bonus_points=bonus_points,
        eligible=eligible,
    )


def _spread(points: int, weights: list[int]) -> list[int]:
    """``points`` split over lines in proportion to ``weights`` (largest remainder)."""
    total = sum(weights)
    if not total or not points:
        return [0] * len(weights)
    return largest_remainder([points * weight for weight in weights], total)
