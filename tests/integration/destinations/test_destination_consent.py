"""Consent and opt-outs hold at send time: no email without email consent, no SMS after STOP.

Consent comes in as data (``consent_of(user_id) -> {purpose: allowed}``), as the privacy
store will provide it; the audience side (no row for a member opted out of sale/sharing) is
in ``test_audience.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from destination_support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    MEMBER_PHONE,
    SHOP_PHONE,
    StatusLog,
    TwilioDouble,
    eventually,
    fast_policy,
    message,
    run,
)

from loyalty_cdp.adapters.destinations.smtp import SmtpDestination
from loyalty_cdp.adapters.destinations.twilio import SmsOptOutStore, TwilioDestination
from loyalty_cdp.adapters.outbox import Outbox
from loyalty_cdp.core.messages import MESSAGE_FAILED, MESSAGE_SENT, consent_refusal
from loyalty_cdp.services.dispatcher import Dispatcher

CONSENT = {
    "member-ada": {"email_marketing": False, "sms": True},
    "member-bob": {"email_marketing": True, "sms": True},
}


def consent_of(user_id: str) -> dict[str, bool]:
    return CONSENT.get(user_id, {})


def email_for(user_id: str, address: str) -> object:
    return message(f"m-{user_id}", "email", "email", address, user_id=user_id, subject="Your Gold offers",
                   html=f"<p>Hi {user_id}</p>", text=f"Hi {user_id}")


def test_no_email_without_email_consent(tmp_path: Path, smtp_server) -> None:
    controller, recorder = smtp_server
    status = StatusLog()

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        destination = SmtpDestination("email", host="127.0.0.1", port=controller.port, sender="rewards@shop.example",
                                      security="none", unsubscribe_mailto="u@shop.example")
        dispatcher = Dispatcher(outbox, [(destination, fast_policy())], on_status=status, consent_of=consent_of)
        await dispatcher.start()
        await dispatcher.enqueue([
            email_for("member-ada", "ada@example.org"),  # refused email
            email_for("member-bob", "bob@example.org"),  # granted
            email_for("member-eve", "eve@example.org"),  # never asked: consent is opt-in
        ])
        await eventually(lambda: len(status.events) == 3, what="three outcomes")
        assert await dispatcher.replay() == 0  # suppressed messages are not dead letters: nothing to replay
        await dispatcher.close()
        assert outbox.finished("m-member-ada").outcome == "suppressed"
        assert outbox.finished("m-member-ada").reason == "no email_marketing consent"
        assert nothing_left(outbox)
        outbox.close()

    run(scenario())
    assert [e.rcpt_tos for e in recorder.envelopes] == [["bob@example.org"]]
    failed = {event.user_id: json.loads(event.body)["properties"] for event in status.named(MESSAGE_FAILED)}
    assert set(failed) == {"member-ada", "member-eve"}
    assert failed["member-ada"]["suppressed"] is True and failed["member-ada"]["reason"] == "no email_marketing consent"
    assert [event.user_id for event in status.named(MESSAGE_SENT)] == ["member-bob"]


def nothing_left(outbox: Outbox) -> bool:
    return outbox.pending() == 0 and outbox.dead_letters() == []


def test_consent_that_cannot_be_read_holds_the_message(tmp_path: Path, smtp_server) -> None:
    controller, recorder = smtp_server
    calls: list[str] = []

    def unavailable(user_id: str) -> dict[str, bool]:
        calls.append(user_id)
        raise ConnectionError("privacy store down")

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        destination = SmtpDestination("email", host="127.0.0.1", port=controller.port, sender="rewards@shop.example",
                                      security="none", unsubscribe_mailto="u@shop.example")
        dispatcher = Dispatcher(outbox, [(destination, fast_policy())], on_status=StatusLog(), consent_of=unavailable)
        await dispatcher.start()
        await dispatcher.enqueue([email_for("member-bob", "bob@example.org")])
        await eventually(lambda: bool(calls), what="the consent lookup")
        await dispatcher.close()
        assert outbox.pending() == 1  # kept, to be asked again later
        outbox.close()

    run(scenario())
    assert recorder.envelopes == []


def test_no_sms_after_stop(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    twilio = TwilioDouble(ACCOUNT_SID, AUTH_TOKEN)
    sink.respond = twilio
    status = StatusLog()
    inbound = SmsOptOutStore(tmp_path / "sms_optouts.db")  # what the inbound-SMS endpoint writes to

    def text(message_id: str) -> object:
        return message(message_id, "sms", "sms", MEMBER_PHONE, user_id="member-bob", body="Gold is yours")

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        destination = TwilioDestination("sms", account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=SHOP_PHONE,
                                        base_url=sink.url, opt_outs=SmsOptOutStore(tmp_path / "sms_optouts.db"))
        dispatcher = Dispatcher(outbox, [(destination, fast_policy())], on_status=status, consent_of=consent_of)
        await dispatcher.start()
        await dispatcher.enqueue([text("m-1")])
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == 1, what="the first SMS")
        assert inbound.record_inbound(MEMBER_PHONE, "STOP", 0) == "stop"  # the member replies STOP
        await dispatcher.enqueue([text("m-2")])
        await eventually(lambda: len(status.named(MESSAGE_FAILED)) == 1, what="the suppression")
        assert inbound.record_inbound(MEMBER_PHONE, "START", 0) == "start"
        await dispatcher.enqueue([text("m-3")])
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == 2, what="the SMS after START")
        await dispatcher.close()
        assert outbox.finished("m-2").outcome == "suppressed"
        outbox.close()

    run(scenario())
    inbound.close()
    assert [form["Body"] for form in twilio.forms] == ["Gold is yours", "Gold is yours"]
    assert len(sink.requests) == 2
    [suppressed] = status.named(MESSAGE_FAILED)
    assert json.loads(suppressed.body)["properties"]["reason"] == "the recipient texted STOP"


def test_consent_refusal_is_opt_in() -> None:
    assert consent_refusal(None, {}) is None
    assert consent_refusal("sms", {"sms": True}) is None
    for consent in ({}, {"sms": False}, {"sms": None}, {"sms": "yes"}, {"email_marketing": True}):
        assert consent_refusal("sms", consent) == "no sms consent"
