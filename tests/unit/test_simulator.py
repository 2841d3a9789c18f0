"""The traffic simulator: valid, ordered, deterministic Segment calls true to their ground truth."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import date
from itertools import pairwise
from pathlib import Path
from typing import Any

import msgspec
import phonenumbers
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from loyalty_cdp.cli.simulate import simulate as simulate_command
from loyalty_cdp.core.events import MAX_EVENT_BYTES, normalise, parse_time
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.simulator import GroundTruth, Simulation, simulate, truth_path
from loyalty_cdp.simulator.people import IdentityFactory, luhn_valid
from loyalty_cdp.simulator.personas import PERSONA_NAMES
from loyalty_cdp.testing import run_cli

DAY_MS = 86_400_000
SESSION_EVENTS = {"Product Viewed", "Products Searched", "Product Added to Wishlist",
                  "Application Opened", "Order Completed"}


@pytest.fixture(scope="module")
def simulation() -> Simulation:
    return Simulation(members=250, days=120, seed=2024, start=date(2026, 3, 1))


@pytest.fixture(scope="module")
def calls(simulation: Simulation) -> list[dict[str, Any]]:
    return list(simulation.events())


@pytest.fixture(scope="module")
def owner(simulation: Simulation) -> dict[str, Any]:
    """Every identifier a member's calls carry (userId, anonymousIds, POS id) -> the member."""
    result = {}
    for member in simulation.truth.members:
        for identifier in (member.user_id, member.pos_customer_id, *member.anonymous_ids):
            result[identifier] = member
    return result


def member_of(call: dict[str, Any], owner: dict[str, Any]) -> Any:
    return owner[call.get("userId") or call["anonymousId"]]


def orders_by_member(calls: list[dict[str, Any]], owner: dict[str, Any]) -> dict[str, list]:
    orders: dict[str, list] = defaultdict(list)
    for call in calls:
        if call.get("event") == "Order Completed":
            orders[member_of(call, owner).user_id].append(call)
    return orders


def ms(text: str) -> int:
    return parse_time(text, "timestamp")


# ------------------------------------------------------------------ the call stream


def test_calls_are_valid_segment_calls_in_timestamp_order_within_the_period(
    simulation: Simulation, calls: list[dict[str, Any]]
) -> None:
    assert len(calls) > 10_000
    times = [ms(call["timestamp"]) for call in calls]
    assert times == sorted(times)
    assert simulation.start_ms <= times[0] and times[-1] < simulation.end_ms
    ids = [call["messageId"] for call in calls]
    assert len(set(ids)) == len(ids)
    for call in calls:
        event = normalise(call, call_type=None, received_at=times[-1], default_message_id="x")
        assert event.message_id == call["messageId"] and len(event.body) < MAX_EVENT_BYTES
        assert call["context"]["channel"] in ("pos", "web", "app", "email", "loyalty")


def test_every_part_of_the_vocabulary_appears(calls: list[dict[str, Any]]) -> None:
    kinds = Counter(call.get("event") or call["type"] for call in calls)
    for name in ("Order Completed", "Order Refunded", "Product Viewed", "Product Added to Wishlist",
                 "Products Searched", "Product Reviewed", "Email Opened", "Email Link Clicked",
                 "Application Opened", "identify", "page", "screen"):
        assert kinds[name] > 0, name
    channels = Counter(
        c["context"]["channel"] for c in calls if c.get("event") == "Order Completed"
    )
    assert set(channels) == {"pos", "web", "app"}


def test_orders_follow_the_ecommerce_spec_and_add_up(calls: list[dict[str, Any]]) -> None:
    orders: dict[str, dict[str, Any]] = {}
    for call in calls:
        properties = call.get("properties", {})
        if call.get("event") == "Order Completed":
            lines = properties["products"]
            assert lines and properties["currency"] == "USD"
            for line in lines:
                assert {"product_id", "sku", "name", "category", "brand", "price",
                        "quantity"} <= line.keys()
                assert line["quantity"] >= 1 and line.get("discount", 0) <= line["price"] * line[
                    "quantity"]
            gross = sum(line["price"] * line["quantity"] for line in lines)
            discount = sum(line.get("discount", 0) for line in lines)
            assert properties["discount"] == pytest.approx(discount, abs=0.011)
            assert properties["total"] == pytest.approx(gross - discount, abs=0.011)
            orders[properties["order_id"]] = properties
        elif call.get("event") == "Order Refunded":
            order = orders[properties["order_id"]]  # refunds follow their order
            bought = {line["product_id"]: line["quantity"] for line in order["products"]}
            for line in properties["products"]:
                assert 1 <= line["quantity"] <= bought[line["product_id"]]
            assert 0 < properties["total"] <= order["total"] + 0.011


def test_pos_orders_carry_the_card_and_pos_customer_id_of_one_member(
    calls: list[dict[str, Any]], owner: dict[str, Any]
) -> None:
    pos_orders = [c for c in calls if c.get("event") == "Order Completed"
                  and c["context"]["channel"] == "pos"]
    assert pos_orders
    for call in pos_orders:
        member = owner[call["anonymousId"]]
        assert "userId" not in call and call["anonymousId"] == member.pos_customer_id
        assert call["context"]["externalIds"] == [
            {"id": member.card_number, "type": "card_number", "collection": "users",
             "encoding": "none"},
            {"id": member.pos_customer_id, "type": "pos_customer_id", "collection": "users",
             "encoding": "none"},
        ]
        assert call["properties"]["store_id"].startswith("S")


def test_anonymous_ids_browse_anonymously_until_an_identify_links_them(
    calls: list[dict[str, Any]], owner: dict[str, Any]
) -> None:
    linked: set[str] = set()
    anonymous_calls = 0
    for call in calls:
        anonymous_id = call.get("anonymousId")
        if anonymous_id is None or anonymous_id.startswith("POS"):
            continue
        member = owner[anonymous_id]
        if call["type"] == "identify":
            assert call["userId"] == member.user_id
            linked.add(anonymous_id)
        elif anonymous_id in linked:
            assert call["userId"] == member.user_id
        else:
            assert "userId" not in call
            anonymous_calls += 1
    assert anonymous_calls > 100 and len(linked) > 100


def test_online_orders_are_placed_by_identified_members(calls: list[dict[str, Any]]) -> None:
    for call in calls:
        if call.get("event") == "Order Completed" and call["context"]["channel"] != "pos":
            assert call.get("userId") and call.get("anonymousId")


def test_identify_traits_carry_the_truths_identifiers(
    calls: list[dict[str, Any]], owner: dict[str, Any]
) -> None:
    enrolments = [c for c in calls if c["type"] == "identify" and "card_number" in c["traits"]]
    assert enrolments
    for call in enrolments:
        member, traits = owner[call["userId"]], call["traits"]
        assert traits["email"].lower() == member.email
        assert traits["card_number"] == member.card_number
        assert traits["birthday"] == member.birthday
        number = phonenumbers.parse(traits["phone"], "US")
        assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == (
            member.phone
        )


# ------------------------------------------------------------------- ground truth


def test_members_act_only_between_joining_and_dropping_out(
    simulation: Simulation, calls: list[dict[str, Any]], owner: dict[str, Any]
) -> None:
    new_members_browsing_before_joining = set()
    for call in calls:
        member = member_of(call, owner)
        moment = ms(call["timestamp"])
        if member.joined_at is not None and moment < ms(member.joined_at):
            assert "userId" not in call  # before joining: anonymous browsing only
            new_members_browsing_before_joining.add(member.user_id)
        if call.get("event") in SESSION_EVENTS:
            assert moment < ms(member.dropout_at) + 3_600_000  # a session may end after it
    assert new_members_browsing_before_joining
    joined = [m for m in simulation.truth.members if m.joined_at is not None]
    assert joined and all(simulation.start_ms <= ms(m.joined_at) < simulation.end_ms
                          for m in joined)


def test_order_counts_match_the_planted_purchase_process(
    simulation: Simulation, calls: list[dict[str, Any]], owner: dict[str, Any]
) -> None:
    orders = orders_by_member(calls, owner)
    observed = expected = 0.0
    for member in simulation.truth.members:
        if member.rate_half_life_days is not None:
            continue  # at-risk members decay; checked below
        joined = ms(member.joined_at) if member.joined_at else simulation.start_ms
        active_days = max(min(ms(member.dropout_at), simulation.end_ms) - joined, 0) / DAY_MS
        observed += len(orders[member.user_id])
        expected += member.order_rate_per_day * active_days
    assert observed == pytest.approx(expected, rel=0.1)


def test_at_risk_members_buy_less_and_less_and_dropouts_are_not_alive(
    simulation: Simulation, calls: list[dict[str, Any]], owner: dict[str, Any]
) -> None:
    orders = orders_by_member(calls, owner)
    middle = simulation.start_ms + 60 * DAY_MS
    early = late = 0
    for member in simulation.truth.members:
        assert member.alive_at_end == (ms(member.dropout_at) >= simulation.end_ms)
        if member.persona == "at_risk":
            times = [ms(order["timestamp"]) for order in orders[member.user_id]]
            early += sum(t < middle for t in times)
            late += sum(t >= middle for t in times)
    assert late < early / 2


def test_replenished_products_are_bought_on_their_cycle(
    simulation: Simulation, calls: list[dict[str, Any]], owner: dict[str, Any]
) -> None:
    orders = orders_by_member(calls, owner)
    errors, within = [], 0
    for member in simulation.truth.members:
        for cycle in member.replenishment:
            times = [ms(o["timestamp"]) for o in orders[member.user_id]
                     if any(line["product_id"] == cycle.product_id
                            for line in o["properties"]["products"])]
            for previous, following in pairwise(times):
                error = (following - previous) / DAY_MS - cycle.cycle_days
                errors.append(error)
                within += abs(error) <= 3 * cycle.jitter_days + 1  # noise + time of day
    assert len(errors) > 200
    assert within / len(errors) > 0.97
    assert statistics.median(abs(e) for e in errors) < 1.5


def test_personas_differ_the_way_the_seed_describes(
    simulation: Simulation, calls: list[dict[str, Any]], owner: dict[str, Any]
) -> None:
    orders = orders_by_member(calls, owner)
    discounted, order_values, favourite_brand = (defaultdict(list) for _ in range(3))
    redemptions: Counter[str] = Counter()
    for member in simulation.truth.members:
        favourites = dict(zip(member.favourite_categories, member.favourite_brands, strict=True))
        for order in orders[member.user_id]:
            lines = order["properties"]["products"]
            discounted[member.persona] += [bool(line.get("discount")) for line in lines]
            order_values[member.persona].append(order["properties"]["total"])
            favourite_brand[member.persona] += [line["brand"] == favourites[line["category"]]
                                                for line in lines if line["category"] in favourites]
            redemptions[member.persona] += bool(order["properties"].get("points_redeemed"))
    share = {persona: statistics.mean(values) for persona, values in discounted.items()}
    assert share["price_sensitive"] > max(v for p, v in share.items() if p != "price_sensitive")
    value = {persona: statistics.mean(values) for persona, values in order_values.items()}
    assert value["high_value"] > 1.5 * max(v for p, v in value.items() if p != "high_value")
    loyalty = {persona: statistics.mean(values) for persona, values in favourite_brand.items()}
    assert loyalty["brand_enthusiast"] > 0.75 > loyalty["price_sensitive"]
    per_order = {p: redemptions[p] / len(order_values[p]) for p in order_values}
    assert per_order["price_sensitive"] > per_order["brand_enthusiast"]


def test_truth_is_complete_and_round_trips_through_json(
    simulation: Simulation, tmp_path: Path
) -> None:
    truth = simulation.truth
    assert truth.members_count == len(truth.members) == 250
    assert {m.persona for m in truth.members} == set(PERSONA_NAMES)
    for member in truth.members:
        assert member.anonymous_ids and member.favourite_categories
        assert abs(sum(member.channel_mix.values()) - 1) < 0.01
        assert member.order_rate_per_day == pytest.approx(
            member.purchase_rate_per_day + sum(1 / r.cycle_days for r in member.replenishment),
            abs=1e-4,
        )
    path = tmp_path / "events.jsonl"
    truth.write(truth_path(path))
    assert truth_path(path).name == "events.jsonl.truth.json"
    assert GroundTruth.read(truth_path(path)) == truth


def test_identifiers_are_unique_and_well_formed() -> None:
    factory = IdentityFactory(seed=9)
    count = 3000
    for make in (factory.user_id, factory.card_number, factory.pos_customer_id, factory.phone):
        assert len({make(i) for i in range(count)}) == count
    assert len({factory.email(i, "Ann", "Lee") for i in range(count)}) == count
    for i in range(0, count, 97):
        assert luhn_valid(factory.card_number(i))
        assert phonenumbers.is_valid_number(phonenumbers.parse(factory.phone(i)))


# ---------------------------------------------------------------------- determinism


def test_same_arguments_give_the_same_calls_and_other_seeds_do_not() -> None:
    first = msgspec.json.encode(list(simulate(30, 20, seed=5)))
    assert first == msgspec.json.encode(list(simulate(30, 20, seed=5)))
    assert first != msgspec.json.encode(list(simulate(30, 20, seed=6)))


def test_a_members_truth_does_not_depend_on_how_many_members_there_are() -> None:
    small, large = Simulation(20, 30, seed=3), Simulation(60, 30, seed=3)
    assert small.truth.members == large.truth.members[:20]


@settings(max_examples=15, deadline=None)
@given(members=st.integers(1, 6), days=st.integers(1, 25), seed=st.integers(0, 2**32))
def test_any_small_simulation_is_ordered_valid_and_reproducible(
    members: int, days: int, seed: int
) -> None:
    sim = Simulation(members, days, seed)
    calls = list(sim.events())
    times = [ms(call["timestamp"]) for call in calls]
    assert times == sorted(times) and all(sim.start_ms <= t < sim.end_ms for t in times)
    for call in calls:
        normalise(call, call_type=None, received_at=sim.end_ms, default_message_id="x")
    assert calls == list(sim.events())


@pytest.mark.parametrize(("members", "days"), [(0, 10), (-3, 10), (5, 0), (5, 100_000)])
def test_out_of_range_sizes_are_invalid_input(members: int, days: int) -> None:
    with pytest.raises(InvalidInput):
        Simulation(members, days, seed=1)


# ------------------------------------------------------------------------ the CLI


def invoke(*arguments: str) -> Result:
    """``loyalty-cdp simulate ARGUMENTS`` in process."""
    app = typer.Typer()
    app.command()(simulate_command)
    return CliRunner().invoke(app, list(arguments))


def test_simulate_writes_the_same_file_and_truth_for_the_same_arguments(tmp_path: Path) -> None:
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        out = tmp_path / name
        result = invoke("--members", "20", "--days", "15", "--seed", "8", "--start", "2026-02-01",
                        "--out", str(out))
        assert result.exit_code == 0, result.output
        assert f"events for 20 members over 15 days -> {out}" in result.stderr
        outputs.append((out.read_bytes(), truth_path(out).read_bytes()))
    assert outputs[0] == outputs[1]
    lines = outputs[0][0].splitlines()
    assert [msgspec.json.decode(line) for line in lines] == list(
        simulate(20, 15, seed=8, start=date(2026, 2, 1))
    )
    assert GroundTruth.read(tmp_path / "a.jsonl.truth.json").start == "2026-02-01T00:00:00.000Z"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--members", "0", "--days", "5", "--out", "{dir}/x"], "members: must be between"),
        (["--members", "5", "--days", "0", "--out", "{dir}/x"], "days: must be between"),
        (["--members", "5", "--days", "5"], "exactly one of --out"),
        (["--members", "5", "--days", "5", "--out", "{dir}/x", "--target", "http://h"],
         "exactly one of --out"),
        (["--members", "5", "--days", "5", "--out", "{dir}/missing/x"], "cannot write to"),
        (["--members", "5", "--days", "5", "--out", "{dir}"], "is a directory"),
        (["--members", "5", "--days", "5", "--out", "{dir}/x", "--start", "2026-13-01"],
         "start: must be a date"),
        (["--members", "5", "--days", "5", "--out", "{dir}/x", "--start", "9999-12-30"],
         "start: must be between 1970-01-01 and 9000-01-01"),
        (["--members", "5", "--days", "5", "--out", "{dir}/x", "--rate", "10"],
         "--rate applies to --target"),
        (["--members", "5", "--days", "5", "--target", "http://127.0.0.1:9", "--write-key", "k",
          "--rate", "0"], "rate: must be a positive number"),
        (["--members", "5", "--days", "5", "--target", "ftp://h", "--write-key", "k"],
         "target: must be an http(s) URL"),
        (["--members", "5", "--days", "5", "--target", "http://127.0.0.1:9"], "--write-key"),
    ],
)
def test_invalid_arguments_are_invalid_input_and_write_nothing(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = invoke(*(a.replace("{dir}", str(tmp_path)) for a in arguments))
    assert isinstance(result.exception, InvalidInput)
    assert message in str(result.exception)
    assert list(tmp_path.iterdir()) == []


def test_the_command_exits_with_code_2_and_a_clear_message(tmp_path: Path) -> None:
    result = run_cli("simulate", "--members", "0", "--days", "5", "--out", str(tmp_path / "x"))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: members: must be between 1 and 10,000,000, got 0"
