"""The erasure's activation pieces on real files and a real HTTP receiver: decision store and outbox rows,
SMS STOP entries, audience files, freed SQLite pages, and the signed ``member.erased`` event."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loyalty_cdp.adapters.decisionstore import Batch, Transition
from loyalty_cdp.adapters.destinations.audience import (
    AudienceDestination,
    AudienceMember,
    DirectoryTarget,
    sha256_hex,
)
from loyalty_cdp.adapters.destinations.base import TransientFailure
from loyalty_cdp.adapters.destinations.webhook import MEMBER_ERASED, WebhookDestination
from loyalty_cdp.api.metrics import Metrics
from loyalty_cdp.core.decisioning import Chosen, Decision
from loyalty_cdp.core.messages import OutboundMessage, message_id_for, status_call
from loyalty_cdp.demo_sinks import WebhookReceiver
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.services.activation import Activation
from loyalty_cdp.services.privacy import scrub_sqlite
from loyalty_cdp.settings import Settings
from loyalty_cdp.testing import free_port

SECRET = "integration-hook-secret"


def program_with(path: Path, hook_url: str) -> Path:
    base = retail_program_path().read_text().split("\n# --- Destinations")[0]
    path.write_text(base + f"""
destinations:
  - name: sms
    type: twilio
    settings: {{account_sid: AC00000000000000000000000000000000, auth_token_env: IT_TWILIO,
               from_number: "+14155550100", base_url: "http://127.0.0.1:9"}}
  - name: crm
    type: webhook
    settings: {{url: "{hook_url}", secret_env: IT_HOOK, allow_networks: ["127.0.0.0/8"]}}
  - name: retail-media
    type: audience
    settings: {{directory: audiences}}
""")
    return path


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver(secret=SECRET)
    try:
        yield hook
    finally:
        hook.stop()


@pytest.fixture()
def activation(tmp_path: Path, receiver: WebhookReceiver) -> Iterator[Activation]:
    program = program_with(tmp_path / "program.yaml", f"{receiver.url}/hooks")
    made = Activation(Settings(data_dir=tmp_path / "data"), program, lambda calls: None, Metrics(),
                      environ={"IT_TWILIO": "token", "IT_HOOK": SECRET})
    try:
        yield made
    finally:
        asyncio.run(made.close())


def decide(activation: Activation, member: str, phone: str, sent: bool) -> tuple[str, str]:
    """A stored send decision for ``member`` with its SMS message (sent, or still queued); (decision, message)."""
    decision_id = f"dec-{member}"
    chosen = Chosen(offer_id="tier-welcome", name="Welcome", channel="sms", score=1.0, send_at=0,
                    content={"body": f"Welcome, {member}"}, reason="tier upgrade")
    decision = Decision(decision_id=decision_id, member_id=member, at=1_000, action="send", reason="trigger",
                        automated=True, user_id=member, trigger_id="tier-upgrade-welcome", chosen=[chosen])
    message = OutboundMessage(message_id=message_id_for(decision_id, "sms"), decision_id=decision_id, user_id=member,
                              destination="sms", channel="sms", recipient=phone, body=f"Welcome, {member}",
                              created_at=int(time.time() * 1000))
    activation.decisions.write(Batch(decisions=[decision], messages=[message], transitions=[
        Transition("new-members", member, 1, "entered", 900)]), 2_000)
    activation.decisions.record_outcome(decision_id, "shown", 3_000, "app")
    if sent:
        activation.outbox.finish(message.message_id, "sent", 4_000, provider_id="SM1")
        activation.remember_sent([status_call(message, "Message Sent", 4_000, attempts=1, provider_id="SM1")])
    return decision_id, message.message_id


def count(path: Path, sql: str, *params: object) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute(sql, params).fetchone()[0])
    finally:
        db.close()


def test_erase_person_deletes_one_members_rows_and_keeps_the_others(activation: Activation) -> None:
    ann_decision, ann_message = decide(activation, "ann-7", "+14155550101", sent=True)
    bob_decision, bob_message = decide(activation, "bob-8", "+14155550102", sent=False)
    activation.opt_outs.opt_out("+14155550101", 5_000)
    activation.opt_outs.opt_out("+14155550102", 5_000)
    assert [m["message_id"] for m in activation.person_messages({ann_decision})] == [ann_message]
    held = activation.person_messages({ann_decision})[0]
    assert held["status"] == "sent" and held["sent_at"] and held["finished_at"] == 4_000 and held["channel"] == "sms"
    queued = activation.person_messages({bob_decision})[0]
    assert queued["status"] == "queued" and queued["recipient"] == "+14155550102"
    assert activation.person_segments({"ann-7"})["current"][0]["segment_id"] == "new-members"

    counts = activation.erase_person({"ann-7"}, {"ann-7"}, {"+14155550101"})
    assert counts["decisions"] == 1 and counts["sent_rows"] == 1 and counts["sms_opt_outs"] == 1
    assert counts["decision_store_rows"] >= 4  # decision, outcome, membership, transition, finished message
    outbox = activation.outbox.path
    assert activation.person_decisions({"ann-7"}) == [] and activation.person_messages({ann_decision}) == []
    assert activation.person_segments({"ann-7"}) == {"current": [], "history": []}
    assert count(outbox, "SELECT count(*) FROM outbox_finished WHERE message_id = ?", ann_message) == 0
    assert count(outbox, "SELECT count(*) FROM activation_sent") == 0
    assert not activation.opt_outs.is_opted_out("+14155550101")
    # Bob is untouched.
    assert [d.decision_id for d in activation.person_decisions({"bob-8"})] == [bob_decision]
    assert count(outbox, "SELECT count(*) FROM outbox_messages WHERE message_id = ?", bob_message) == 1
    assert activation.opt_outs.is_opted_out("+14155550102")


def test_a_decision_filed_under_another_member_id_is_found_by_user_id(activation: Activation) -> None:
    decide(activation, "anon:visitor-1", "+14155550103", sent=False)  # user_id "anon:visitor-1" in decide()
    assert activation.person_member_ids({"anon:visitor-1"}) == {"anon:visitor-1"}
    assert activation.erase_person(set(), {"anon:visitor-1"}, set())["decisions"] == 1


def test_scrub_vacuums_only_when_deleted_bytes_are_left_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(f"k{i}", f"person-{i:04d}@example.org") for i in range(500)])
    db.execute("PRAGMA secure_delete = OFF")  # some builds (Debian's) default to ON; the outbox's connections set none
    db.execute("DELETE FROM t WHERE k = 'k7'")  # without secure_delete: the bytes stay in the page
    db.close()
    assert scrub_sqlite(path, [b"nobody@example.org"]) is False
    assert b"person-0007@example.org" in path.read_bytes()  # a checkpoint alone does not remove them
    assert scrub_sqlite(path, [b"person-0007@example.org"]) is True
    data = path.read_bytes()
    assert b"person-0007@example.org" not in data and b"person-0008@example.org" in data
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def test_audience_erase_removes_the_person_from_every_file_and_the_next_delta(tmp_path: Path) -> None:
    audience = AudienceDestination("retail-media", DirectoryTarget(tmp_path / "audiences"))
    ann = AudienceMember("ann", ("ann@example.org",), ("+14155550101",))
    bob = AudienceMember("bob", ("bob@example.org",), ())
    audience.export("new-members", [ann, bob], set(), 1_000)
    audience.export("new-members", [bob], set(), 2_000)  # ann left: her hashes are in the remove file
    audience.export("new-members", [ann, bob], set(), 3_000)
    hashes = AudienceDestination.person_hashes(["Ann@Example.org"], ["(415) 555-0101"], "US")
    assert sha256_hex("ann@example.org") in hashes and sha256_hex("14155550101") in hashes  # meta's form too
    assert audience.holds("new-members", hashes)[0] == 2

    removed = audience.erase(["new-members", "no-such-segment"], hashes, 4_000)
    assert removed == 2 * 6  # full and add of the first and the last export, remove of the second, latest
    for path in (tmp_path / "audiences").rglob("*.csv"):
        text = path.read_text()
        assert not any(h in text for h in hashes), path.name
    assert sha256_hex("bob@example.org") in (tmp_path / "audiences/new-members/latest.csv").read_text()
    manifest = (tmp_path / "audiences/new-members/manifest.json").read_text()
    assert '"replace":true' in manifest and '"rows":1' in manifest
    assert audience.holds("new-members", hashes)[0] == 0
    after = audience.export("new-members", [bob], set(), 5_000)
    assert after.removed_rows == 0 and after.rows == 1  # nothing names her in the next delta


def test_member_erased_is_signed_and_received_and_a_dead_receiver_is_reported(
    activation: Activation, receiver: WebhookReceiver,
) -> None:
    outcome = asyncio.run(activation.notify_erasure("pr_0123456789abcdef", {"ann-7", "ann-old"}))
    assert outcome == {"crm": "delivered"}
    event = receiver.accepted_items()[0].fields
    assert event["type"] == MEMBER_ERASED and event["user_ids"] == ["ann-7", "ann-old"]
    assert event["request_id"] == "pr_0123456789abcdef" and event["id"].startswith("erasure_")
    again = asyncio.run(activation.notify_erasure("pr_0123456789abcdef", {"ann-7", "ann-old"}))
    assert again == {"crm": "delivered"} and receiver.repeats == 1  # same id: the receiver drops the repeat
    assert asyncio.run(activation.notify_erasure("pr_0123456789abcdef", set())) == {}

    dead = WebhookDestination("dead", f"http://127.0.0.1:{free_port()}/hooks", SECRET,
                              allow_networks=["127.0.0.0/8"], timeout_s=1.0)

    async def send() -> None:
        try:
            await dead.send_erasure("erasure_x", "pr_x", ["ann-7"], int(time.time() * 1000))
        finally:
            await dead.aclose()

    with pytest.raises(TransientFailure):
        asyncio.run(send())
