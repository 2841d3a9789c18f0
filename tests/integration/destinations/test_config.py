"""The ``destinations:`` section: five destination types at once, secrets from the environment, precise errors."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest
from destination_support import run

from loyalty_cdp.adapters.destinations.audience import AudienceDestination, audience_destination
from loyalty_cdp.adapters.destinations.config import find_destination, load_destinations, parse_destinations
from loyalty_cdp.adapters.destinations.factory import open_destination
from loyalty_cdp.adapters.destinations.fcm import FcmDestination
from loyalty_cdp.adapters.destinations.smtp import SmtpDestination
from loyalty_cdp.adapters.destinations.twilio import TwilioDestination
from loyalty_cdp.adapters.destinations.webhook import WebhookDestination
from loyalty_cdp.errors import ConfigError, NotFound

PROGRAM_HEAD = """\
program: test-program
name: Test Program
version: 1
effective_from: 2025-01-01
currency: USD
point_value: 0.01
"""

DESTINATIONS = """\
destinations:
  - name: email
    type: smtp
    settings:
      from_address: rewards@northwind.example
      from_name: Northwind Rewards
      security: none
      tracking_base_url: https://cdp.northwind.example
      tracking_secret_env: LCDP_TRACKING_SECRET
      unsubscribe_mailto: unsubscribe@northwind.example
  - name: sms
    type: twilio
    delivery: {rate_per_second: 10, max_attempts: 5}
    settings:
      account_sid: AC0123456789abcdef0123456789abcdef
      auth_token_env: TWILIO_AUTH_TOKEN
      from_number: "+14155550100"
      quiet_hours: {start: 21:00, end: "08:00", default_timezone: America/New_York}
  - name: push
    type: fcm
    settings: {project_id: northwind-rewards, access_token_env: FCM_ACCESS_TOKEN}
  - name: crm
    type: webhook
    consent: none
    settings: {url: "https://crm.northwind.example/hooks/loyalty", secret_env: CRM_WEBHOOK_SECRET}
  - name: retail-media
    type: audience
    settings: {directory: AUDIENCE_DIR, convention: meta}
"""

ENVIRON = {
    "LOYALTY_CDP_SMTP_HOST": "mail.internal", "LOYALTY_CDP_SMTP_PORT": "2525", "LCDP_TRACKING_SECRET": "t0ken",
    "TWILIO_AUTH_TOKEN": "tw-secret", "FCM_ACCESS_TOKEN": "ya29.x", "CRM_WEBHOOK_SECRET": "whsec_crm",
}


def program_file(tmp_path: Path, destinations: str = DESTINATIONS) -> Path:
    path = tmp_path / "program.yaml"
    path.write_text(PROGRAM_HEAD + destinations.replace("AUDIENCE_DIR", str(tmp_path / "audiences")))
    return path


def test_five_destinations_from_one_program_file(tmp_path: Path) -> None:
    configs = load_destinations(program_file(tmp_path), ENVIRON)
    assert [(c.name, c.type, c.channel, c.consent_purpose) for c in configs] == [
        ("email", "smtp", "email", "email_marketing"), ("sms", "twilio", "sms", "sms"), ("push", "fcm", "push", "push"),
        ("crm", "webhook", "webhook", None), ("retail-media", "audience", "audience", None),
    ]
    email = find_destination(configs, "email")
    assert (email.settings.host, email.settings.port) == ("mail.internal", 2525)  # from the environment
    assert email.secret("tracking_secret_env") == "t0ken"
    assert "t0ken" not in repr(email) and "Secret('***')" in repr(email)
    sms = find_destination(configs, "sms")
    assert sms.delivery.rate_per_second == 10 and sms.delivery.max_attempts == 5 and sms.delivery.concurrency == 4
    assert sms.settings.quiet_hours.period == (time(21, 0), time(8, 0))  # unquoted 21:00 is 1260 to YAML 1.1
    with pytest.raises(NotFound, match="known: email, sms, push, crm, retail-media"):
        find_destination(configs, "pager")

    async def open_all() -> list[object]:
        opened = [open_destination(c, tmp_path) for c in configs if c.type != "audience"]
        for destination in opened:
            await destination.aclose()
        return opened

    kinds = [type(d) for d in run(open_all())]
    assert kinds == [SmtpDestination, TwilioDestination, FcmDestination, WebhookDestination]
    assert isinstance(audience_destination(configs[-1]), AudienceDestination)


def test_the_configured_host_and_port_win_over_the_environment() -> None:
    [config] = parse_destinations(
        [{"name": "email", "type": "smtp",
          "settings": {"from_address": "a@b.example", "host": "smtp.example", "port": 587, "unsubscribe_mailto": "u@b"}}],
        ENVIRON,
    )
    assert (config.settings.host, config.settings.port) == ("smtp.example", 587)
    [default] = parse_destinations([{"name": "e", "type": "smtp", "settings": {"from_address": "a@b.example"}}], {})
    assert (default.settings.host, default.settings.port) == ("localhost", 587)  # STARTTLS submission port


@pytest.mark.parametrize(
    ("entry", "field", "reason"),
    [
        ({"name": "x", "type": "twilio", "settings": {"account_sid": "AC1", "auth_token": "literal", "from_number": "+1"}},
         "destinations[0].settings.auth_token", "auth_token_env"),
        ({"name": "x", "type": "webhook", "settings": {"url": "https://a.example", "secret_env": "UNSET_VARIABLE"}},
         "destinations[0].settings.secret_env", "UNSET_VARIABLE is not set"),
        ({"name": "x", "type": "pager", "settings": {}}, "destinations[0].type", "must be one of smtp"),
        ({"name": "x", "type": "fcm", "settings": {"project_id": "p", "colour": "red"}},
         "destinations[0].settings", "unknown field `colour`"),
        ({"name": "x", "type": "fcm", "settings": {"project_id": "p"}, "delivery": {"concurrency": 0}},
         "destinations[0].delivery.concurrency", "at least 1"),
        ({"name": "x", "type": "fcm", "settings": {"project_id": 7}}, "destinations[0].settings.project_id",
         "Expected `str`"),
        ({"name": "x", "type": "twilio", "settings": {"account_sid": "AC1", "auth_token_env": "TWILIO_AUTH_TOKEN",
                                                       "quiet_hours": {"start": "9pm"}}},
         "destinations[0].settings.quiet_hours", "start must be a time"),
        ({"name": "bad name", "type": "fcm"}, "destinations[0].name", "1-64 characters"),
        ({"name": "x", "type": "smtp", "settings": {"from_address": "a@b"}, "retries": 3}, "destinations[0].retries",
         "unknown key"),
        ({"name": "x", "type": "smtp", "settings": {"from_address": "a@b"}, "consent": ""}, "destinations[0].consent",
         "purpose"),
    ],
)
def test_configuration_errors_name_the_field(entry: dict, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_destinations([entry], ENVIRON)
    assert error.value.field.startswith(field) and reason in error.value.reason


def test_duplicate_names_and_file_lines(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="declared twice"):
        parse_destinations([{"name": "a", "type": "fcm", "settings": {"project_id": "p"}}] * 2, ENVIRON)
    broken = DESTINATIONS.replace("secret_env: CRM_WEBHOOK_SECRET", "secret: whsec_literal")
    with pytest.raises(ConfigError) as error:
        load_destinations(program_file(tmp_path, broken), ENVIRON)
    line = (PROGRAM_HEAD + broken).splitlines().index("  - name: crm") + 1
    assert str(error.value).startswith(f"{tmp_path / 'program.yaml'}:") and "destinations[3].settings.secret" in str(
        error.value
    )
    assert int(str(error.value).split(":")[1]) >= line
