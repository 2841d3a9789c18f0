"""The audit log: append-only, and any altered field, deleted, reordered or cut-off entry is detected."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loyalty_cdp.adapters.audit import AUDIT_DB, AuditLog, person_subject
from loyalty_cdp.cli.audit import app
from loyalty_cdp.errors import InvalidInput

ENTRIES = 5


@pytest.fixture()
def path(tmp_path: Path) -> Path:
    log = AuditLog(tmp_path / AUDIT_DB)
    log.append("key:k1", "key.created", "key:k2", {"scopes": ["privacy"]}, now_ms=1000)
    log.append("key:k2", "privacy.request.created", "pr_1", {"type": "erasure", "regime": "gdpr"}, now_ms=2000)
    log.append("key:k2", "privacy.request.completed", "pr_1", {"events_deleted": 12}, now_ms=3000)
    log.append("cli", "ledger.adjusted", person_subject(bytes(range(32))), {"points": -50, "reason": "goodwill"},
               now_ms=4000)
    log.append("key:k1", "config.changed", "program", {"from": "a1", "to": "b2"}, now_ms=5000)
    log.close()
    return tmp_path / AUDIT_DB


def tamper(path: Path, *statements: str) -> None:
    """What an attacker with the file can do: drop the guards, then change rows."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER audit_log_no_update")
    db.execute("DROP TRIGGER audit_log_no_delete")
    for statement in statements:
        db.execute(statement)
    db.close()


def verify(path: Path, anchor: tuple[int, str] | None = None):
    log = AuditLog(path)
    try:
        return log.verify(anchor)
    finally:
        log.close()


def test_entries_are_listed_and_the_chain_verifies(path: Path) -> None:
    log = AuditLog(path)
    entries = log.list()
    assert [e.sequence for e in entries] == [1, 2, 3, 4, 5]
    assert entries[1].details == {"regime": "gdpr", "type": "erasure"} and entries[3].subject.startswith("person:")
    assert [e.sequence for e in log.list(action="privacy.request.completed")] == [3]
    assert [e.sequence for e in log.list(after=3, limit=1)] == [4]
    assert [e.sequence for e in log.list(subject="pr_1")] == [2, 3]
    result = log.verify()
    assert result.ok and result.first_bad_sequence is None and result.entries == ENTRIES
    assert result.head_sequence == 5 and result.head_hash == entries[-1].hash
    assert log.verify((3, entries[2].hash)).ok
    log.close()


def test_the_triggers_refuse_updates_and_deletes(path: Path) -> None:
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit_log SET actor = 'x' WHERE sequence = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit_log WHERE sequence = 2")
    db.close()
    assert verify(path).ok


CHANGES = {
    "sequence": "sequence = sequence + 100",
    "at": "at = at + 1",
    "actor": "actor = 'key:intruder'",
    "action": "action = 'key.listed'",
    "subject": "subject = 'pr_2'",
    "details": "details = replace(details, '}', ',\"x\":1}')",
    "prev_hash": "prev_hash = randomblob(32)",
    "hash": "hash = randomblob(32)",
}


@pytest.mark.parametrize("field", sorted(CHANGES))
@pytest.mark.parametrize("sequence", range(1, ENTRIES + 1))
def test_changing_any_field_of_any_entry_is_detected(path: Path, field: str, sequence: int) -> None:
    tamper(path, f"UPDATE audit_log SET {CHANGES[field]} WHERE sequence = {sequence}")
    result = verify(path)
    assert not result.ok
    assert result.first_bad_sequence in (sequence, sequence + 1)  # the altered entry, or the one it no longer chains to


def test_a_rewritten_entry_with_a_recomputed_hash_breaks_the_next_link(path: Path) -> None:
    from loyalty_cdp.adapters.audit import entry_hash

    db = sqlite3.connect(path)
    prev_hash, at, actor, action, subject, details = db.execute(
        "SELECT prev_hash, at, actor, action, subject, details FROM audit_log WHERE sequence = 3").fetchone()
    db.close()
    forged = entry_hash(prev_hash, 3, at, actor, action, subject, details.replace("12", "0"))
    tamper(path, f"UPDATE audit_log SET details = replace(details, '12', '0'), hash = x'{forged.hex()}' WHERE sequence = 3")
    result = verify(path)
    assert (result.ok, result.first_bad_sequence) == (False, 4)


@pytest.mark.parametrize("sequence", range(1, ENTRIES))
def test_deleting_an_entry_is_detected(path: Path, sequence: int) -> None:
    tamper(path, f"DELETE FROM audit_log WHERE sequence = {sequence}")
    result = verify(path)
    assert (result.ok, result.first_bad_sequence) == (False, sequence)
    assert "missing" in result.reason


def test_entries_cut_off_the_end_are_detected_with_an_anchor(path: Path) -> None:
    anchor = verify(path)
    tamper(path, f"DELETE FROM audit_log WHERE sequence >= {ENTRIES - 1}")
    assert verify(path).ok  # a shorter chain is still a chain...
    result = verify(path, (anchor.head_sequence, anchor.head_hash))
    assert (result.ok, result.first_bad_sequence) == (False, ENTRIES - 1)  # ...but not the anchored one


def test_reordering_entries_is_detected(path: Path) -> None:
    tamper(path,
           "UPDATE audit_log SET sequence = -2 WHERE sequence = 2",
           "UPDATE audit_log SET sequence = 2 WHERE sequence = 4",
           "UPDATE audit_log SET sequence = 4 WHERE sequence = -2")
    result = verify(path)
    assert (result.ok, result.first_bad_sequence) == (False, 2)


def test_an_anchor_that_does_not_match_is_reported(path: Path) -> None:
    result = verify(path, (2, "00" * 32))
    assert (result.ok, result.first_bad_sequence) == (False, 2)


def test_appends_from_two_connections_make_one_chain(tmp_path: Path) -> None:
    logs = [AuditLog(tmp_path / AUDIT_DB) for _ in range(2)]

    def write(log: AuditLog, name: str) -> None:
        for i in range(40):
            log.append(name, "key.created", f"key:{name}{i}")

    threads = [threading.Thread(target=write, args=(log, f"w{n}")) for n, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = logs[0].verify()
    assert result.ok and result.entries == 80
    for log in logs:
        log.close()


def test_bad_entries_are_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / AUDIT_DB)
    for args, field in [(("", "a", "s"), "actor"), (("a", " ", "s"), "action"), (("a", "b", "x" * 201), "subject")]:
        with pytest.raises(InvalidInput) as error:
            log.append(*args)
        assert error.value.field == field
    for details in ([1], {"x": float("nan")}, {"x": object()}, {"x": "y" * 20_000}):
        with pytest.raises(InvalidInput) as error:
            log.append("a", "b", "c", details)  # type: ignore[arg-type]
        assert error.value.field == "details"
    assert log.verify().entries == 0
    log.close()


runner = CliRunner()


def test_cli_verify_intact_and_broken(path: Path) -> None:
    intact = runner.invoke(app, ["verify", "--data-dir", str(path.parent)])
    assert intact.exit_code == 0 and intact.stdout.startswith("intact: 5 entries; anchor 5:")
    anchor = intact.stdout.strip().rsplit(" ", 1)[1]
    assert runner.invoke(app, ["verify", "--data-dir", str(path.parent), "--anchor", anchor]).exit_code == 0
    tamper(path, "UPDATE audit_log SET actor = 'key:intruder' WHERE sequence = 3")
    broken = runner.invoke(app, ["verify", "--data-dir", str(path.parent)])
    assert broken.exit_code == 2
    assert "audit log broken at entry 3: entry 3 was altered" in broken.stderr


def test_cli_verify_without_a_log_and_with_a_bad_anchor(tmp_path: Path) -> None:
    empty = runner.invoke(app, ["verify", "--data-dir", str(tmp_path)])
    assert empty.exit_code == 0 and "no audit log" in empty.stdout
    assert not (tmp_path / AUDIT_DB).exists()
    missing = runner.invoke(app, ["verify", "--data-dir", str(tmp_path), "--anchor", "3:" + "ab" * 32])
    assert missing.exit_code == 2 and "entries 1 to 3 are missing" in missing.stderr
    bad = runner.invoke(app, ["verify", "--data-dir", str(tmp_path), "--anchor", "three"])
    assert isinstance(bad.exception, InvalidInput) and bad.exception.field == "--anchor"


def test_cli_list(path: Path) -> None:
    listing = runner.invoke(app, ["list", "--data-dir", str(path.parent), "--action", "privacy.request.created"])
    assert listing.exit_code == 0
    [line] = listing.stdout.splitlines()
    assert line.split()[:5] == ["2", "1970-01-01T00:00:02.000Z", "key:k2", "privacy.request.created", "pr_1"]
    as_json = runner.invoke(app, ["list", "--data-dir", str(path.parent), "--json", "--after", "4"])
    assert as_json.stdout.count("\n") == 1 and '"sequence": 5' in as_json.stdout
