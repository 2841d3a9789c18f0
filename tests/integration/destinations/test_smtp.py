"""Email against a real SMTP server (aiosmtpd): personalised multipart mail, headers, tracking links, TLS and AUTH."""

from __future__ import annotations

import email
import email.policy
import json
import re
from email.message import EmailMessage
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from destination_support import NOW_MS, StatusLog, eventually, fast_policy, message, run

from loyalty_cdp.adapters.destinations.base import PermanentFailure, TransientFailure
from loyalty_cdp.adapters.destinations.config import parse_destinations
from loyalty_cdp.adapters.destinations.email_tracking import TrackingLinks, tracking_call
from loyalty_cdp.adapters.destinations.factory import open_destination
from loyalty_cdp.adapters.destinations.smtp import SmtpDestination, build_email
from loyalty_cdp.adapters.outbox import Outbox
from loyalty_cdp.core.events import normalise
from loyalty_cdp.core.messages import MESSAGE_BOUNCED, MESSAGE_SENT, OutboundMessage
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.services.dispatcher import Dispatcher

TRACKING_SECRET = "track-s3cret"
TRACKING_BASE = "https://cdp.example.test"
OFFER_URL = "https://shop.example/offers/gold?utm_source=email&amp;utm_medium=loyalty"


def gold_email(message_id: str = "m-1", recipient: str = "ada@example.org", **fields: Any) -> OutboundMessage:
    """A message rendered for Ada, as decisioning would hand it over."""
    content: dict[str, Any] = {
        "subject": "Ada, you reached Gold",
        "text": "Hi Ada,\nyou reached Gold: 2x points on coffee until June 30.",
        "html": (
            "<html><head><style>p {color: #333}</style></head><body><p>Hi Ada,</p>"
            f'<p>you reached <b>Gold</b>. <a href="{OFFER_URL}">See your Gold offers</a></p>'
            '<p><a href="mailto:help@shop.example">Questions?</a></p></body></html>'
        ),
    }
    return message(message_id, "email", "email", recipient, user_id="member-ada", **{**content, **fields})


def email_consent(user_id: str) -> dict[str, bool]:
    return {"email_marketing": True}


def received(envelope) -> EmailMessage:
    return email.message_from_bytes(envelope.original_content, policy=email.policy.default)  # type: ignore[return-value]


def test_a_personalised_email_arrives_once_with_unsubscribe_headers_and_signed_tracking(
    tmp_path: Path, smtp_server
) -> None:
    controller, recorder = smtp_server
    environ = {
        "LOYALTY_CDP_SMTP_HOST": "127.0.0.1", "LOYALTY_CDP_SMTP_PORT": str(controller.port),
        "TRACKING_SECRET": TRACKING_SECRET,
    }
    [config] = parse_destinations(
        [{"name": "email", "type": "smtp", "delivery": {"timeout_s": 5},
          "settings": {"from_address": "rewards@shop.example", "from_name": "Northwind Rewards", "security": "none",
                       "unsubscribe_mailto": "unsubscribe@shop.example", "tracking_base_url": TRACKING_BASE,
                       "tracking_secret_env": "TRACKING_SECRET"}}],
        environ,
    )
    status = StatusLog()

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        destination = open_destination(config, tmp_path)
        dispatcher = Dispatcher(outbox, [(destination, config.delivery)], on_status=status, consent_of=email_consent)
        await dispatcher.start()
        await dispatcher.enqueue([gold_email()])
        await dispatcher.enqueue([gold_email()])  # a repeat of the same message id
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == 1, what="the email")
        await dispatcher.close()
        outbox.close()

    run(scenario())
    assert len(recorder.envelopes) == 1
    envelope = recorder.envelopes[0]
    assert envelope.mail_from == "rewards@shop.example" and envelope.rcpt_tos == ["ada@example.org"]
    mail = received(envelope)
    assert mail["From"] == "Northwind Rewards <rewards@shop.example>"
    assert mail["To"] == "ada@example.org" and mail["Subject"] == "Ada, you reached Gold"
    assert mail["Message-ID"] == "<m-1@shop.example>"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "Hi Ada" in text and "2x points on coffee" in text
    assert "Hi Ada" in html and "<b>Gold</b>" in html

    links = TrackingLinks(TRACKING_BASE, TRACKING_SECRET)
    unsubscribe = re.findall(r"<([^>]+)>", mail["List-Unsubscribe"])
    assert unsubscribe[1] == "mailto:unsubscribe@shop.example?subject=unsubscribe"
    assert unsubscribe[0].startswith(f"{TRACKING_BASE}/v1/email/unsubscribe?")
    assert links.verify("unsubscribe", dict(parse_qsl(urlsplit(unsubscribe[0]).query))).user_id == "member-ada"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # The offer link goes through the signed click redirect; mailto links are left alone.
    hrefs = [unescape(h) for h in re.findall(r'href="([^"]+)"', html)]
    assert hrefs[1] == "mailto:help@shop.example"
    click = links.verify("click", dict(parse_qsl(urlsplit(hrefs[0]).query)))
    assert click.url == unescape(OFFER_URL) and click.message_id == "m-1" and click.decision_id == "dec-m-1"
    [pixel] = [unescape(src) for src in re.findall(r'<img src="([^"]+)"', html)]
    assert pixel.startswith(f"{TRACKING_BASE}/v1/email/open?") and html.index("<img") < html.index("</body>")
    opened = links.verify("open", dict(parse_qsl(urlsplit(pixel).query)))
    assert (opened.message_id, opened.user_id) == ("m-1", "member-ada")
    forged = dict(parse_qsl(urlsplit(hrefs[0]).query), url="https://evil.example/")
    with pytest.raises(InvalidInput):
        links.verify("click", forged)

    # What the server's open endpoint appends is a valid Segment call of the Email spec.
    event = normalise(tracking_call(opened, NOW_MS, "open-1"), call_type="track", received_at=NOW_MS,
                      default_message_id="x")
    assert event.event == "Email Opened" and event.user_id == "member-ada"
    [sent] = status.named(MESSAGE_SENT)
    assert json.loads(sent.body)["properties"]["provider_message_id"] == "<m-1@shop.example>"


def test_starttls_and_auth(tls_files, starttls_smtp_server) -> None:
    controller, recorder = starttls_smtp_server
    certificate, _ = tls_files

    def destination(password: str) -> SmtpDestination:
        return SmtpDestination(
            "email", host="127.0.0.1", port=controller.port, sender="rewards@shop.example", security="starttls",
            username="mailer", password=password, ca_file=str(certificate), unsubscribe_mailto="u@shop.example",
        )

    async def scenario() -> None:
        good = destination("s3cret")
        try:
            await good.send(gold_email("m-1"), NOW_MS)
            await good.send(gold_email("m-2"), NOW_MS)  # reuses the authenticated connection
        finally:
            await good.aclose()
        bad = destination("wrong")
        try:
            with pytest.raises(TransientFailure, match="SMTP 535"):
                await bad.send(gold_email("m-3"), NOW_MS)
        finally:
            await bad.aclose()

    run(scenario())
    assert [received(e)["Message-ID"] for e in recorder.envelopes] == ["<m-1@shop.example>", "<m-2@shop.example>"]
    # One login for both messages; the wrong password fails (smtplib tries each mechanism the server offers).
    assert recorder.logins[0] == ("mailer", True)
    assert len(recorder.logins) >= 2 and all(login == ("mailer", False) for login in recorder.logins[1:])


def test_plain_smtp_is_refused_by_a_server_that_requires_starttls(starttls_smtp_server) -> None:
    controller, recorder = starttls_smtp_server
    plain = SmtpDestination("email", host="127.0.0.1", port=controller.port, sender="rewards@shop.example",
                            security="none", unsubscribe_mailto="u@shop.example")

    async def scenario() -> None:
        try:
            with pytest.raises(TransientFailure):
                await plain.send(gold_email(), NOW_MS)
        finally:
            await plain.aclose()

    run(scenario())
    assert recorder.envelopes == []


def test_a_refused_recipient_is_a_bounce_and_the_next_message_still_goes(tmp_path: Path, smtp_server) -> None:
    controller, recorder = smtp_server
    recorder.refuse.add("gone@example.org")
    status = StatusLog()

    async def scenario() -> None:
        outbox = Outbox(tmp_path / "outbox.db")
        destination = SmtpDestination("email", host="127.0.0.1", port=controller.port, sender="rewards@shop.example",
                                      security="none", unsubscribe_mailto="u@shop.example", concurrency=1)
        dispatcher = Dispatcher(outbox, [(destination, fast_policy(concurrency=1, timeout_s=2))], on_status=status,
                                consent_of=email_consent)
        await dispatcher.start()
        await dispatcher.enqueue([gold_email("m-1", "gone@example.org")])
        await eventually(lambda: len(status.named(MESSAGE_BOUNCED)) == 1, what="the bounce")
        await dispatcher.enqueue([gold_email("m-2")])
        await eventually(lambda: len(status.named(MESSAGE_SENT)) == 1, what="the next email")
        await dispatcher.close()
        [letter] = outbox.dead_letters()
        assert letter.message.message_id == "m-1" and letter.reason.startswith("recipient refused: 550")
        outbox.close()

    run(scenario())
    assert [e.rcpt_tos for e in recorder.envelopes] == [["ada@example.org"]]


def test_building_the_mime_message() -> None:
    only_html = gold_email(text=None)
    mail = build_email(only_html, sender="rewards@shop.example", unsubscribe_mailto="u@shop.example", now_ms=NOW_MS)
    text = mail.get_body(("plain",)).get_content()
    assert "Hi Ada," in text and "See your Gold offers" in text and "color" not in text  # no <style> content
    assert "List-Unsubscribe-Post" not in mail  # one-click needs an https URL, not only a mailto
    assert mail["Date"] == "Thu, 01 Jan 2026 00:00:00 +0000"
    with pytest.raises(PermanentFailure):
        build_email(gold_email(subject="Gold\r\nBcc: everyone@example.org"), sender="rewards@shop.example",
                    unsubscribe_mailto="u@shop.example", now_ms=NOW_MS)
    with pytest.raises(InvalidInput):
        SmtpDestination("email", host="127.0.0.1", port=25, sender="rewards@shop.example")  # no unsubscribe at all
