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
4. Rounding (the one rule): the order's line points are the floor of the exact sum
   over its lines, multipliers included. Each rule, and the tier bonus, is credited the
   floor of its own exact part; the base is credited the rest, so the parts always add
   up to the total. Then each budgeted rule is capped at what is left of its member and
   campaign budgets. Order bonuses (type ``order_bonus``) add whole points under the
   same priority and stacking rules.

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
        "always",
        "brands",
        "budgeted",
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
        self.budgeted = self.total_budget is not None or self.member_budget is not None
        self.always = (
            self.starts_ms < 0
            and self.ends_ms == NEVER
            and not self.days
            and not self.channels
            and not self.tiers
        )

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
        "conditional",
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
        self.conditional = not all(rule.always for rule in self.line_rules)

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


def _order_lines(plan: EarnPlan, order: Order) -> tuple[list[ProductLine], list[int], list[int]]:
    """Lines with their money and eligible amounts (hundredths)."""
    lines = order.lines
    if not lines and order.fallback_amount:
        lines = [ProductLine("", "", "", "", 1, order.fallback_amount, 0)]
    prorate = order.discount if order.discount and not order.has_line_discounts else 0
    gross_total = sum(line.gross for line in lines) if prorate else 0
    eligible = plan.eligible
    money: list[int] = []
    amounts: list[int] = []
    for line in lines:
        paid = line.gross - line.discount
        if prorate and gross_total:
            paid = max(paid - prorate * line.gross // gross_total, 0)
        money.append(paid)
        amounts.append(paid if eligible(line) else 0)
    extra = (
        (plan.include_shipping, "_shipping", order.shipping),
        (plan.include_tax, "_tax", order.tax),
    )
    for include, label, amount in extra:
        if include and amount:
            lines = [*lines, ProductLine("", label, "", "", 1, amount, 0)]
            money.append(amount)
            amounts.append(amount)
    return lines, money, amounts


def _order_bonuses(
    plan: EarnPlan,
    lines: list[ProductLine],
    amounts: list[int],
    eligible: int,
    in_force: tuple[int, int, str | None, str],
    wishlist: dict[str, int],
) -> list[CompiledRule]:
    applied: list[CompiledRule] = []
    for rule in plan.order_rules:
        if not eligible or eligible < rule.min_cents or not rule.in_force(*in_force):
            continue
        if not rule.matches_all and not any(
            amount and rule.matches(line, wishlist)
            for line, amount in zip(lines, amounts, strict=True)
        ):
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
    in_force = (at, weekday(at), channel, tier)
    rules = plan.line_rules
    if plan.conditional:
        rules = tuple(rule for rule in rules if rule.always or rule.in_force(*in_force))
    rate = plan.rate_milli
    tier_extra = tier_milli - 1000
    base = tier_part = 0
    by_rule: dict[str, int] = {}
    line_raws: list[int] = []
    for line, amount in zip(lines, amounts, strict=True):
        if not amount:
            line_raws.append(0)
            continue
        unit = amount * rate
        multiplier = 1000
        applied = False
        for rule in rules:
            if not rule.matches_all and not rule.matches(line, wishlist):
                continue
            if rule.exclusive and applied:
                break
            multiplier += rule.extra_milli
            by_rule[rule.id] = by_rule.get(rule.id, 0) + unit * rule.extra_milli * 1000
            if rule.exclusive:
                break
            applied = True
        base += unit * _UNIT
        if tier_extra:
            tier_part += unit * multiplier * tier_extra
        line_raws.append(unit * multiplier * tier_milli)
    # Rounding: the order's line points are the floor of the exact total; each rule (and
    # the tier) is credited the floor of its own exact part, and the base the rest.
    line_total = (base + tier_part + sum(by_rule.values())) // _SCALE
    parts = {"base": 0}
    credited = 0
    for name, raw in by_rule.items():
        parts[name] = raw // _SCALE
        credited += parts[name]
    if tier_part:
        parts["tier"] = tier_part // _SCALE
        credited += parts["tier"]
    parts["base"] = line_total - credited

    eligible = sum(amounts)
    bonus_rules = _order_bonuses(plan, lines, amounts, eligible, in_force, wishlist) if (
        plan.order_rules
    ) else []
    for rule in bonus_rules:
        parts[rule.id] = parts.get(rule.id, 0) + rule.points
    for rule in (*rules, *bonus_rules):
        if rule.budgeted and parts.get(rule.id):
            parts[rule.id] = _within_budget(
                rule, parts[rule.id], rule_points, budgets, budget_key
            )
    bonus_points = sum(parts.get(rule.id, 0) for rule in bonus_rules)
    points = sum(parts.values())
    return EarnResult(
        points=points,
        rules=[(name, value) for name, value in parts.items() if value],
        lines=lines,
        line_amounts=amounts,
        line_money=money,
        line_points=_spread(points - bonus_points, line_raws),
        bonus_points=bonus_points,
        eligible=eligible,
    )


def _within_budget(
    rule: CompiledRule,
    requested: int,
    rule_points: dict[str, int],
    budgets: CampaignBudgets | None,
    budget_key: str,
) -> int:
    """``requested`` points of ``rule`` capped by its member and campaign budgets."""
    used = rule_points.get(rule.id, 0)
    granted = requested
    if rule.member_budget is not None:
        granted = max(0, min(granted, rule.member_budget - used))
    if rule.total_budget is not None and budgets is not None:
        granted = budgets.grant(rule.id, rule.total_budget, budget_key, granted)
    rule_points[rule.id] = used + granted
    return granted


def _spread(points: int, weights: list[int]) -> list[int]:
    """``points`` split over lines in proportion to ``weights``: each line gets the floor of
    its share, and the heaviest line (the first of equals) the rounding remainder."""
    if len(weights) == 1:
        return [points]
    total = sum(weights)
    if not total or not points:
        return [0] * len(weights)
    shares = [points * weight // total for weight in weights]
    heaviest = weights.index(max(weights))
    shares[heaviest] += points - sum(shares)
    return shares
