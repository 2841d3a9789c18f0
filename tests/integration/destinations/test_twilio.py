"""SMS against a local server that checks Twilio's documented wire format; opt-outs, quiet hours, signatures."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from destination_support import (
    ACCOUNT_SID,
    API_KEY_SID,
    AUTH_TOKEN,
    MEMBER_PHONE,
    NOW_MS,
    SHOP_PHONE,
    StatusLog,
    TwilioDouble,
    eventually,
    fast_policy,
    message,
    run,
)

from loyalty_cdp.adapters.destinations.base import Deferred, PermanentFailure, Suppressed
from loyalty_cdp.adapters.destinations.twilio import (
    QuietHours,
    SmsOptOutStore,
    TwilioDestination,
    callback_status,
    inbound_keyword,
    quiet_hours_end,
    recipient_zone,
    request_signature,
    verify_request,
)
from loyalty_cdp.adapters.outbox import Outbox
from loyalty_cdp.core.messages import MESSAGE_BOUNCED, MESSAGE_DELIVERED, MESSAGE_FAILED, MESSAGE_SENT
from loyalty_cdp.services.dispatcher import Dispatcher


def sms_consent(user_id: str) -> dict[str, bool]:
    return {"sms": True}


def sms(message_id: str, recipient: str = MEMBER_PHONE, **fields) -> object:
    return message(message_id, "sms", "sms", recipient, body="Ada, Gold is yours: 2x points on coffee ☕ until 30 June",
                   **fields)


@pytest.mark.parametrize("variant", ["account token and From", "API key, messaging service and status callback"])
def test_sms_wire_format_is_twilios(tmp_path: Path, make_sink, variant: str) -> None:
    sink = make_sink()
    with_key = variant.startswith("API key")
    twilio = TwilioDouble(API_KEY_SID if with_key else ACCOUNT_SID, AUTH_TOKEN)
    sink.respond = twilio
    status = StatusLog()

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        sender = {"messaging_service_sid": "MG0123456789abcdef0123456789abcdef",
                  "status_callback_url": "https://cdp.example.test/v1/sms/status", "api_key_sid": API_KEY_SID}
        destination = TwilioDestination(
            "sms", account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, opt_outs=SmsOptOutStore(tmp_path / "optouts.db"),
            base_url=sink.url, **(sender if with_key else {"from_number": SHOP_PHONE}),
        )
        dispatcher = Dispatcher(outbox, [(destination, fast_policy())], on_status=status, consent_of=sms_consent)
        await dispatcher.start()
        await dispatcher.enqueue([sms("m-1")])
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == 1, what="the SMS")
        await dispatcher.close()
        outbox.close()

    run(scenario())
    assert twilio.problems == []
    [form] = twilio.forms
    assert form["To"] == MEMBER_PHONE and form["Body"] == "Ada, Gold is yours: 2x points on coffee ☕ until 30 June"
    if with_key:
        assert form["MessagingServiceSid"].startswith("MG") and "From" not in form
        callback = urlsplit(form["StatusCallback"])
        assert callback.path == "/v1/sms/status" and parse_qs(callback.query) == {"message_id": ["m-1"]}
    else:
        assert form["From"] == SHOP_PHONE and "StatusCallback" not in form
    [sent] = status.named(MESSAGE_SENT)
    assert json.loads(sent.body)["properties"]["provider_message_id"] == f"SM{1:032x}"
    assert sink.requests[0].headers["idempotency-key"] == "m-1"


def test_twilio_errors_opt_out_bounce_or_retry(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    twilio = TwilioDouble(ACCOUNT_SID, AUTH_TOKEN)
    sink.respond = twilio
    store_path = tmp_path / "optouts.db"

    async def scenario() -> None:
        destination = TwilioDestination("sms", account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=SHOP_PHONE,
                                        opt_outs=SmsOptOutStore(store_path), base_url=sink.url)
        try:
            twilio.answer_error = (400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient"})
            with pytest.raises(Suppressed, match="21610"):
                await destination.send(sms("m-1"), NOW_MS)
            requests = len(sink.requests)
            with pytest.raises(Suppressed, match="texted STOP"):  # now known here: not even asked
                await destination.send(sms("m-2"), NOW_MS)
            assert len(sink.requests) == requests
            twilio.answer_error = (400, {"code": 21614, "message": "'To' number is not a valid mobile number"})
            with pytest.raises(PermanentFailure, match="21614") as bounced:
                await destination.send(sms("m-3", "+14155550199"), NOW_MS)
            assert bounced.value.bounced
            with pytest.raises(PermanentFailure, match=r"E\.164") as invalid:
                await destination.send(sms("m-4", "4155550123"), NOW_MS)
            assert invalid.value.bounced
        finally:
            await destination.aclose()

    run(scenario())
    assert twilio.problems == []
    other = SmsOptOutStore(store_path)
    assert other.is_opted_out(MEMBER_PHONE) and not other.is_opted_out("+14155550199")
    other.close()


def test_quiet_hours_defer_without_sending(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    sink.respond = TwilioDouble(ACCOUNT_SID, AUTH_TOKEN)
    late_in_san_francisco = int(datetime(2026, 3, 3, 22, 30, tzinfo=ZoneInfo("America/Los_Angeles")).timestamp() * 1000)
    next_morning = int(datetime(2026, 3, 4, 8, 0, tzinfo=ZoneInfo("America/Los_Angeles")).timestamp() * 1000)

    async def scenario() -> None:
        destination = TwilioDestination(
            "sms", account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=SHOP_PHONE, base_url=sink.url,
            opt_outs=SmsOptOutStore(tmp_path / "optouts.db"), quiet_hours=QuietHours(start="21:00", end="08:00"),
        )
        try:
            with pytest.raises(Deferred) as deferred:
                await destination.send(sms("m-1"), late_in_san_francisco)  # +1 415: America/Los_Angeles
            assert deferred.value.until_ms == next_morning
            # The same instant is 07:30 in Paris: still quiet there until 08:00.
            with pytest.raises(Deferred):
                await destination.send(sms("m-2", timezone="Europe/Paris"), late_in_san_francisco)
            await destination.send(sms("m-3", timezone="Asia/Tokyo"), late_in_san_francisco)  # 15:30 in Tokyo
        finally:
            await destination.aclose()

    run(scenario())
    assert len(sink.requests) == 1


def test_a_deferred_sms_is_not_an_attempt(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    sink.respond = TwilioDouble(ACCOUNT_SID, AUTH_TOKEN)
    status = StatusLog()

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        destination = TwilioDestination(
            "sms", account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=SHOP_PHONE, base_url=sink.url,
            opt_outs=SmsOptOutStore(tmp_path / "optouts.db"),
            quiet_hours=QuietHours(start="00:00", end="23:59", default_timezone="UTC"),
        )
        dispatcher = Dispatcher(outbox, [(destination, fast_policy())], on_status=status, consent_of=sms_consent,
                                clock=lambda: datetime(2026, 3, 3, 12, 0, tzinfo=UTC).timestamp())
        await dispatcher.start()
        await dispatcher.enqueue([sms("m-1", timezone="UTC")])
        await eventually(lambda: dispatcher.stats["sms"].deferred == 1, what="the deferral")
        await dispatcher.close()
        [pending] = outbox.claim("sms", 10**15, 1, 1000)
        assert pending.attempts == 0
        assert outbox.next_due_at("sms") is not None
        outbox.close()

    run(scenario())
    assert sink.requests == [] and status.events == []


def test_quiet_hours_arithmetic() -> None:
    la = ZoneInfo("America/Los_Angeles")

    def at(hour: int, minute: int = 0, day: int = 3) -> int:
        return int(datetime(2026, 3, day, hour, minute, tzinfo=la).timestamp() * 1000)

    night = (time(21, 0), time(8, 0))
    assert quiet_hours_end(at(22), la, *night) == at(8, day=4)
    assert quiet_hours_end(at(3), la, *night) == at(8)
    assert quiet_hours_end(at(8), la, *night) is None and quiet_hours_end(at(20, 59), la, *night) is None
    lunch = (time(12, 0), time(14, 0))
    assert quiet_hours_end(at(13), la, *lunch) == at(14) and quiet_hours_end(at(14), la, *lunch) is None
    # Across the spring-forward night (8 March 2026 in the US), the end is still 08:00 local time.
    assert quiet_hours_end(at(23, day=7), la, *night) == at(8, day=8)
    assert recipient_zone(sms("m", "+14155550123"), "UTC").key == "America/Los_Angeles"
    assert recipient_zone(sms("m", "+14155550123", timezone="Europe/Paris"), "UTC").key == "Europe/Paris"
    assert recipient_zone(sms("m", "+14155550123", timezone="Not/AZone"), "UTC").key == "America/Los_Angeles"


@pytest.mark.parametrize(
    ("body", "keyword"),
    [("STOP", "stop"), (" stop ", "stop"), ("Unsubscribe.", "stop"), ("STOPALL", "stop"), ("optout", "stop"),
     ("start", "start"), ("YES", "start"), ("unstop", "start"), ("HELP", "help"), ("info", "help"),
     ("please stop texting me", None), ("stopp", None), ("", None)],
)
def test_inbound_keywords_are_twilios(body: str, keyword: str | None) -> None:
    assert inbound_keyword(body) == keyword


def test_inbound_stop_and_start_update_the_store(tmp_path: Path) -> None:
    store = SmsOptOutStore(tmp_path / "optouts.db")
    assert store.record_inbound(MEMBER_PHONE, "Stop", NOW_MS) == "stop" and store.is_opted_out(MEMBER_PHONE)
    assert store.record_inbound(MEMBER_PHONE, "hello", NOW_MS) is None and store.is_opted_out(MEMBER_PHONE)
    assert store.record_inbound(MEMBER_PHONE, "START", NOW_MS) == "start" and not store.is_opted_out(MEMBER_PHONE)
    store.close()


def test_twilio_request_signatures_match_twilios_published_example() -> None:
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675310", "Digits": "1234", "From": "+14158675310",
              "To": "+18005551212"}
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert request_signature("12345", url, params) == "GvWf1cFY/Q7PnoempGyD5oXAezc="
    assert verify_request("12345", url, params, "GvWf1cFY/Q7PnoempGyD5oXAezc=")
    assert not verify_request("12345", url, {**params, "Digits": "1235"}, "GvWf1cFY/Q7PnoempGyD5oXAezc=")


def test_status_callbacks_map_to_status_events() -> None:
    assert callback_status({"MessageStatus": "delivered"}) == MESSAGE_DELIVERED
    assert callback_status({"MessageStatus": "undelivered", "ErrorCode": "30005"}) == MESSAGE_BOUNCED
    assert callback_status({"MessageStatus": "undelivered", "ErrorCode": "30008"}) == MESSAGE_FAILED
    assert callback_status({"MessageStatus": "failed"}) == MESSAGE_FAILED
    assert callback_status({"MessageStatus": "sent"}) is None
