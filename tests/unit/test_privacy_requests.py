"""Data-subject requests: validation naming the field, deadlines per regime, statuses, ADMT accounts."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.core.privacy import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    RECEIVED,
    REJECTED,
    REQUEST_TYPES,
    DecisionRecord,
    PrivacyRequestSpec,
    ScoreExplanation,
    add_business_days,
    add_months,
    admt_report,
    check_transition,
    deadline,
    explain_decision,
    is_overdue,
    parse_request,
)
from loyalty_cdp.errors import Conflict, InvalidInput


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_a_valid_request_is_normalised() -> None:
    spec = parse_request({"type": "erasure", "identifier": {"type": "Email", "value": "  Ann@Example.COM "}})
    assert spec == PrivacyRequestSpec("erasure", "email", "ann@example.com", None, None)
    phone = parse_request({"type": "access", "identifier": {"type": "phone", "value": "(415) 555-0123"},
                           "regime": "ccpa"}, default_region="US")
    assert (phone.identifier_value, phone.regime) == ("+14155550123", "ccpa")
    external = parse_request({"type": "opt_out_sale", "identifier": {"type": "ext.shopify_id", "value": "42"}})
    assert external.identifier_type == "ext.shopify_id"
    correction = parse_request({"type": "correction", "identifier": {"type": "user_id", "value": "u1"},
                                "corrections": {"first_name": "Ann", "birthday": None, "vip": True, "age": 41}})
    assert correction.corrections == {"first_name": "Ann", "birthday": None, "vip": True, "age": 41}


@pytest.mark.parametrize(("body", "field"), [
    ("erasure", ""),
    ({"identifier": {"type": "email", "value": "a@b.co"}}, "type"),
    ({"type": "forget_me", "identifier": {"type": "email", "value": "a@b.co"}}, "type"),
    ({"type": "access"}, "identifier"),
    ({"type": "access", "identifier": "a@b.co"}, "identifier"),
    ({"type": "access", "identifier": {"type": "ssn", "value": "1"}}, "identifier.type"),
    ({"type": "access", "identifier": {"type": "ext.Bad Type!", "value": "1"}}, "identifier.type"),
    ({"type": "access", "identifier": {"type": "email"}}, "identifier.value"),
    ({"type": "access", "identifier": {"type": "email", "value": 7}}, "identifier.value"),
    ({"type": "access", "identifier": {"type": "email", "value": "not-an-email"}}, "identifier.value"),
    ({"type": "access", "identifier": {"type": "user_id", "value": "undefined"}}, "identifier.value"),
    ({"type": "access", "identifier": {"type": "email", "value": "a@b.co", "note": 1}}, "identifier.note"),
    ({"type": "access", "identifier": {"type": "email", "value": "a@b.co"}, "regime": "lgpd"}, "regime"),
    ({"type": "access", "identifier": {"type": "email", "value": "a@b.co"}, "corrections": {"a": 1}}, "corrections"),
    ({"type": "correction", "identifier": {"type": "email", "value": "a@b.co"}}, "corrections"),
    ({"type": "correction", "identifier": {"type": "email", "value": "a@b.co"}, "corrections": {}}, "corrections"),
    ({"type": "correction", "identifier": {"type": "email", "value": "a@b.co"},
      "corrections": {"address": {"city": "Paris"}}}, "corrections.address"),
    ({"type": "correction", "identifier": {"type": "email", "value": "a@b.co"},
      "corrections": {"score": float("nan")}}, "corrections.score"),
    ({"type": "access", "identifier": {"type": "email", "value": "a@b.co"}, "reason": "x"}, "reason"),
])
def test_invalid_requests_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        parse_request(body)
    assert error.value.field == field


@settings(max_examples=200, deadline=None)
@given(body=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                         max_leaves=12))
def test_junk_bodies_are_refused_with_invalid_input_only(body: Any) -> None:
    with contextlib.suppress(InvalidInput):
        parse_request(body)


def test_gdpr_deadline_is_one_calendar_month() -> None:
    assert deadline("access", "gdpr", ms("2026-03-15T10:30:00")) == ms("2026-04-15T10:30:00")
    assert deadline("erasure", "gdpr", ms("2026-01-31T08:00:00")) == ms("2026-02-28T08:00:00")
    assert deadline("erasure", "gdpr", ms("2028-01-31T08:00:00")) == ms("2028-02-29T08:00:00")
    assert deadline("erasure", "gdpr", ms("2026-12-20T00:00:00")) == ms("2027-01-20T00:00:00")
    assert deadline("access", "gdpr", ms("2026-01-31T08:00:00"), extended=True) == ms("2026-04-30T08:00:00")


def test_ccpa_deadlines() -> None:
    received = ms("2026-03-02T09:00:00")  # a Monday
    assert deadline("erasure", "ccpa", received) == ms("2026-04-16T09:00:00")
    assert deadline("erasure", "ccpa", received, extended=True) == ms("2026-05-31T09:00:00")
    assert deadline("opt_out_sale", "ccpa", received) == ms("2026-03-23T09:00:00")  # 15 business days after a Monday: the Monday three weeks on
    assert deadline("opt_out_admt", "ccpa", received, extended=True) == ms("2026-03-23T09:00:00")


def test_without_a_regime_the_earlier_deadline_governs() -> None:
    received = ms("2026-03-02T09:00:00")
    assert deadline("access", None, received) == ms("2026-04-02T09:00:00")  # GDPR's month < 45 days
    assert deadline("opt_out_sale", None, received) == ms("2026-03-23T09:00:00")  # 15 business days < a month
    with pytest.raises(InvalidInput):
        deadline("access", "lgpd", received)
    with pytest.raises(InvalidInput):
        deadline("forget", None, received)


@settings(max_examples=200, deadline=None)
@given(received=st.integers(0, 4_000_000_000_000), kind=st.sampled_from(REQUEST_TYPES),
       regime=st.sampled_from([None, "gdpr", "ccpa"]))
def test_deadlines_are_after_receipt_and_extensions_never_shorten(received: int, kind: str, regime: str | None) -> None:
    due = deadline(kind, regime, received)
    assert received + 19 * 86_400_000 <= due <= received + 45 * 86_400_000
    assert deadline(kind, regime, received, extended=True) >= due


def test_calendar_helpers() -> None:
    assert add_months(ms("2026-08-31T23:59:59"), 1) == ms("2026-09-30T23:59:59")
    assert add_business_days(ms("2026-03-06T12:00:00"), 1) == ms("2026-03-09T12:00:00")  # Friday -> Monday


def test_status_transitions() -> None:
    for current, new in [(RECEIVED, IN_PROGRESS), (IN_PROGRESS, COMPLETED), (IN_PROGRESS, FAILED),
                         (FAILED, IN_PROGRESS), (RECEIVED, REJECTED)]:
        check_transition(current, new)
    for current, new in [(COMPLETED, IN_PROGRESS), (REJECTED, COMPLETED), (IN_PROGRESS, RECEIVED)]:
        with pytest.raises(Conflict):
            check_transition(current, new)
    with pytest.raises(InvalidInput):
        check_transition(RECEIVED, "done")
    assert is_overdue(IN_PROGRESS, 1000, 1001) and not is_overdue(COMPLETED, 1000, 5000)
    assert not is_overdue(RECEIVED, 1000, 1000)


SCORES = {
    "lapse_risk": ScoreExplanation("lapse_risk", 0.72, "BG/NBD", "btyd-1-2026-03-01-ab12", ms("2026-03-01T00:00:00"),
                                   {"orders": 4, "days_since_last_purchase": 61},
                                   "4 orders, the last 61 days ago; you usually buy every 20 days."),
    "clv": ScoreExplanation("clv", 412.5, "Gamma-Gamma", "btyd-1-2026-03-01-ab12", ms("2026-03-01T00:00:00")),
}


def test_a_model_based_decision_is_explained_in_plain_words() -> None:
    decision = DecisionRecord(
        "d-1", ms("2026-03-05T14:00:00"), "choose the offer shown at checkout", "offer 'Double points on coffee'",
        "model", rule="members at high lapse risk get a win-back offer", score_values={"lapse_risk": 0.7},
        inputs={"tier": "gold", "channel": "pos"}, holdout_arm="treatment", reasons=("lapse risk 70% >= 60%",),
        channel="pos",
    )
    account = explain_decision(decision, SCORES)
    assert account["uses_predictions"] is True
    assert "the estimated risk that you stop buying from us (70%)" in account["logic"]
    assert "win-back offer" in account["logic"]
    assert account["inputs"] == [{"name": "channel", "value": "pos"}, {"name": "tier", "value": "gold"}]
    [score] = account["scores"]
    assert score["value_at_decision"] == 0.7 and score["model"] == "BG/NBD" and "61 days" in score["explanation"]
    assert account["outcome"] == "Outcome: offer 'Double points on coffee'. Reasons: lapse risk 70% >= 60%."
    assert account["summary"].startswith("On 2026-03-05 an automated system decided how to choose the offer")
    assert "tier: gold" in account["summary"]
    msgspec.json.encode(account)


def test_a_rule_based_decision_and_a_missing_score_explanation() -> None:
    rules = DecisionRecord("d-2", 1, "pick the email offer", "no offer", "rules", rule="control group gets nothing",
                           holdout_arm="control")
    account = explain_decision(rules, SCORES)
    assert account["uses_predictions"] is False and account["logic"].startswith("No prediction was used")
    assert "comparison group" in account["holdout"]
    gone = DecisionRecord("d-3", 2, "rank offers", "offer A", "model", score_values={"p_alive": 0.4})
    [score] = explain_decision(gone, SCORES)["scores"]
    assert score["explanation"] == "The explanation of this score is no longer stored."
    assert score["shown_as"] == "40%"


def test_admt_report_lists_decisions_newest_first_and_the_opt_out() -> None:
    older = DecisionRecord("d-1", 1000, "rank offers", "offer A", "rules")
    newer = DecisionRecord("d-2", 2000, "rank offers", "offer B", "model", score_values={"clv": 400.0})
    report = admt_report([older, newer], SCORES, profiling_allowed=False)
    assert [d["decision_id"] for d in report["decisions"]] == ["d-2", "d-1"]
    assert "opted out" in report["status"] and report["profiling_allowed"] is False
    assert [s["name"] for s in report["scores"]] == ["clv", "lapse_risk"]
    assert report["scores"][0]["shown_as"] == "412.50"
