"""The contact policy: worked examples, and invariants under a burst of triggers (Hypothesis)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from decisioning_support import config
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalty_cdp.core.decisioning import Send, check_contact
from loyalty_cdp.core.decisioning.policy import DAY_MS, ContactPolicy, in_quiet_hours

POLICY: ContactPolicy = config().policy
PARIS = ZoneInfo("Europe/Paris")
CONSENTED = {"email_marketing": True, "sms": True, "push": True}
PURPOSE = {"email": "email_marketing", "sms": "sms", "push": "push"}


def paris(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=PARIS).timestamp() * 1000)  # type: ignore[misc]


def test_consent_is_required_on_outbound_channels() -> None:
    now = paris(2026, 5, 4, 12)
    assert POLICY.purpose("email") == "email_marketing" and POLICY.purpose("web") is None
    assert check_contact(POLICY, "email", "o", 0, [], now, {"email_marketing": True}, None).allowed
    refused = check_contact(POLICY, "email", "o", 0, [], now, {"email_marketing": False}, None)
    assert not refused.allowed and refused.reasons == ("no consent for email_marketing",)
    assert check_contact(POLICY, "sms", "o", 0, [], now, {}, None).reasons == ("no consent for sms",)
    # An inbound channel needs nothing unless configured; this pos channel needs profiling.
    assert check_contact(POLICY, "web", "o", 0, [], now, {}, None).allowed
    assert check_contact(POLICY, "pos", "o", 0, [], now, {"profiling": True}, None).allowed
    assert not check_contact(POLICY, "pos", "o", 0, [], now, {"profiling": False}, None).allowed
    assert check_contact(POLICY, "fax", "o", 0, [], now, CONSENTED, None).reasons == ("fax is not a configured channel",)


def test_quiet_hours_defer_to_their_end_in_the_member_time_zone() -> None:
    late = paris(2026, 5, 4, 22, 30)
    verdict = check_contact(POLICY, "sms", "o", 0, [], late, CONSENTED, None)
    assert verdict.allowed and verdict.send_at == paris(2026, 5, 5, 9, 0)
    assert "deferred past quiet hours 21:00-09:00 (Europe/Paris)" in verdict.reasons[0]
    early = check_contact(POLICY, "push", "o", 0, [], paris(2026, 5, 4, 6, 0), CONSENTED, None)
    assert early.send_at == paris(2026, 5, 4, 8, 0)
    # The member's own zone wins: 22:30 in Paris is 16:30 in New York, not quiet.
    assert check_contact(POLICY, "sms", "o", 0, [], late, CONSENTED, "America/New_York").send_at == late
    # Email has no quiet hours; an unknown member zone falls back to the policy's.
    assert check_contact(POLICY, "email", "o", 0, [], late, CONSENTED, "Nowhere/Atlantis").send_at == late


def test_quiet_hours_across_a_daylight_saving_change() -> None:
    night = paris(2026, 3, 28, 23, 0)  # clocks go forward at 02:00 on 29 March
    verdict = check_contact(POLICY, "sms", "o", 0, [], night, CONSENTED, None)
    assert datetime.fromtimestamp((verdict.send_at or 0) / 1000, PARIS).strftime("%d %H:%M %Z") == "29 09:00 CEST"


def test_caps_weekly_cap_and_cool_down() -> None:
    start = paris(2026, 5, 4, 12)
    two_emails = [Send(start, "email", "a"), Send(start + DAY_MS, "email", "b")]
    capped = check_contact(POLICY, "email", "c", 0, two_emails, start + 2 * DAY_MS, CONSENTED, None)
    assert capped.reasons == ("email cap of 2 per 7 days reached",)
    assert check_contact(POLICY, "email", "c", 0, two_emails, start + 7 * DAY_MS, CONSENTED, None).allowed
    # A send scheduled in the future counts too: a new one before it must not overfill its window.
    future = [Send(start + 3 * DAY_MS, "email", "a"), Send(start + 4 * DAY_MS, "email", "b")]
    assert not check_contact(POLICY, "email", "c", 0, future, start, CONSENTED, None).allowed
    mixed = [Send(start, "email", "a"), Send(start + 1, "push", "b"), Send(start + 2 * DAY_MS, "sms", "c")]
    weekly = check_contact(POLICY, "push", "d", 0, mixed, start + 3 * DAY_MS, CONSENTED, None)
    assert weekly.reasons == ("weekly cap of 3 messages reached",)
    cooling = check_contact(POLICY, "push", "a", 30, [Send(start, "email", "a")], start + 10 * DAY_MS,
                            CONSENTED, None)
    assert cooling.reasons == ("offer a is cooling down (30 days)",)


CHANNELS = ["email", "sms", "push", "web"]
ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]
START = paris(2026, 3, 20)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.lists(st.tuples(st.integers(0, 30 * 24 * 60), st.sampled_from(CHANNELS), st.sampled_from(["a", "b", "c"])),
             min_size=1, max_size=40),
    st.fixed_dictionaries({"email_marketing": st.booleans(), "sms": st.booleans(), "push": st.booleans()}),
    st.sampled_from([None, *ZONES]),
    st.booleans(),
)
def test_a_burst_of_triggers_never_breaks_the_policy(burst: list[tuple[int, str, str]], consent: dict[str, bool],
                                                     timezone: str | None, in_order: bool) -> None:
    """Whatever arrives, in time order or not: caps, cool-downs, quiet hours and consent hold."""
    requests = sorted(burst) if in_order else burst
    cool_down = {"a": 0.0, "b": 2.0, "c": 10.0}
    sent: list[Send] = []
    for minute, channel, offer in requests:
        verdict = check_contact(POLICY, channel, offer, cool_down[offer], sent, START + minute * 60_000, consent,
                                timezone)
        if verdict.allowed and not POLICY.channels[channel].inbound:
            sent.append(Send(verdict.send_at or 0, channel, offer))
    zone = ZoneInfo(timezone or "Europe/Paris")
    for send in sent:
        rules = POLICY.channels[send.channel]
        assert consent[PURPOSE[send.channel]] is True
        if rules.quiet_hours is not None:
            assert not in_quiet_hours(send.at, rules.quiet_hours, zone)
        for cap in rules.caps:
            window = round(cap.days * DAY_MS)
            same = [s.at for s in sent if s.channel == send.channel and send.at - window < s.at <= send.at]
            assert len(same) <= cap.count
        week = [s.at for s in sent if send.at - 7 * DAY_MS < s.at <= send.at]
        assert len(week) <= (POLICY.weekly_cap or 0)
        for other in sent:
            if other is not send and other.offer_id == send.offer_id:
                assert abs(other.at - send.at) >= cool_down[send.offer_id] * DAY_MS
