"""``loyalty-cdp destinations list|test|dead-letters|replay``, run in process against real local servers."""

from __future__ import annotations

import json
import time
from pathlib import Path

from destination_support import NOW_MS, message
from typer.testing import CliRunner

from loyalty_cdp.adapters.destinations.webhook import verify_signature
from loyalty_cdp.adapters.outbox import OUTBOX_FILE, Outbox
from loyalty_cdp.cli.destinations import app
from loyalty_cdp.errors import InvalidInput

HEAD = "program: p\nname: P\nversion: 1\neffective_from: 2025-01-01\ncurrency: USD\npoint_value: 0.01\n"
ENV = {"HOOK_SECRET": "whsec_cli"}


def program(tmp_path: Path, hook_url: str, smtp_port: int = 25) -> Path:
    path = tmp_path / "program.yaml"
    path.write_text(HEAD + f"""destinations:
  - name: crm
    type: webhook
    consent: none
    delivery: {{timeout_s: 2}}
    settings: {{url: "{hook_url}", secret_env: HOOK_SECRET, allow_networks: [127.0.0.1/32]}}
  - name: email
    type: smtp
    settings: {{from_address: rewards@shop.example, host: 127.0.0.1, port: {smtp_port}, security: none,
                unsubscribe_mailto: u@shop.example}}
  - name: sms
    type: twilio
    settings: {{account_sid: AC1, auth_token_env: HOOK_SECRET, from_number: "+14155550100"}}
  - name: ads
    type: audience
    settings: {{directory: "{tmp_path / 'audiences'}"}}
""")
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


def test_list_and_test_a_webhook(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    config = str(program(tmp_path, f"{sink.url}/hook"))
    listed = invoke("list", "--config", config)
    assert listed.exit_code == 0
    assert [line.split()[:3] for line in listed.stdout.splitlines()] == [
        ["crm", "webhook", "webhook"], ["email", "smtp", "email"], ["sms", "twilio", "sms"],
        ["ads", "audience", "audience"],
    ]
    result = invoke("test", "crm", "--config", config, "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("crm: sent test_")
    [request] = sink.requests
    verify_signature("whsec_cli", request.headers["loyaltycdp-signature"], request.body, time.time())
    assert json.loads(request.body)["data"] == {"test": "true"}


def test_a_failing_destination_exits_1_with_the_reason(tmp_path: Path, make_sink) -> None:
    sink = make_sink()
    sink.respond = lambda request: (503, {"Retry-After": "30"}, b"{}")
    result = invoke("test", "crm", "--config", str(program(tmp_path, sink.url)), "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.strip() == "crm: not sent (TransientFailure): HTTP 503"


def test_email_needs_a_recipient_and_then_arrives(tmp_path: Path, smtp_server) -> None:
    controller, recorder = smtp_server
    config = str(program(tmp_path, "https://crm.example/hook", controller.port))
    missing = invoke("test", "email", "--config", config, "--data-dir", str(tmp_path))
    assert isinstance(missing.exception, InvalidInput) and missing.exception.field == "--to"
    sent = invoke("test", "email", "--to", "ops@shop.example", "--config", config, "--data-dir", str(tmp_path))
    assert sent.exit_code == 0, sent.output
    assert "provider id <test_" in sent.stdout
    assert [e.rcpt_tos for e in recorder.envelopes] == [["ops@shop.example"]]


def test_an_audience_test_writes_a_file(tmp_path: Path) -> None:
    result = invoke("test", "ads", "--config", str(program(tmp_path, "https://crm.example/hook")))
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "audiences" / "loyalty-cdp-test").glob("*-full.csv"))


def test_dead_letters_are_listed_and_replayed(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / OUTBOX_FILE)
    outbox.enqueue([message("m-1", "crm", "webhook", ""), message("m-2", "crm", "webhook", "")], NOW_MS)
    outbox.claim("crm", NOW_MS, 2, 1000)
    outbox.dead_letter("m-1", "gave up after 8 attempts: HTTP 500", 8, NOW_MS)
    listed = invoke("dead-letters", "--data-dir", str(tmp_path))
    assert listed.exit_code == 0
    assert listed.stdout.split() == ["m-1", "crm", "2026-01-01T00:00:00Z", "attempts=8", "gave", "up", "after", "8",
                                     "attempts:", "HTTP", "500"]
    replayed = invoke("replay", "crm", "--message-id", "m-1", "--data-dir", str(tmp_path))
    assert replayed.stdout.strip() == "replayed 1 message(s)"
    assert outbox.dead_letters() == [] and outbox.pending("crm") == 2
    outbox.close()


def test_an_unknown_destination_is_named(tmp_path: Path) -> None:
    result = invoke("test", "unknown", "--config", str(program(tmp_path, "https://crm.example/hook")))
    assert "no destination named 'unknown'" in str(result.exception)
