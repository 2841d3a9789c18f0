"""Identity: identifier extraction and normalisation, the identity graph, merge protection."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.core.events import normalise
from loyalty_cdp.core.identifiers import (
    DecodedEvent,
    decode_event,
    extract_identifiers,
    is_blocked,
    normalise_identifier,
)
from loyalty_cdp.core.identity import (
    GraphState,
    IdentityGraph,
    IdentityRules,
    Member,
    batch_identifiers,
    canonical_id,
    member_id_for_user,
)
from loyalty_cdp.errors import InvalidInput

T0 = 1_700_000_000_000
MINUTE = 60_000


def call(kind: str, at: int, message_id: str, **fields: Any) -> DecodedEvent:
    """A canonical event as the log stores it, decoded as the processor will see it."""
    body = {"type": kind, "timestamp": _iso(at), "messageId": message_id, **fields}
    event = normalise(body, call_type=None, received_at=at, default_message_id=message_id)
    return decode_event(event)


def _iso(ms: int) -> str:
    from loyalty_cdp.core.events import format_time

    return format_time(ms)


def event(
    message_id: str,
    at: int,
    *,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    kind: str = "identify",
    traits: dict[str, Any] | None = None,
    context_traits: dict[str, Any] | None = None,
) -> DecodedEvent:
    return DecodedEvent(
        message_id=message_id,
        type=kind,
        event="Something" if kind == "track" else None,
        user_id=user_id,
        anonymous_id=anonymous_id,
        timestamp=at,
        channel="web",
        traits=traits or {},
        context_traits=context_traits or {},
    )


# --- identifiers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["", "   ", "null", "NULL", "Undefined", "anonymous", "none", "0", "-1", "0000", "----",
     "00-00", " 0 0 ", "nan", "a\x00b@example.com", "card\x00"],
)
def test_blocked_values(value: str) -> None:
    assert is_blocked(value)
    for kind in ("user_id", "anonymous_id", "email", "card", "device_id"):
        assert normalise_identifier(kind, value) is None


@pytest.mark.parametrize("value", ["a", "10", "0001", "-2", "user-0", "anon"])
def test_ordinary_values_are_not_blocked(value: str) -> None:
    assert not is_blocked(value)


def test_email_phone_and_card_normalisation() -> None:
    assert normalise_identifier("email", "  Ann.Lee@Example.COM ") == "ann.lee@example.com"
    assert normalise_identifier("email", "not-an-email") is None
    assert normalise_identifier("email", "two@@example.com") is None
    assert normalise_identifier("phone", "(415) 555-2671", "US") == "+14155552671"
    assert normalise_identifier("phone", "+44 20 7946 0958", "US") == "+442079460958"
    assert normalise_identifier("phone", "020 7946 0958", "GB") == "+442079460958"
    assert normalise_identifier("phone", "020 7946 0958", None) is None
    assert normalise_identifier("phone", "12345", "US") is None
    assert normalise_identifier("card", " lc-1234 5678 ") == "LC12345678"
    assert normalise_identifier("card", "00 00-00") is None
    assert normalise_identifier("user_id", " Ann ") == " Ann ", "ids are kept exactly"
    assert normalise_identifier("user_id", 42) == "42"
    assert normalise_identifier("user_id", True) is None
    assert normalise_identifier("user_id", "x" * 257) is None


def test_extraction_reads_every_documented_source_in_priority_order() -> None:
    decoded = call(
        "identify",
        T0,
        "m1",
        userId="u1",
        anonymousId="a1",
        traits={"email": "Ann@Example.com", "phone": "+14155552671", "card_number": "C-1"},
        context={
            "traits": {"pos_customer_id": "pos-9", "loyalty_card": "C-2"},
            "device": {"id": "dev-1"},
            "externalIds": [
                {"id": "ann@example.com", "type": "email", "collection": "users",
                 "encoding": "none"},
                {"id": "idfa-1", "type": "ios.idfa", "collection": "users", "encoding": "none"},
                {"id": "x", "type": "bad type!", "collection": "users", "encoding": "none"},
            ],
        },
    )
    assert extract_identifiers(decoded, "US") == [
        "user_id:u1",
        "card:C1",
        "card:C2",
        "email:ann@example.com",
        "phone:+14155552671",
        "pos_customer_id:pos-9",
        "device_id:dev-1",
        "ext.ios.idfa:idfa-1",
        "anonymous_id:a1",
    ]


def test_extraction_ignores_properties_that_are_not_the_members_own() -> None:
    decoded = call(
        "track", T0, "m1", event="Gift Card Purchased", anonymousId="a1",
        properties={"card_number": "GIFT-1", "email": "friend@example.com",
                    "loyalty_card": "LC-7"},
    )
    assert extract_identifiers(decoded) == ["card:LC7", "anonymous_id:a1"]
    track_traits = call("track", T0, "m2", event="X", anonymousId="a2", traits={"email": "a@b.c"})
    assert extract_identifiers(track_traits) == ["anonymous_id:a2"], "traits count on identify"


def test_alias_previous_id_is_an_anonymous_id() -> None:
    decoded = call("alias", T0, "m1", userId="u1", previousId="a-old")
    assert extract_identifiers(decoded) == ["user_id:u1", "anonymous_id:a-old"]


def test_decode_event_keeps_the_envelope_and_the_read_parts() -> None:
    decoded = call(
        "track", T0, "m1", event="Order Completed", userId="u1",
        properties={"total": 5}, context={"channel": " POS ", "consent": {"x": 1},
                                          "userAgent": "ignored"},
    )
    assert (decoded.message_id, decoded.type, decoded.event, decoded.user_id) == (
        "m1", "track", "Order Completed", "u1")
    assert decoded.timestamp == T0
    assert decoded.channel == "pos"
    assert decoded.properties == {"total": 5}
    assert decoded.consent == {"x": 1}


def test_decode_event_reads_a_body_of_the_wrong_shape_leniently() -> None:
    class Record(msgspec.Struct):
        message_id: str = "m1"
        type: str = "track"
        event: str | None = "X"
        user_id: str | None = "u1"
        anonymous_id: str | None = None
        timestamp: int = T0
        channel: str | None = None
        body: bytes = b'{"traits": [1], "properties": "no", "context": {"device": "phone"}}'

    decoded = decode_event(Record())
    assert decoded.traits == {} and decoded.properties == {} and decoded.device == {}


# --- the graph -------------------------------------------------------------------------


def scenario() -> list[DecodedEvent]:
    """Anonymous web browsing, a login, a POS purchase with the card, an app session."""
    return [
        call("page", T0, "web-1", anonymousId="a1", context={"channel": "web"},
             properties={"category": "Dog"}),
        call("track", T0 + MINUTE, "web-2", event="Product Viewed", anonymousId="a1",
             context={"channel": "web"}, properties={"product_id": "p1"}),
        call("identify", T0 + 2 * MINUTE, "login", userId="u1", anonymousId="a1",
             context={"channel": "web"},
             traits={"email": "Ann@Example.com", "loyalty_card": "LC 1001"}),
        call("track", T0 + 60 * MINUTE, "pos-1", event="Order Completed",
             anonymousId="pos-store7-txn-88", context={"channel": "pos",
                                                       "traits": {"loyalty_card": "LC1001"}},
             properties={"total": 30}),
        call("track", T0 + 90 * MINUTE, "app-1", event="Application Opened", userId="u1",
             context={"channel": "app", "device": {"id": "dev-9"}}),
    ]


def assert_scenario_member(graph: IdentityGraph) -> None:
    for kind, value in [("email", "ann@example.com"), ("card", "lc-1001"),
                        ("anonymous_id", "a1"), ("anonymous_id", "pos-store7-txn-88"),
                        ("device_id", "dev-9"), ("user_id", "u1")]:
        member = graph.lookup(kind, value)
        assert member is not None and member.user_id == "u1", (kind, value)
    assert len(graph) == 1


def test_scenario_in_one_batch() -> None:
    graph = IdentityGraph()
    resolution = graph.resolve(scenario())
    assert resolution.assignments == ["u1"] * 5
    assert_scenario_member(graph)
    [merge] = resolution.merges
    assert (merge.message_id, merge.kind, merge.value) == ("login", "anonymous_id", "a1")
    assert (merge.from_id, merge.into_id) == ("anon:a1", "u1")
    assert resolution.renamed == {}, "anon:a1 was created and absorbed within the batch"
    assert resolution.changed == ["u1"]


def test_scenario_one_event_per_batch_reports_the_rename_for_retroactive_attribution() -> None:
    graph = IdentityGraph()
    results = [graph.resolve([decoded]) for decoded in scenario()]
    assert [r.assignments[0] for r in results] == ["anon:a1", "anon:a1", "u1", "u1", "u1"]
    assert results[2].renamed == {"anon:a1": "u1"}
    assert results[2].changed == ["u1"]
    assert_scenario_member(graph)


def test_arrival_order_does_not_change_the_scenario() -> None:
    events = scenario()
    for seed in range(5):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        graph = IdentityGraph()
        for decoded in shuffled:
            graph.resolve([decoded])
        assert_scenario_member(graph)


def test_two_user_ids_are_never_merged() -> None:
    graph = IdentityGraph()
    resolution = graph.resolve([
        event("m1", T0, user_id="alice", traits={"email": "shared@example.com"}),
        event("m2", T0 + 1, user_id="bob", traits={"email": "shared@example.com"}),
    ])
    assert resolution.assignments == ["alice", "bob"]
    assert resolution.merges == []
    [rejection] = resolution.rejections
    assert (rejection.message_id, rejection.kind, rejection.member_id) == ("m2", "email", "bob")
    assert "user_id" in rejection.reason
    assert graph.lookup("email", "shared@example.com").id == "alice"  # type: ignore[union-attr]
    assert graph.member("bob").identities == {"user_id": ["bob"]}  # type: ignore[union-attr]


def test_first_come_rule_follows_event_time_within_a_batch() -> None:
    late = event("m1", T0 + 10, user_id="bob", traits={"email": "shared@example.com"})
    early = event("m2", T0, user_id="alice", traits={"email": "shared@example.com"})
    graph = IdentityGraph()
    assert graph.resolve([late, early]).assignments == ["bob", "alice"]
    assert graph.lookup("email", "shared@example.com").id == "alice"  # type: ignore[union-attr]
    same_time = [event(mid, T0, user_id=mid.upper(), traits={"email": "s@example.com"})
                 for mid in ("m9", "m3")]
    tied = IdentityGraph()
    tied.resolve(same_time)
    assert tied.lookup("email", "s@example.com").id == "M3", "ties go to the smaller id"  # type: ignore[union-attr]


def test_an_identifier_beyond_its_limit_stays_on_the_event_but_does_not_link() -> None:
    graph = IdentityGraph(IdentityRules(limits={"email": 2}))
    emails = ["e1@x.io", "e2@x.io", "e3@x.io"]
    resolution = graph.resolve(
        [event(f"m{i}", T0 + i, user_id="u1", traits={"email": e}) for i, e in enumerate(emails)]
    )
    assert resolution.assignments == ["u1", "u1", "u1"]
    assert graph.member("u1").identities["email"] == ["e1@x.io", "e2@x.io"]  # type: ignore[union-attr]
    assert [r.value for r in resolution.rejections] == ["e3@x.io"]
    assert graph.lookup("email", "e3@x.io") is None


def test_a_merge_that_would_break_a_limit_is_refused() -> None:
    graph = IdentityGraph(IdentityRules(limits={"device_id": 1}))
    graph.resolve([
        event("m1", T0, anonymous_id="a1", kind="track", context_traits={"email": "x@y.io"}),
        DecodedEvent("m2", "track", "X", None, "a2", T0 + 1, None, device={"id": "d2"}),
        DecodedEvent("m3", "track", "X", None, "a1", T0 + 2, None, device={"id": "d1"}),
    ])
    resolution = graph.resolve(
        [DecodedEvent("m4", "track", "X", None, "a2", T0 + 3, None,
                      context_traits={"email": "x@y.io"})]
    )
    assert resolution.merges == []
    assert "limit of 1 device_id" in resolution.rejections[0].reason
    assert len(graph) == 2


def test_alias_links_the_previous_anonymous_id_to_the_user() -> None:
    graph = IdentityGraph()
    graph.resolve([event("m1", T0, anonymous_id="old-anon", kind="track")])
    resolution = graph.resolve([call("alias", T0 + 1, "m2", userId="u1", previousId="old-anon")])
    assert resolution.renamed == {"anon:old-anon": "u1"}
    assert graph.lookup("anonymous_id", "old-anon").id == "u1"  # type: ignore[union-attr]


def test_concurrent_identifies_for_one_person_yield_one_member() -> None:
    race = [event(f"m{i}", T0, user_id="u1", anonymous_id=f"device-{i}") for i in range(8)]
    graph = IdentityGraph()
    assert set(graph.resolve(race).assignments) == {"u1"}
    assert len(graph) == 1
    split = IdentityGraph()
    for i in range(0, 8, 2):
        split.resolve(race[i : i + 2][::-1])
    assert len(split) == 1
    assert split.member("u1").identities["anonymous_id"] == sorted(  # type: ignore[union-attr]
        f"device-{i}" for i in range(8)
    )


def test_anonymous_members_get_content_derived_ids() -> None:
    graph = IdentityGraph()
    resolution = graph.resolve([
        event("m1", T0, anonymous_id="zz", kind="track", context_traits={"email": "p@q.io"}),
    ])
    assert resolution.assignments == ["anon:zz"]
    second = graph.resolve(
        [event("m2", T0 + 1, anonymous_id="aa", kind="track", context_traits={"email": "p@q.io"})]
    )
    assert second.assignments == ["anon:aa"]
    assert second.renamed == {"anon:zz": "anon:aa"}
    assert canonical_id({"email": ["p@q.io"]}).startswith("anon:~")
    assert member_id_for_user("anon:x") == "uid:anon:x"
    assert member_id_for_user("uid:y") == "uid:uid:y"
    assert member_id_for_user("plain") == "plain"


def test_user_ids_that_look_like_anonymous_member_ids_do_not_collide() -> None:
    graph = IdentityGraph()
    resolution = graph.resolve([
        event("m1", T0, anonymous_id="x", kind="track"),
        event("m2", T0 + 1, user_id="anon:x"),
    ])
    assert resolution.assignments == ["anon:x", "uid:anon:x"]
    assert len(graph) == 2


def test_events_without_usable_identifiers_are_unassigned() -> None:
    graph = IdentityGraph()
    assert graph.resolve([event("m1", T0, anonymous_id="null", kind="track")]).assignments == [
        None
    ]
    assert len(graph) == 0


def test_graph_state_round_trips_through_msgspec() -> None:
    graph = IdentityGraph()
    graph.resolve(scenario())
    for codec in (msgspec.json, msgspec.msgpack):
        state = codec.decode(codec.encode(graph.state()), type=GraphState)
        restored = IdentityGraph.from_state(state)
        assert restored.state() == graph.state()
        assert_scenario_member(restored)
    per_member = len(msgspec.msgpack.encode(graph.state())) / len(graph)
    assert per_member < 300


def test_a_graph_of_just_the_batchs_members_resolves_like_the_whole_graph() -> None:
    rules = IdentityRules()
    whole = IdentityGraph(rules)
    whole.resolve([*scenario()[:3], event("o1", T0, user_id="other", anonymous_id="o-anon")])
    batch = scenario()[3:]
    owners = (whole.lookup(*key.split(":", 1)) for keys in batch_identifiers(batch, rules) for key in keys)
    loaded = {member.id: member for member in owners if member is not None}
    assert list(loaded) == ["u1"], "the other member is not needed"
    partial = IdentityGraph(rules, loaded.values())
    assert partial.resolve(batch).assignments == whole.resolve(batch).assignments
    assert partial.member("u1") == whole.member("u1")


def test_rules_are_validated() -> None:
    with pytest.raises(InvalidInput, match="user_id"):
        IdentityRules(limits={"user_id": 2})
    with pytest.raises(InvalidInput, match="at least 1"):
        IdentityRules(limits={"email": 0})
    assert IdentityRules().limit("user_id") == 1
    assert IdentityRules(external_limit=3).limit("ext.ios.idfa") == 3


# --- properties ------------------------------------------------------------------------

USER_IDS = ["u0", "u1", "u2"]
EMAILS = ["e0@x.io", "e1@x.io", "e2@x.io", "e3@x.io"]
ANON_IDS = ["a0", "a1", "a2", "a3", "a4", "a5"]
CARDS = ["C0", "C1", "C2"]
BLOCKED = ["null", "0", "-1", "anonymous", "undefined", "", "000", "--", "0-0", "NULL"]


@st.composite
def linked_events(draw: st.DrawFn, user_ids: list[str], blocked: bool = False) -> DecodedEvent:
    index = draw(st.integers(0, 10**6))
    pool = BLOCKED if blocked else None
    user_id = draw(st.sampled_from([None, *user_ids])) if user_ids else None
    anonymous_id = draw(st.sampled_from(pool or ANON_IDS))
    traits: dict[str, Any] = {}
    if draw(st.booleans()):
        traits["email"] = draw(st.sampled_from(pool or EMAILS))
    if draw(st.booleans()):
        traits["loyalty_card"] = draw(st.sampled_from(pool or CARDS))
    return DecodedEvent(
        message_id=f"m{index}",
        type="identify",
        event=None,
        user_id=user_id,
        anonymous_id=anonymous_id if user_id is None or draw(st.booleans()) else None,
        timestamp=T0 + draw(st.integers(0, 50)),
        channel=None,
        traits=traits,
    )


def batches(events: list[DecodedEvent], sizes: list[int]) -> list[list[DecodedEvent]]:
    out, start = [], 0
    for size in sizes:
        out.append(events[start : start + size])
        start += size
    out.append(events[start:])
    return out


def assert_graph_invariants(graph: IdentityGraph) -> None:
    owners: dict[str, str] = {}
    for member in graph.state().members:
        assert len(member.identities.get("user_id", [])) <= 1
        assert member.id == canonical_id(member.identities)
        for kind, values in member.identities.items():
            for value in values:
                key = f"{kind}:{value}"
                assert key not in owners, f"{key} owned twice"
                owners[key] = member.id


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(linked_events(USER_IDS), max_size=40), st.lists(st.integers(0, 8), max_size=6))
def test_merges_never_join_two_user_ids(events: list[DecodedEvent], sizes: list[int]) -> None:
    graph = IdentityGraph()
    for batch in batches(events, sizes):
        resolution = graph.resolve(batch)
        for decoded, member_id in zip(batch, resolution.assignments, strict=True):
            if decoded.user_id is not None:
                assert member_id == decoded.user_id
    assert_graph_invariants(graph)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(linked_events(USER_IDS, blocked=True), max_size=30))
def test_blocked_values_never_link(events: list[DecodedEvent]) -> None:
    graph = IdentityGraph()
    resolution = graph.resolve(events)
    for decoded, member_id in zip(events, resolution.assignments, strict=True):
        assert member_id == decoded.user_id, "only the user id can place an event"
    for member in graph.state().members:
        assert set(member.identities) == {"user_id"}


def partition(graph: IdentityGraph) -> set[frozenset[str]]:
    return {
        frozenset(f"{kind}:{value}" for kind, values in m.identities.items() for value in values)
        for m in graph.state().members
    }


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.lists(linked_events(["u0"]), max_size=40),
    st.randoms(use_true_random=False),
    st.lists(st.integers(0, 8), max_size=6),
)
def test_grouping_does_not_depend_on_arrival_order_when_no_limit_is_hit(
    events: list[DecodedEvent], rng: random.Random, sizes: list[int]
) -> None:
    rules = IdentityRules(limits={"email": 100, "card": 100, "anonymous_id": 100})
    in_order = IdentityGraph(rules)
    expected = in_order.resolve(events).assignments
    shuffled = list(enumerate(events))
    rng.shuffle(shuffled)
    graph = IdentityGraph(rules)
    for batch in batches([e for _, e in shuffled], sizes):
        graph.resolve(batch)
    assert partition(graph) == partition(in_order)
    final = graph.resolve(events).assignments  # every identifier is known: a pure lookup
    assert final == expected


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(linked_events(USER_IDS), max_size=40), st.lists(st.integers(0, 8), max_size=6))
def test_graphs_of_each_batchs_owners_resolve_like_the_whole_graph(events: list[DecodedEvent], sizes: list[int]) -> None:
    """What the processor does: per batch, a graph of the stored members owning one of the batch's
    identifiers; then the changed members are stored and the renamed ones removed. Tight limits make
    merge protection count identifiers the batch does not carry."""
    rules = IdentityRules(limits={"email": 2, "card": 1, "anonymous_id": 3})
    whole = IdentityGraph(rules)
    stored: dict[str, Member] = {}
    for batch in batches(events, sizes):
        found = batch_identifiers(batch, rules)
        keys = {key for event_keys in found for key in event_keys}
        owners = [m for m in stored.values()
                  if any(f"{kind}:{value}" in keys for kind, values in m.identities.items() for value in values)]
        partial = IdentityGraph(rules, owners)
        resolution = partial.resolve(batch, found)
        assert resolution == whole.resolve(batch)
        for old_id in resolution.renamed:
            stored.pop(old_id, None)
        stored.update((member_id, partial.member(member_id)) for member_id in resolution.changed)  # type: ignore[misc]
    assert stored == {member.id: member for member in whole.state().members}
