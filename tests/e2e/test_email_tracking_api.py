"""Email tracking over HTTP: signed open pixel, click redirect and unsubscribe, against a real server.

Links are signed as the SMTP destination signs them (same secret, the server's own URL);
every verified hit lands in the event log as the Segment email-spec event, an unsubscribe as
a consent withdrawal the member's profile then shows; forged or altered links answer 400 and
record nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from loyalty_cdp.adapters.destinations.email_tracking import TrackingLinks
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.core.consent import STRICT_POLICY, allowed, consent_from_builtins
from loyalty_cdp.core.messages import OutboundMessage
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.testing import ServerProcess

SECRET = "e2e-tracking-secret"
ENV = {"E2E_TRACK": SECRET, "E2E_TWILIO": "tok", "E2E_FCM": "fcm", "E2E_HOOK": "hook",
       "LOYALTY_CDP_AUDIENCE_EVERY_S": "0"}


def write_program(path: Path, server_url: str) -> Path:
    """The example program with destinations whose tracking links point at this server."""
    base = retail_program_path().read_text().split("\n# --- Destinations")[0]
    path.write_text(base + f"""
destinations:
  - name: email
    type: smtp
    settings: {{from_address: rewards@northwind.example, host: 127.0.0.1, port: 9, security: none,
                tracking_base_url: "{server_url}", tracking_secret_env: E2E_TRACK}}
""")
    return path


@pytest.fixture()
def tracked(tmp_path: Path) -> Iterator[tuple[ServerProcess, TrackingLinks]]:
    program = tmp_path / "program.yaml"
    process = ServerProcess(tmp_path / "data", ENV, "--config", str(program))
    write_program(program, process.url)
    process.start()
    try:
        yield process, TrackingLinks(process.url, SECRET)
    finally:
        process.stop()


def email(message_id: str = "msg_0123456789abcdef", user_id: str = "member-1") -> OutboundMessage:
    return OutboundMessage(message_id=message_id, decision_id="dec-1", user_id=user_id, destination="email",
                           channel="email", recipient="ann@example.com", created_at=0)


def logged(data_dir: Path) -> list[dict[str, Any]]:
    log = SqliteEventLog(data_dir / "events.db")
    try:
        return [msgspec.json.decode(e.body) for e in log.read(0, 10_000)]
    finally:
        log.close()


def test_open_pixel_and_click_redirect_record_events_once(tracked: tuple[ServerProcess, TrackingLinks]) -> None:
    server, links = tracked
    message = email()
    with httpx.Client(follow_redirects=False, timeout=10) as client:
        for _ in range(2):  # an image proxy fetching twice: one event
            opened = client.get(links.url("open", message))
            assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
            assert opened.content.startswith(b"GIF89a") and "no-store" in opened.headers["cache-control"]
        target = "https://shop.example.com/gold?utm_source=email"
        clicked = client.get(links.url("click", message, target))
        assert clicked.status_code == 302 and clicked.headers["location"] == target
    server.stop()
    events = [e for e in logged(server.data_dir) if e.get("event") in ("Email Opened", "Email Link Clicked")]
    assert [e["event"] for e in events] == ["Email Opened", "Email Link Clicked"]
    assert all(e["userId"] == "member-1" and e["context"]["channel"] == "email" for e in events)
    assert events[0]["properties"] == {"email_id": message.message_id, "message_id": message.message_id,
                                       "decision_id": "dec-1"}
    assert events[1]["properties"]["link_url"] == target


def test_forged_or_altered_links_answer_400_naming_the_field_and_record_nothing(
    tracked: tuple[ServerProcess, TrackingLinks]
) -> None:
    server, links = tracked
    message = email()
    forged = TrackingLinks(server.url, "not-the-secret")
    with httpx.Client(follow_redirects=False, timeout=10) as client:
        answer = client.get(forged.url("open", message))
        assert answer.status_code == 400 and answer.json()["field"] == "s"
        assert "signature" in answer.json()["message"]
        redirected = links.url("click", message, "https://shop.example.com/")
        altered = client.get(redirected.replace("shop.example.com", "evil.example.net"))
        assert altered.status_code == 400 and altered.json()["field"] == "s"
        other_member = links.url("open", message).replace("u=member-1", "u=member-2")
        assert client.get(other_member).status_code == 400
        missing = client.get(f"{server.url}/v1/email/open", params={"m": "x", "u": "y"})
        assert missing.status_code == 400 and missing.json()["field"] in ("d", "s")
        assert client.post(forged.url("unsubscribe", message)).status_code == 400
    server.stop()
    assert not [e for e in logged(server.data_dir) if e.get("context", {}).get("channel") == "email"]


def test_unsubscribe_page_changes_nothing_and_one_click_post_withdraws_email_consent(
    tracked: tuple[ServerProcess, TrackingLinks]
) -> None:
    server, links = tracked
    read_key = server.create_key("read")
    write_key = server.create_key("ingest")
    message = email(user_id="member-7")
    with httpx.Client(follow_redirects=False, timeout=10) as client:
        granted = {"userId": "member-7", "traits": {"email": "ann@example.com"},
                   "context": {"consent": {"categoryPreferences": {"Email Marketing": True}}},
                   "timestamp": "2026-01-01T00:00:00Z"}
        assert client.post(f"{server.url}/v1/identify", json=granted, auth=(write_key, "")).status_code == 200
        url = links.url("unsubscribe", message)
        page = client.get(url)
        assert page.status_code == 200 and "<form method=\"post\"" in page.text
        for _ in range(2):  # a mail client retrying the RFC 8058 POST: one withdrawal
            done = client.post(url, content=b"List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert done.status_code == 200 and "unsubscribed" in done.text
        deadline = time.monotonic() + 10
        while True:
            member = client.get(f"{server.url}/v1/members/member-7", headers={"Authorization": f"Bearer {read_key}"})
            consent = consent_from_builtins(member.json()["consent"]) if member.status_code == 200 else None
            if consent is not None and not allowed(consent, "email_marketing", STRICT_POLICY):
                break
            assert time.monotonic() < deadline, "the withdrawal never reached the profile"
            time.sleep(0.05)
    server.stop()
    events = logged(server.data_dir)
    assert [e["event"] for e in events if e.get("event") == "Unsubscribed"] == ["Unsubscribed"]
    withdrawals = [e for e in events if e.get("event") == "Consent Updated"]
    assert len(withdrawals) == 1
    assert withdrawals[0]["properties"]["purpose"] == "email_marketing"
    assert withdrawals[0]["properties"]["granted"] is False and withdrawals[0]["userId"] == "member-7"
