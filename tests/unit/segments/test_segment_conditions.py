"""The condition language: what parses, what is refused (and where), and time dependence."""

from __future__ import annotations

import pytest
from segment_support import CATALOG, condition, day, order, profile_of

from loyalty_cdp.core.loyalty import ProgramBook, loyalty_summary
from loyalty_cdp.core.loyalty.state import new_state
from loyalty_cdp.core.profile import Profile
from loyalty_cdp.core.segments import FieldCatalog, parse_condition, time_dependent
from loyalty_cdp.core.segments.conditions import TIME_DEPENDENT_SIGNALS, All, AnyOf, Compare, Count, Not
from loyalty_cdp.core.signals import compute_signals
from loyalty_cdp.errors import InvalidInput


def test_the_seed_example_parses_into_a_tree() -> None:
    parsed = condition({"all": [
        {"count": {"event": "Order Completed", "category": " Pet   Food ", "days": 180}, "gte": 3},
        {"not": {"count": {"event": "Order Completed", "days": 45}, "gt": 0}},
        {"any": [{"field": "loyalty.tier", "in": ["Gold", "Platinum"]},
                 {"field": ["traits", "plan.name"], "eq": "vip"}]},
    ]})
    assert isinstance(parsed, All)
    pet, recent, either = parsed.items
    assert isinstance(pet, Count) and pet.spec.category == "Pet Food" and pet.op == "gte" and pet.value == 3
    assert isinstance(recent, Not) and isinstance(recent.item, Count)
    assert isinstance(either, AnyOf)
    tier, plan = either.items
    assert isinstance(tier, Compare) and tier.value == ("Gold", "Platinum")
    assert isinstance(plan, Compare) and plan.path.keys == ("plan.name",)


@pytest.mark.parametrize(("raw", "field", "reason"), [
    ({}, "when", "expected a condition"),
    ({"all": []}, "when.all", "non-empty list"),
    ({"all": [{"field": "traits.a", "eq": 1}], "any": []}, "when.any", "takes no other key"),
    ({"any": [{"field": "traits.a"}]}, "when.any[0]", "needs one operator"),
    ({"field": "traits.a", "eq": 1, "ne": 2}, "when.ne", "exactly one operator"),
    ({"field": "traits.a", "equals": 1}, "when.equals", "unknown operator 'equals'"),
    ({"field": "signals.purchase.order", "gte": 1}, "when.field", "did you mean 'orders'"),
    ({"field": "signals.purchase.orders.total", "gte": 1}, "when.field", "is a value"),
    ({"field": "signal.purchase.orders", "gte": 1}, "when.field", "did you mean 'signals'"),
    ({"field": "traits", "eq": 1}, "when.field", "name a field under 'traits'"),
    ({"field": "traits..a", "eq": 1}, "when.field", "empty key"),
    ({"field": "signals.affinity.brand.@biggest", "gt": 0}, "when.field", "unknown aggregate"),
    ({"field": "signals.purchase.orders.@max", "gt": 0}, "when.field", "needs a map or a list"),
    ({"field": "traits.a.@count.b", "gt": 0}, "when.field", "may only end a path"),
    ({"field": "segments", "contains": "x"}, "when.field", "cannot depend on segment membership"),
    ({"field": "event.to_tier", "eq": "Gold"}, "when.field", "only in trigger conditions"),
    ({"field": "traits.a", "gte": "3"}, "when.gte", "expected a number"),
    ({"field": "traits.a", "gte": True}, "when.gte", "expected a number"),
    ({"field": "traits.a", "gte": float("nan")}, "when.gte", "expected a number"),
    ({"field": "traits.a", "between": [5, 1]}, "when.between", "low must not exceed high"),
    ({"field": "traits.a", "in": ["a", 1]}, "when.in", "all of one kind"),
    ({"field": "traits.a", "in": []}, "when.in", "non-empty list"),
    ({"field": "traits.a", "exists": "yes"}, "when.exists", "true or false"),
    ({"field": "traits.a", "contains": 3}, "when.contains", "expected a text"),
    ({"field": "traits.a", "eq": None}, "when.eq", "expected a text, a number or a boolean"),
    ({"field": "traits.a", "count": {"event": "x", "days": 1}, "eq": 1}, "when", "not both"),
    ({"count": {"event": "Order Completed", "days": 0}, "gte": 1}, "when.count.days", "between 1 and 730"),
    ({"count": {"event": "Order Completed", "days": 30, "colour": "red"}, "gte": 1}, "when.count.colour",
     "unknown key 'colour'"),
    ({"count": {"days": 30}, "gte": 1}, "when.count.event", "required key is missing"),
    ({"count": {"event": "Order Completed", "days": 30}, "contains": "x"}, "when.contains", "unknown operator"),
    ({"count": {"event": "Order Completed", "days": 30}, "in": ["1"]}, "when.in", "unknown operator"),
    ({"whenever": 1}, "when.whenever", "unknown key 'whenever'"),
    ({"field": "consent.email", "eq": True}, "when.field", "expected one of email_marketing, sms"),
    ({"field": "consent.sms.granted", "eq": True}, "when.field", "names one purpose"),
])
def test_bad_conditions_are_refused_naming_the_key(raw: dict[str, object], field: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_condition(raw, "when", CATALOG.with_options(segments=False, event=False))
    assert error.value.field == field
    assert reason in error.value.reason


def test_nesting_and_size_are_bounded() -> None:
    deep: dict[str, object] = {"field": "traits.a", "eq": 1}
    for _ in range(20):
        deep = {"not": deep}
    with pytest.raises(InvalidInput, match="nest at most"):
        condition(deep)
    wide = {"any": [{"field": "traits.a", "eq": i} for i in range(300)]}
    with pytest.raises(InvalidInput, match="at most 256 comparisons"):
        condition(wide)


def test_loyalty_paths_are_checked_against_the_summary_of_the_program() -> None:
    from loyalty_cdp.adapters.program_yaml import load_program
    from loyalty_cdp.programs import __path__ as programs_path

    book: ProgramBook = load_program(f"{programs_path[0]}/retail.yaml")
    catalog = FieldCatalog(loyalty_summary(book, new_state("x"), 0))
    assert parse_condition({"field": "loyalty.progress.remaining", "lte": 50}, "w", catalog).op == "lte"
    with pytest.raises(InvalidInput, match="did you mean 'points_balance'"):
        parse_condition({"field": "loyalty.points_balanse", "gte": 1}, "w", catalog)
    # Objects absent from the specimen (no downgrade pending) accept any key below them.
    assert parse_condition({"field": "loyalty.tier_downgrade.to", "eq": "Silver"}, "w", catalog)


def test_data_keyed_maps_accept_any_key_and_aggregates() -> None:
    for raw in ("signals.affinity.category.Pet Food", "signals.channel_mix.orders.pos",
                "signals.affinity.brand.@max", "signals.wishlist.@count", "scores.propensity.redeem",
                "traits.address.city", "consent.sms"):
        assert condition({"field": raw, "exists": True}).path.text == raw


def test_time_dependence_is_detected() -> None:
    assert time_dependent(condition({"field": "signals.lifecycle.stage", "eq": "at_risk"}))
    assert time_dependent(condition({"count": {"event": "Order Completed", "days": 45}, "eq": 0}))
    assert time_dependent(condition({"not": {"field": "signals.purchase.days_since_last_order", "lt": 30}}))
    assert not time_dependent(condition({"field": "signals.purchase.orders", "gte": 3}))
    assert not time_dependent(condition({"field": "loyalty.tier", "eq": "Gold"}))


def _leaves(tree: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    found: dict[str, object] = {}
    for key, value in tree.items():
        found.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
    return found


def test_the_time_dependent_signal_list_matches_what_changes_with_time() -> None:
    """Signals of one profile read at two instants: exactly the listed ones may differ."""
    profile: Profile = profile_of([order("o1", day(0), "Dog", channel="app"), order("o2", day(20), "Dog")])
    early, late = _leaves(compute_signals(profile, day(21))), _leaves(compute_signals(profile, day(400)))
    changed = {name for name in early if early[name] != late.get(name)}
    assert changed <= TIME_DEPENDENT_SIGNALS
    assert {"purchase.days_since_last_order", "purchase.orders_30d", "lifecycle.stage", "as_of"} <= changed
