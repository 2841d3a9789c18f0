"""Activation: decisions become addressed messages, and the dispatcher delivers them to real local servers.

Email goes to aiosmtpd, SMS and push to HTTP servers that check Twilio's and FCM's wire
formats (``loyalty_cdp.demo_sinks``), webhooks to a receiver that verifies the signature;
messages are staged with their decision through the decision store, as the processor does.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import msgspec
import pytest

from loyalty_cdp.adapters.decisionstore import Batch, DecisionStore, Transition
from loyalty_cdp.api.metrics import Metrics
from loyalty_cdp.core.consent import (
    ConsentState,
    Observation,
    Record,
    consent_to_builtins,
    record_consent,
)
from loyalty_cdp.core.decisioning import Chosen, Decision
from loyalty_cdp.core.identifiers import identifier_key
from loyalty_cdp.core.messages import OutboundMessage, message_id_for
from loyalty_cdp.core.profile import Profile, Trait
from loyalty_cdp.demo_sinks import DemoSinks, FcmSink, HttpSink, SmtpSink
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.services.activation import Activation, email_html
from loyalty_cdp.settings import Settings

TOKEN = "twilio-token"
FCM_TOKEN = "fcm-token"
HOOK_SECRET = "hook-secret"
ENV = {"T_TWILIO": TOKEN, "T_FCM": FCM_TOKEN, "T_HOOK": HOOK_SECRET, "T_TRACK": "tracking-secret",
       "LOYALTY_CDP_AUDIENCE_EVERY_S": "0"}
FAST = "{concurrency: 2, queue_size: 8, timeout_s: 0.5, max_attempts: 50, backoff_base_s: 0.02, " \
       "backoff_cap_s: 0.1, breaker_failures: 3, breaker_reset_s: 0.2, lease_s: 5, poll_s: 0.05}"


class Members:
    """The processor's member view, standing in: identifier -> member, member -> profile."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        self.profiles: dict[str, Profile] = {}

    def add(self, profile: Profile) -> None:
        self.profiles[profile.member_id] = profile
        for kind, values in profile.identities.items():
            for value in values:
                self.owner[identifier_key(kind, value)] = profile.member_id

    def find(self, kind: str, value: str) -> str | None:
        return self.owner.get(identifier_key(kind, value))

    def profile(self, member_id: str) -> Profile | None:
        return self.profiles.get(member_id)


def consent(**granted: bool) -> dict[str, Any]:
    observations = [Observation(purpose, Record(value, 1_000, f"consent-{purpose}", "web", "member", False, 1_000))
                    for purpose, value in granted.items()]
    return consent_to_builtins(record_consent(ConsentState(), observations))


def member(n: int, *, phone: bool = True, token: bool = True, **granted: bool) -> Profile:
    user = f"user-{n}"
    identities = {"user_id": [user], "email": [f"ann.{n}@example.com"]}
    traits = {"first_name": Trait("Ann", 1, "m1"), "email": Trait(f"Ann.{n}@Example.com", 1, "m1")}
    if phone:
        identities["phone"] = [f"+1415555{n:04d}"]
        traits["phone"] = Trait(f"(415) 555-{n:04d}", 1, "m1")
    if token:
        traits["push_token"] = Trait(f"fcm-token-{n}:APA91b", 1, "m2")
    return Profile(member_id=f"m-{n}", user_id=user, identities=identities, traits=traits,
                   consent=consent(**granted))


def decision(n: int, channel: str, *, action: str = "send", key: str = "a") -> Decision:
    content = {
        "email": {"subject": "Welcome to Gold, Ann!", "body": "You are now Gold.\n\nDetails: https://shop.example.com/gold"},
        "sms": {"body": "Northwind: 2x points until Friday. Reply STOP to opt out."},
        "push": {"title": "You made Gold!", "body": "100 bonus points on your next order, Ann."},
    }[channel]
    chosen = Chosen(offer_id="tier-welcome", name="Welcome to your new tier", channel=channel, score=1.0,
                    send_at=0, content=content, reason="tier upgrade", grant={"points": 100})
    return Decision(decision_id=f"d-{n}-{channel}-{key}", member_id=f"m-{n}", at=1_000, action=action,  # type: ignore[arg-type]
                    reason="trigger", automated=True, user_id=f"user-{n}", trigger_id="tier-upgrade-welcome",
                    campaign="tier-upgrade-welcome", arm="treatment", chosen=[chosen])


def program(tmp_path: Path, smtp: SmtpSink, twilio: HttpSink, fcm: HttpSink, hook: HttpSink) -> Path:
    base = retail_program_path().read_text().split("\n# --- Destinations")[0]
    destinations = f"""
destinations:
  - name: email
    type: smtp
    settings: {{from_address: rewards@northwind.example, host: 127.0.0.1, port: {smtp.port}, security: none,
                tracking_base_url: "http://cdp.example", tracking_secret_env: T_TRACK,
                unsubscribe_mailto: unsubscribe@northwind.example}}
    delivery: {FAST}
  - name: sms
    type: twilio
    settings: {{account_sid: AC00000000000000000000000000000000, auth_token_env: T_TWILIO,
                from_number: "+14155550100", base_url: "{twilio.url}"}}
    delivery: {FAST}
  - name: push
    type: fcm
    settings: {{project_id: northwind-demo, access_token_env: T_FCM, base_url: "{fcm.url}"}}
    delivery: {FAST}
  - name: hook
    type: webhook
    settings: {{url: "{hook.url}/hook", secret_env: T_HOOK, allow_networks: [127.0.0.0/8]}}
    delivery: {FAST}
  - name: media
    type: audience
    settings: {{directory: audiences}}
"""
    path = tmp_path / "program.yaml"
    path.write_text(base + "\n" + destinations)
    return path


@pytest.fixture()
def sinks() -> Iterator[DemoSinks]:
    running = DemoSinks.start(twilio_auth_token=TOKEN, fcm_access_token=FCM_TOKEN, webhook_secret=HOOK_SECRET,
                              twilio_callbacks=False)
    yield running
    running.stop()


class Log:
    """The event log, standing in: keeps what ``append`` hands over."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, calls: list[dict[str, Any]]) -> None:
        self.calls.extend(calls)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [call for call in self.calls if call.get("event") == event]


def activation(tmp_path: Path, sinks: DemoSinks, members: Members, log: Log,
               fcm: HttpSink | None = None) -> Activation:
    path = program(tmp_path, sinks.smtp, sinks.twilio, fcm or sinks.fcm, sinks.webhook)
    return Activation(Settings(data_dir=tmp_path / "data"), path, log, Metrics(), members=members, environ=ENV)


async def wait_for(condition: Any, timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)


def stage(active: Activation, decisions: list[Decision], members: Members) -> list[OutboundMessage]:
    """What the decisioning stage does: messages for each decision, written with it in one transaction."""
    messages = [m for d in decisions for m in active.messages_for(d, members.profiles[d.member_id])]
    DecisionStore(active.outbox).write(Batch(decisions=decisions, messages=messages), int(time.time() * 1000))
    active.notify()
    return messages


# -- messages_for ------------------------------------------------------------------------------


def test_a_send_decision_becomes_one_addressed_message_per_destination_of_its_channel_and_each_webhook(
    tmp_path: Path, sinks: DemoSinks
) -> None:
    members = Members()
    members.add(member(1, email_marketing=True))
    active = activation(tmp_path, sinks, members, Log())
    try:
        email, hook = active.messages_for(decision(1, "email"), members.profiles["m-1"])
        assert (email.destination, email.channel, email.recipient) == ("email", "email", "ann.1@example.com")
        assert email.message_id == message_id_for("d-1-email-a", "email")
        assert email.subject == "Welcome to Gold, Ann!"
        assert "You are now Gold." in (email.text or "") and "Welcome to Gold, Ann!" in (email.html or "")
        assert '<a href="https://shop.example.com/gold">' in (email.html or "")
        assert "http://cdp.example/v1/email/unsubscribe?" in (email.html or "")
        assert "Dear Customer" not in (email.html or "")
        assert hook.destination == "hook" and hook.recipient == ""
        assert hook.data["offer_id"] == "tier-welcome" and hook.data["channel"] == "email"
        assert hook.data["content"]["subject"] == "Welcome to Gold, Ann!" and hook.data["grant"] == {"points": 100}
        assert hook.data["user_id"] == "user-1" and hook.data["trigger_id"] == "tier-upgrade-welcome"

        sms, _ = active.messages_for(decision(1, "sms"), members.profiles["m-1"])
        assert (sms.recipient, sms.body) == ("+14155550001", "Northwind: 2x points until Friday. Reply STOP to opt out.")
        push, _ = active.messages_for(decision(1, "push"), members.profiles["m-1"])
        assert (push.recipient, push.subject) == ("fcm-token-1:APA91b", "You made Gold!")
    finally:
        asyncio.run(active.close())


def test_no_address_means_no_message_for_that_channel_counted_in_metrics_and_held_out_sends_nothing(
    tmp_path: Path, sinks: DemoSinks
) -> None:
    members = Members()
    members.add(member(2, phone=False, token=False))
    metrics = Metrics()
    path = program(tmp_path, sinks.smtp, sinks.twilio, sinks.fcm, sinks.webhook)
    active = Activation(Settings(data_dir=tmp_path / "data"), path, Log(), metrics, members=members, environ=ENV)
    try:
        profile = members.profiles["m-2"]
        assert [m.destination for m in active.messages_for(decision(2, "sms"), profile)] == ["hook"]
        assert [m.destination for m in active.messages_for(decision(2, "push"), profile)] == ["hook"]
        assert active.messages_for(decision(2, "email", action="hold_out"), profile) == []
        anonymous = Profile(member_id="m-x", identities={"anonymous_id": ["a1"]})
        assert active.messages_for(msgspec.structs.replace(decision(2, "email"), user_id=None), anonymous) == []
        assert metrics.activation_unaddressable.labels("sms", "no phone number")._value.get() == 1
        assert metrics.activation_unaddressable.labels("push", "no push token")._value.get() == 1
        assert metrics.activation_unaddressable.labels("*", "no user_id")._value.get() == 1
    finally:
        asyncio.run(active.close())


def test_email_html_escapes_the_rendered_text_and_links_its_urls() -> None:
    document = email_html("Hi <Ann>", "Save 5% & more: https://x.example/a?b=1&c=2", None, None)
    assert "Hi &lt;Ann&gt;" in document and "Save 5% &amp; more" in document
    assert '<a href="https://x.example/a?b=1&amp;c=2">' in document


# -- through the dispatcher ----------------------------------------------------------------------


def test_decisions_are_delivered_once_to_smtp_twilio_fcm_and_the_webhook_with_status_events(
    tmp_path: Path, sinks: DemoSinks
) -> None:
    members = Members()
    members.add(member(3, email_marketing=True, sms=True, push=True))
    log = Log()
    active = activation(tmp_path, sinks, members, log)

    async def scenario() -> None:
        await active.start()
        try:
            decisions = [decision(3, channel) for channel in ("email", "sms", "push")]
            messages = stage(active, decisions, members)
            assert len(messages) == 6  # one per channel, and the webhook for each decision
            await wait_for(lambda: len(log.named("Message Sent")) == 6, what="six sends")
            stage(active, decisions, members)  # a replayed batch: nothing is sent twice
            await asyncio.sleep(0.3)
        finally:
            await active.close()

    asyncio.run(scenario())
    assert len(sinks.smtp.messages) == 1
    email: EmailMessage = sinks.smtp.messages[0]
    assert email["To"] == "ann.3@example.com" and email["Subject"] == "Welcome to Gold, Ann!"
    assert email["Message-ID"] == f"<{message_id_for('d-3-email-a', 'email')}@northwind.example>"
    assert "http://cdp.example/v1/email/unsubscribe?" in email["List-Unsubscribe"]
    html = email.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "/v1/email/open?" in html and "/v1/email/click?" in html
    assert [item.fields["To"] for item in sinks.twilio.accepted_items()] == ["+14155550003"]
    assert [item.fields["token"] for item in sinks.fcm.accepted_items()] == ["fcm-token-3:APA91b"]
    assert sorted(item.fields["data"]["channel"] for item in sinks.webhook.accepted_items()) == ["email", "push", "sms"]
    assert sinks.twilio.refused == sinks.fcm.refused == sinks.webhook.refused == 0
    assert len(log.named("Message Delivered")) == 3  # the webhook's 2xx is final delivery
    assert {call["userId"] for call in log.calls} == {"user-3"}


def test_a_destination_that_answers_500_delays_only_itself_and_gets_every_message_after_it_recovers(
    tmp_path: Path, sinks: DemoSinks
) -> None:
    members = Members()
    for n in range(10, 16):
        members.add(member(n, email_marketing=True, push=True))
    log = Log()
    broken = FcmSink(access_token=FCM_TOKEN)
    healthy_answer = broken.handle
    broken.handle = lambda path, headers, body: (500, {}, b'{"error": {"status": "INTERNAL"}}')  # type: ignore[method-assign]
    active = activation(tmp_path, sinks, members, log, fcm=broken)

    async def scenario() -> float:
        await active.start()
        try:
            started = time.monotonic()
            stage(active, [decision(n, "email") for n in range(10, 16)] + [decision(n, "push") for n in range(10, 16)],
                  members)
            await wait_for(lambda: len(sinks.smtp.messages) == 6, what="the healthy lane")
            healthy_s = time.monotonic() - started
            await asyncio.sleep(0.5)  # the broken lane keeps failing meanwhile
            assert active.stats["push"].retried > 0 and active.stats["push"].sent == 0
            broken.handle = healthy_answer  # type: ignore[method-assign]
            await wait_for(lambda: broken.accepted == 6, timeout_s=10, what="recovery")
            return healthy_s
        finally:
            await active.close()
            broken.stop()

    healthy_s = asyncio.run(scenario())
    assert healthy_s < 1.0
    tokens = sorted(item.fields["data"]["message_id"] for item in broken.accepted_items())
    assert tokens == sorted(message_id_for(f"d-{n}-push-a", "push") for n in range(10, 16))


# -- consent -----------------------------------------------------------------------------------------


def test_no_email_without_email_consent_and_no_sms_after_stop(tmp_path: Path, sinks: DemoSinks) -> None:
    members = Members()
    members.add(member(20, sms=True))  # never allowed email
    members.add(member(21, email_marketing=True, sms=True))
    log = Log()
    active = activation(tmp_path, sinks, members, log)
    active.opt_outs.record_inbound("+14155550021", "stop", 1_000)

    async def scenario() -> None:
        await active.start()
        try:
            stage(active, [decision(20, "email"), decision(20, "sms"), decision(21, "sms")], members)
            await wait_for(lambda: len(log.named("Message Failed")) == 2 and len(log.named("Message Sent")) == 4,
                           what="two suppressed, one SMS and three webhooks")
        finally:
            await active.close()

    asyncio.run(scenario())
    assert len(sinks.smtp.messages) == 0
    assert [item.fields["To"] for item in sinks.twilio.accepted_items()] == ["+14155550020"]
    reasons = sorted(call["properties"]["reason"] for call in log.named("Message Failed"))
    assert reasons == ["no email_marketing consent", "the recipient texted STOP"]
    assert all(call["properties"]["suppressed"] for call in log.named("Message Failed"))


def test_a_consent_withdrawn_after_the_decision_holds_at_send_time(tmp_path: Path, sinks: DemoSinks) -> None:
    members = Members()
    members.add(member(22, email_marketing=True))
    log = Log()
    active = activation(tmp_path, sinks, members, log)
    messages = [m for m in active.messages_for(decision(22, "email"), members.profiles["m-22"])
                if m.channel == "email"]
    members.add(msgspec.structs.replace(members.profiles["m-22"], consent=consent(email_marketing=False)))

    async def scenario() -> None:
        await active.start()
        try:
            await active.dispatcher.enqueue(messages)
            await wait_for(lambda: len(log.named("Message Failed")) == 1, what="the suppression")
        finally:
            await active.close()

    asyncio.run(scenario())
    assert len(sinks.smtp.messages) == 0


# -- audiences and metrics -------------------------------------------------------------------------


def test_audience_export_writes_hashed_identifiers_of_members_who_allow_sharing_only(
    tmp_path: Path, sinks: DemoSinks
) -> None:
    members = Members()
    members.add(member(30, sale_sharing=True))
    members.add(member(31, sale_sharing=False))
    members.add(member(32))  # never answered: not shared under the strict policy
    active = activation(tmp_path, sinks, members, Log())
    try:
        DecisionStore(active.outbox).write(Batch(transitions=[
            Transition("high-value", f"m-{n}", 1, "entered", 1_000) for n in (30, 31, 32)]), 2_000)
        written = active.export_audiences(at_ms=1_767_225_600_000)
        assert written["media/high-value"] == 2  # member 30's email and phone
        folder = tmp_path / "data" / "audiences" / "high-value"
        with (folder / "latest.csv").open() as file:
            rows = list(csv.reader(file))
        assert rows[0] == ["Email", "Phone"]
        assert ["", hashlib.sha256(b"+14155550030").hexdigest()] in rows
        assert [hashlib.sha256(b"ann.30@example.com").hexdigest(), ""] in rows
        assert len(rows) == 3
        assert written["media/new-members"] == 0  # every configured segment is exported, empty ones too
    finally:
        asyncio.run(active.close())


def test_metrics_expose_per_destination_counters_gauges_and_send_latency(tmp_path: Path, sinks: DemoSinks) -> None:
    from prometheus_client import generate_latest

    members = Members()
    members.add(member(40, email_marketing=True))
    metrics = Metrics()
    path = program(tmp_path, sinks.smtp, sinks.twilio, sinks.fcm, sinks.webhook)
    log = Log()
    active = Activation(Settings(data_dir=tmp_path / "data"), path, log, metrics, members=members, environ=ENV)

    async def scenario() -> str:
        await active.start()
        try:
            stage(active, [decision(40, "email")], members)
            await wait_for(lambda: len(log.named("Message Sent")) == 2, what="the sends")
            return generate_latest(metrics.registry).decode()
        finally:
            await active.close()

    text = asyncio.run(scenario())
    assert 'lcdp_destination_sent_total{destination="email"} 1.0' in text
    assert 'lcdp_destination_delivered_total{destination="hook"} 1.0' in text
    assert 'lcdp_destination_failed_total{destination="sms"} 0.0' in text
    assert 'lcdp_destination_backlog{destination="push"}' in text
    assert 'lcdp_destination_queue_depth{destination="email"}' in text
    assert 'lcdp_destination_breaker_open{destination="email"} 0.0' in text
    assert 'lcdp_destination_send_seconds_count{destination="email"} 1.0' in text
    assert 'lcdp_activation_messages_total{destination="email"} 1.0' in text
