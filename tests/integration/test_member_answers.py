"""Member answers with their time-independent part kept are exactly a fresh rendering of the
profile, at any later time, and follow every new version of the profile and of its scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.adapters.program_yaml import load_program
from loyalty_cdp.adapters.scorestore import RunRecord, ScoreRow, ScoreStore
from loyalty_cdp.core.events import format_time, normalise, parse_time
from loyalty_cdp.core.loyalty import LoyaltyEngine, loyalty_summary
from loyalty_cdp.core.signals import compute_signals
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.services.loyalty_stage import loyalty_state
from loyalty_cdp.services.member_answers import MemberAnswers
from loyalty_cdp.services.processor import Processor

DAY_MS = 86_400_000
START = "2026-05-01T09:00:00Z"


def calls(order: str, day: int, total: float, category: str) -> list[dict[str, Any]]:
    when = f"2026-05-{day:02d}T12:00:00Z"
    return [
        {"type": "track", "userId": "u-1", "event": "Order Completed", "timestamp": when, "messageId": f"o-{order}",
         "context": {"channel": "pos"},
         "properties": {"order_id": order, "total": total, "currency": "USD", "products": [
             {"product_id": f"p-{order}", "sku": f"S-{order}", "category": category, "brand": "Acme",
              "price": total, "quantity": 1}]}},
        {"type": "track", "userId": "u-1", "event": "Product Viewed", "timestamp": when, "messageId": f"v-{order}",
         "context": {"channel": "web"}, "properties": {"product_id": f"p-{order}", "category": category}},
    ]


FIRST = [{"type": "identify", "userId": "u-1", "anonymousId": "a-1", "timestamp": START, "messageId": "i-1",
          "traits": {"email": "ann@example.com", "first_name": "Ann"}, "context": {"channel": "web"}},
         *calls("1", 3, 42.0, "Coffee"), *calls("2", 9, 18.5, "Tea")]


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.log = SqliteEventLog(tmp_path / "events.db")
        self.store = SqliteProfileStore(tmp_path / "profiles.db")
        self.processor = Processor(self.log, self.store, loyalty=LoyaltyEngine(load_program(retail_program_path())))
        self.scores = ScoreStore(tmp_path)
        self.answers = MemberAnswers(self.processor, self.scores)

    def add(self, batch: list[dict[str, Any]]) -> None:
        self.log.append([normalise(c, call_type=None, received_at=parse_time(c["timestamp"], "timestamp"),
                                   default_message_id=c["messageId"]) for c in batch])
        self.processor.catch_up()

    def fresh(self, member_id: str, as_of: int) -> bytes:
        """The answer rendered from scratch, field by field, as the API defines it."""
        profile = self.processor.view.profile(member_id)
        assert profile is not None and self.processor.loyalty is not None
        state = loyalty_state(profile)
        return msgspec.json.encode({
            "user_id": profile.user_id, "member_id": profile.member_id, "identities": profile.identities,
            "loyalty": loyalty_summary(self.processor.loyalty.engine.book, state, as_of) if state else None,
            "traits": {key: trait.value for key, trait in profile.traits.items()},
            "traits_updated_at": {key: format_time(trait.updated_at) for key, trait in profile.traits.items()},
            "signals": compute_signals(profile, as_of),
            "scores": self.scores.get(member_id) or profile.scores,
            "segments": profile.segments, "consent": profile.consent,
        })

    def close(self) -> None:
        self.scores.close()
        self.store.close()
        self.log.close()


@pytest.fixture()
def world(tmp_path: Path) -> Any:
    world = World(tmp_path)
    world.add(FIRST)
    yield world
    world.close()


def member_id(world: World) -> str:
    found = world.processor.view.find("user_id", "u-1")
    assert found is not None
    return found


def test_a_kept_answer_is_a_fresh_rendering_at_any_later_time(world: World) -> None:
    member = member_id(world)
    base = parse_time("2026-05-09T12:00:00Z", "t")
    for offset_days in (0, 0.5, 1, 29, 31, 89, 91, 200, 366, 1_000):
        as_of = base + int(offset_days * DAY_MS)
        assert world.answers.answer(member, as_of) == world.fresh(member, as_of), offset_days
    assert b'"tier":' in world.answers.answer(member, base)  # type: ignore[operator]


def test_a_new_profile_version_replaces_the_kept_part(world: World) -> None:
    member = member_id(world)
    as_of = parse_time("2026-06-01T00:00:00Z", "t")
    before = world.answers.answer(member, as_of)
    world.add(calls("3", 20, 700.0, "Books"))  # a big order: spend, affinity, tier, wishlist all move
    after = world.answers.answer(member, as_of)
    assert after != before and after == world.fresh(member, as_of)
    assert b'"Books"' in after  # type: ignore[operator]


def test_new_scores_replace_the_kept_part(world: World) -> None:
    member = member_id(world)
    as_of = parse_time("2026-06-01T00:00:00Z", "t")
    world.answers.answer(member, as_of)
    for version, risk in (("v1", 0.25), ("v2", 0.75)):
        world.scores.replace_all([ScoreRow(member, True, risk, {"lapse_risk": risk, "p_alive": 1 - risk}, [])],
                                 RunRecord(version, as_of, as_of, 1, {}))
        answer = world.answers.answer(member, as_of)
        assert answer == world.fresh(member, as_of)
        assert f'"lapse_risk":{risk}'.encode() in answer  # type: ignore[operator]


def test_an_unknown_member_has_no_answer(world: World) -> None:
    assert world.answers.answer("m-nobody", 0) is None


def test_only_the_latest_members_are_kept(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.answers = MemberAnswers(world.processor, world.scores, size=2)
    world.add([{**call, "userId": f"u-{n}", "anonymousId": f"a-{n}", "messageId": f"{call['messageId']}-{n}"}
               for n in range(4) for call in FIRST])
    members = [world.processor.view.find("user_id", f"u-{n}") for n in range(4)]
    as_of = parse_time("2026-06-01T00:00:00Z", "t")
    for member in members:
        assert member is not None
        assert world.answers.answer(member, as_of) == world.fresh(member, as_of)
    assert len(world.answers) == 2
    world.close()


def test_an_erased_member_is_forgotten(world: World) -> None:
    member = member_id(world)
    world.answers.answer(member, 0)
    world.processor.erase_member(member)
    world.answers.forget([member])
    assert len(world.answers) == 0 and world.answers.answer(member, 0) is None
