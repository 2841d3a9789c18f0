"""Typed, frozen objects for one version of a loyalty program, and their semantic checks.

The shapes here are what ``docs/program-config.md`` documents key by key. Decoding
(types, unknown keys, missing keys) is msgspec's job; :func:`validate` adds the rules a
type cannot say (ascending thresholds, unique ids, windows that end after they start)
and raises :class:`~loyalty_cdp.errors.ConfigError` naming the field by its path, e.g.
``tiers.levels[2].threshold``, which the YAML adapter turns into a file and line.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from loyalty_cdp.errors import ConfigError

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# Top-level sections that later parts of the system define; the loader keeps them raw.
FUTURE_SECTIONS = frozenset({"segments", "offers", "triggers", "destinations"})
BIRTHDAY = "birthday"


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every configuration object: immutable, keyword-only, unknown keys rejected."""


class Eligibility(_Config, frozen=True, kw_only=True):
    exclude_categories: frozenset[str] = frozenset()
    exclude_brands: frozenset[str] = frozenset()
    exclude_skus: frozenset[str] = frozenset()
    exclude_product_ids: frozenset[str] = frozenset()
    exclude_discounted_items: bool = False
    include_shipping: bool = False
    include_tax: bool = False
    earn_on_points_payment: bool = False


class Match(_Config, frozen=True, kw_only=True):
    categories: frozenset[str] = frozenset()
    brands: frozenset[str] = frozenset()
    skus: frozenset[str] = frozenset()
    product_ids: frozenset[str] = frozenset()
    wishlisted: bool = False


class Budget(_Config, frozen=True, kw_only=True):
    total_points: int | None = None
    member_points: int | None = None


class _Rule(_Config, tag_field="type", frozen=True, kw_only=True):
    id: str
    match: Match = Match()
    starts: datetime.date | None = None
    ends: datetime.date | None = None
    days_of_week: frozenset[Weekday] = frozenset()
    channels: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()
    priority: int = 0
    stacking: Literal["stackable", "exclusive"] = "stackable"
    budget: Budget = Budget()


class MultiplierRule(_Rule, tag="multiplier", frozen=True, kw_only=True):
    multiplier: float


class OrderBonusRule(_Rule, tag="order_bonus", frozen=True, kw_only=True):
    points: int
    min_eligible_amount: float = 0


EarnRule = MultiplierRule | OrderBonusRule


class BonusEvent(_Config, frozen=True, kw_only=True):
    id: str
    event: str
    points: int
    per_day: int | None = None
    lifetime: int | None = None
    starts: datetime.date | None = None
    ends: datetime.date | None = None
    channels: frozenset[str] = frozenset()
    tier_points: bool = False


class Earn(_Config, frozen=True, kw_only=True):
    points_per_unit: float = 1
    eligibility: Eligibility = Eligibility()
    rules: tuple[EarnRule, ...] = ()
    bonus_events: tuple[BonusEvent, ...] = ()


class NoExpiry(_Config, tag_field="policy", tag="none", frozen=True, kw_only=True):
    pass


class DaysAfterEarn(_Config, tag_field="policy", tag="days_after_earn", frozen=True, kw_only=True):
    days: int


class EndOfMonth(_Config, tag_field="policy", tag="end_of_month", frozen=True, kw_only=True):
    months: int = 0


class EndOfYear(_Config, tag_field="policy", tag="end_of_year", frozen=True, kw_only=True):
    years: int = 0


class InactivityDays(_Config, tag_field="policy", tag="inactivity_days", frozen=True, kw_only=True):
    days: int


Expiry = NoExpiry | DaysAfterEarn | EndOfMonth | EndOfYear | InactivityDays


class Ledger(_Config, frozen=True, kw_only=True):
    pending_days: int = 0
    expiry: Expiry = NoExpiry()
    expiring_soon_days: int = 0
    refund_policy: Literal["within_balance", "allow_negative"] = "within_balance"
    refund_window_days: int = 90


class TierBenefits(_Config, frozen=True, kw_only=True):
    multiplier: float = 1
    free_shipping: bool = False


class Tier(_Config, frozen=True, kw_only=True):
    name: str
    threshold: float
    benefits: TierBenefits = TierBenefits()


class Tiers(_Config, frozen=True, kw_only=True):
    metric: Literal["tier_points", "qualifying_spend", "purchase_count"] = "tier_points"
    window: Literal["rolling_12_months", "calendar_year", "anniversary"] = "rolling_12_months"
    grace_days: int = 0
    warning_days: int = 0
    downgrade: Literal["to_qualified", "one_down"] = "to_qualified"
    levels: tuple[Tier, ...] = (Tier(name="Member", threshold=0),)


class _Milestone(_Config, tag_field="type", frozen=True, kw_only=True):
    id: str
    bonus_points: int = 0


class NthPurchase(_Milestone, tag="nth_purchase", frozen=True, kw_only=True):
    n: int


class LifetimePoints(_Milestone, tag="lifetime_points", frozen=True, kw_only=True):
    threshold: int


class Anniversary(_Milestone, tag="anniversary", frozen=True, kw_only=True):
    years: int


class FirstPurchaseInChannel(_Milestone, tag="first_purchase_in_channel", frozen=True, kw_only=True):
    channel: str


class FirstPurchaseInCategory(_Milestone, tag="first_purchase_in_category", frozen=True, kw_only=True):
    category: str


Milestone = (
    NthPurchase | LifetimePoints | Anniversary | FirstPurchaseInChannel | FirstPurchaseInCategory
)


class _Reward(_Config, tag_field="type", frozen=True, kw_only=True):
    id: str
    name: str = ""
    per_member_limit: int | None = None
    starts: datetime.date | None = None
    ends: datetime.date | None = None
    tiers: frozenset[str] = frozenset()


class DiscountVoucher(_Reward, tag="discount_voucher", frozen=True, kw_only=True):
    cost: int
    value: float
    code_prefix: str = "LOY"


class FreeProduct(_Reward, tag="free_product", frozen=True, kw_only=True):
    cost: int
    sku: str
    code_prefix: str = "GIFT"


class PointsPayment(_Reward, tag="points_payment", frozen=True, kw_only=True):
    min_points: int = 1
    max_points: int | None = None


Reward = DiscountVoucher | FreeProduct | PointsPayment


class Program(_Config, frozen=True, kw_only=True):
    """One version of a program: every section of one YAML document."""

    program: str
    name: str = ""
    version: int = 1
    effective_from: datetime.date
    currency: str = "USD"
    point_value: float = 0.01
    earn: Earn = Earn()
    ledger: Ledger = Ledger()
    tiers: Tiers = Tiers()
    milestones: tuple[Milestone, ...] = ()
    rewards: tuple[Reward, ...] = ()
    # Raw content of the FUTURE_SECTIONS present in the document (filled by the loader).
    extensions: dict[str, Any] = {}


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_CODE_PREFIX = re.compile(r"^[A-Z0-9]{1,12}$")


def milli(value: float, field: str) -> int:
    """A decimal with at most three places as an integer count of thousandths."""
    scaled = round(value * 1000)
    if abs(scaled - value * 1000) > 1e-6:
        raise ConfigError(field, f"must have at most 3 decimal places, got {value}")
    return scaled


def cents(value: float, field: str) -> int:
    """A money amount with at most two decimal places as an integer count of hundredths."""
    scaled = round(value * 100)
    if abs(scaled - value * 100) > 1e-6:
        raise ConfigError(field, f"must have at most 2 decimal places, got {value}")
    return scaled


def _at_least(value: int | float | None, minimum: float, field: str) -> None:
    if value is not None and value < minimum:
        raise ConfigError(field, f"must be at least {minimum:g}, got {value}")


def _unique_ids(items: Iterable[Any], section: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        field = f"{section}[{index}].id"
        if not _ID.match(item.id):
            raise ConfigError(field, "must be 1-64 letters, digits, '_', '.', ':' or '-'")
        if item.id in seen:
            raise ConfigError(field, f"duplicate id {item.id!r}")
        seen.add(item.id)


def _window(starts: datetime.date | None, ends: datetime.date | None, field: str) -> None:
    if starts is not None and ends is not None and ends < starts:
        raise ConfigError(f"{field}.ends", f"{ends} is before starts {starts}")


def _known_tiers(names: frozenset[str], tiers: set[str], field: str) -> None:
    unknown = sorted(names - tiers)
    if unknown:
        raise ConfigError(field, f"unknown tier {unknown[0]!r}; tiers are {sorted(tiers)}")


def _validate_earn(earn: Earn, tier_names: set[str]) -> None:
    _at_least(earn.points_per_unit, 0, "earn.points_per_unit")
    milli(earn.points_per_unit, "earn.points_per_unit")
    _unique_ids(earn.rules, "earn.rules")
    for index, rule in enumerate(earn.rules):
        field = f"earn.rules[{index}]"
        _window(rule.starts, rule.ends, field)
        _known_tiers(rule.tiers, tier_names, f"{field}.tiers")
        _at_least(rule.budget.total_points, 1, f"{field}.budget.total_points")
        _at_least(rule.budget.member_points, 1, f"{field}.budget.member_points")
        if isinstance(rule, MultiplierRule):
            _at_least(rule.multiplier, 1, f"{field}.multiplier")
            milli(rule.multiplier, f"{field}.multiplier")
        else:
            _at_least(rule.points, 1, f"{field}.points")
            _at_least(rule.min_eligible_amount, 0, f"{field}.min_eligible_amount")
            cents(rule.min_eligible_amount, f"{field}.min_eligible_amount")
    _unique_ids(earn.bonus_events, "earn.bonus_events")
    for index, bonus in enumerate(earn.bonus_events):
        field = f"earn.bonus_events[{index}]"
        if not bonus.event.strip():
            raise ConfigError(f"{field}.event", "must name a Segment track event or 'birthday'")
        _at_least(bonus.points, 1, f"{field}.points")
        _at_least(bonus.per_day, 1, f"{field}.per_day")
        _at_least(bonus.lifetime, 1, f"{field}.lifetime")
        _window(bonus.starts, bonus.ends, field)


def _validate_ledger(ledger: Ledger) -> None:
    _at_least(ledger.pending_days, 0, "ledger.pending_days")
    _at_least(ledger.expiring_soon_days, 0, "ledger.expiring_soon_days")
    _at_least(ledger.refund_window_days, 0, "ledger.refund_window_days")
    expiry = ledger.expiry
    if isinstance(expiry, DaysAfterEarn):
        if expiry.days <= ledger.pending_days:
            raise ConfigError(
                "ledger.expiry.days",
                f"must be more than ledger.pending_days ({ledger.pending_days}), got {expiry.days}",
            )
    elif isinstance(expiry, InactivityDays):
        _at_least(expiry.days, 1, "ledger.expiry.days")
    elif isinstance(expiry, EndOfMonth):
        _at_least(expiry.months, 0, "ledger.expiry.months")
    elif isinstance(expiry, EndOfYear):
        _at_least(expiry.years, 0, "ledger.expiry.years")


def _validate_tiers(tiers: Tiers) -> None:
    if not tiers.levels:
        raise ConfigError("tiers.levels", "needs at least one tier")
    _at_least(tiers.grace_days, 0, "tiers.grace_days")
    _at_least(tiers.warning_days, 0, "tiers.warning_days")
    names: set[str] = set()
    previous = -1.0
    for index, tier in enumerate(tiers.levels):
        field = f"tiers.levels[{index}]"
        if not tier.name.strip():
            raise ConfigError(f"{field}.name", "must not be empty")
        if tier.name in names:
            raise ConfigError(f"{field}.name", f"duplicate tier {tier.name!r}")
        names.add(tier.name)
        if index == 0 and tier.threshold != 0:
            raise ConfigError(f"{field}.threshold", "the first (base) tier must have threshold 0")
        if tier.threshold <= previous:
            raise ConfigError(
                f"{field}.threshold", f"must be above the previous tier's ({previous:g})"
            )
        previous = tier.threshold
        if tiers.metric == "qualifying_spend":
            cents(tier.threshold, f"{field}.threshold")
        elif tier.threshold != int(tier.threshold):
            raise ConfigError(f"{field}.threshold", f"must be a whole number for {tiers.metric}")
        _at_least(tier.benefits.multiplier, 1, f"{field}.benefits.multiplier")
        milli(tier.benefits.multiplier, f"{field}.benefits.multiplier")


def _validate_milestones(milestones: tuple[Milestone, ...]) -> None:
    _unique_ids(milestones, "milestones")
    for index, milestone in enumerate(milestones):
        field = f"milestones[{index}]"
        _at_least(milestone.bonus_points, 0, f"{field}.bonus_points")
        if isinstance(milestone, NthPurchase):
            _at_least(milestone.n, 1, f"{field}.n")
        elif isinstance(milestone, LifetimePoints):
            _at_least(milestone.threshold, 1, f"{field}.threshold")
        elif isinstance(milestone, Anniversary):
            _at_least(milestone.years, 1, f"{field}.years")


def _validate_rewards(rewards: tuple[Reward, ...], tier_names: set[str]) -> None:
    _unique_ids(rewards, "rewards")
    for index, reward in enumerate(rewards):
        field = f"rewards[{index}]"
        _at_least(reward.per_member_limit, 1, f"{field}.per_member_limit")
        _window(reward.starts, reward.ends, field)
        _known_tiers(reward.tiers, tier_names, f"{field}.tiers")
        if isinstance(reward, PointsPayment):
            _at_least(reward.min_points, 1, f"{field}.min_points")
            _at_least(reward.max_points, reward.min_points, f"{field}.max_points")
            continue
        _at_least(reward.cost, 1, f"{field}.cost")
        if not _CODE_PREFIX.match(reward.code_prefix):
            raise ConfigError(f"{field}.code_prefix", "must be 1-12 upper-case letters or digits")
        if isinstance(reward, DiscountVoucher):
            _at_least(reward.value, 0.01, f"{field}.value")
            cents(reward.value, f"{field}.value")
        elif not reward.sku.strip():
            raise ConfigError(f"{field}.sku", "must not be empty")


def validate(program: Program) -> Program:
    """Check the rules a type cannot express; returns ``program`` or raises ConfigError."""
    if not _ID.match(program.program):
        raise ConfigError("program", "must be 1-64 letters, digits, '_', '.', ':' or '-'")
    _at_least(program.version, 1, "version")
    if not re.fullmatch(r"[A-Z]{3}", program.currency):
        raise ConfigError("currency", f"must be an ISO 4217 code such as USD, got {program.currency!r}")
    if program.point_value <= 0:
        raise ConfigError("point_value", f"must be positive, got {program.point_value}")
    _validate_tiers(program.tiers)
    tier_names = {tier.name for tier in program.tiers.levels}
    _validate_earn(program.earn, tier_names)
    _validate_ledger(program.ledger)
    _validate_milestones(program.milestones)
    _validate_rewards(program.rewards, tier_names)
    return program


class VersionError(ConfigError):
    """A version that does not fit with the one before it; ``document`` is its 0-based index."""

    def __init__(self, document: int, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.document = document


def validate_versions(programs: Iterable[Program]) -> tuple[Program, ...]:
    """Check a program's versions as a whole: one program id, ascending versions and dates."""
    versions = tuple(programs)
    if not versions:
        raise VersionError(0, "program", "a program file needs at least one program document")
    for index, program in enumerate(versions[1:], start=1):
        before = versions[index - 1]
        if program.program != before.program:
            raise VersionError(
                index, "program", f"every version must be of the same program {before.program!r}"
            )
        if program.version <= before.version:
            raise VersionError(index, "version", f"must be above {before.version}")
        if program.effective_from <= before.effective_from:
            raise VersionError(index, "effective_from", f"must be after {before.effective_from}")
    return versions
