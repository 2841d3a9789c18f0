"""The loyalty program over HTTP: tiers from ingested purchases, idempotent redemption, ledger, liability."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.testing import ServerProcess, run_cli


@pytest.fixture()
def key(server: ServerProcess) -> str:
    return server.create_key("ingest,read,loyalty,admin")


def order(n: int, total: float, day: str) -> dict:
    return {"type": "track", "userId": "m-1", "event": "Order Completed", "messageId": f"order-{n}",
            "timestamp": f"{day}T10:00:00Z", "context": {"channel": "pos"},
            "properties": {"order_id": f"o-{n}", "total": total, "currency": "USD",
                           "products": [{"product_id": f"p-{n}", "sku": f"S-{n}", "category": "Coffee",
                                         "brand": "Bean Co", "price": total, "quantity": 1}]}}


def loyalty_of(server: ServerProcess, key: str, until, timeout: float = 15.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(server.url + "/v1/members/m-1", headers={"Authorization": f"Bearer {key}"})
        if answer.status_code == 200 and until(answer.json()["loyalty"]):
            return answer.json()["loyalty"]
        assert time.monotonic() < deadline, f"timed out; last answer {answer.text[:300]}"
        time.sleep(0.1)


def loyalty_events(server: ServerProcess, name: str) -> list[str]:
    log = SqliteEventLog(server.data_dir / "events.db")
    try:
        return [e.message_id for e in log.read(0, 100_000) if e.event == name]
    finally:
        log.close()


def test_purchases_cross_a_tier_threshold_and_the_upgrade_fires_once(server: ServerProcess, key: str) -> None:
    # The example program: Silver from 500 of qualifying spend in the calendar year.
    batch = [order(1, 300.0, "2026-08-01"), order(2, 300.0, "2026-08-02")]
    for _ in range(2):  # a client retrying the whole batch changes nothing
        assert httpx.post(server.url + "/v1/batch", json={"batch": batch}, auth=(key, "")).status_code == 200
    summary = loyalty_of(server, key, lambda loyalty: loyalty["tier"] == "Silver")
    assert summary["lifetime_points"] > 0 and summary["progress"]["next_tier"] == "Gold"
    time.sleep(1.0)  # let any (wrong) second emission reach the log
    assert len(loyalty_events(server, "Tier Upgraded")) == 1


def test_redemption_is_idempotent_and_insufficient_balance_is_a_409(server: ServerProcess, key: str) -> None:
    httpx.post(server.url + "/v1/batch", json={"batch": [order(1, 300.0, "2026-08-01"),
                                                          order(2, 300.0, "2026-08-02")]}, auth=(key, ""))
    before = loyalty_of(server, key, lambda loyalty: loyalty["points_balance"] >= 500)["points_balance"]
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "checkout-77"}
    first = httpx.post(server.url + "/v1/members/m-1/redemptions", json={"reward_id": "five-off"}, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "accepted" and first.json()["code"].startswith("SAVE5-")
    again = httpx.post(server.url + "/v1/members/m-1/redemptions", json={"reward_id": "five-off"}, headers=headers)
    assert again.status_code == 200 and again.json()["code"] == first.json()["code"]
    after = loyalty_of(server, key, lambda loyalty: True)["points_balance"]
    assert after == before - 500  # spent once

    too_much = httpx.post(server.url + "/v1/members/m-1/redemptions", json={"reward_id": "five-off", "quantity": 50},
                          headers={**headers, "Idempotency-Key": "checkout-78"})
    assert too_much.status_code == 409
    assert too_much.json()["points_balance"] == after and too_much.json()["cost"] == 25_000

    ledger = httpx.get(server.url + "/v1/members/m-1/ledger", headers={"Authorization": f"Bearer {key}"}).json()
    assert sum(lot["remaining"] for lot in ledger["lots"] if lot["status"] == "active") == after
    assert [e["ref"] for e in ledger["entries"] if e["kind"] == "redeem"] == ["redemption:checkout-77"]

    report = httpx.get(server.url + "/v1/reports/liability", headers={"Authorization": f"Bearer {key}"}).json()
    assert report["outstanding_points"] == after and report["redeemed_points"] == 500


def test_redemption_errors(server: ServerProcess, key: str) -> None:
    url = server.url + "/v1/members/m-1/redemptions"
    read_only = server.create_key("read")
    assert httpx.post(url, json={"reward_id": "five-off"},
                      headers={"Authorization": f"Bearer {read_only}", "Idempotency-Key": "k"}).status_code == 403
    missing_key = httpx.post(url, json={"reward_id": "five-off"}, headers={"Authorization": f"Bearer {key}"})
    assert missing_key.status_code == 400 and missing_key.json()["field"] == "Idempotency-Key"
    bad_body = httpx.post(url, content=b"{}", headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "k"})
    assert bad_body.status_code == 400 and "reward_id" in bad_body.json()["message"]
    unknown = httpx.post(server.url + "/v1/members/nobody/redemptions", json={"reward_id": "five-off"},
                         headers={"Authorization": f"Bearer {key}", "Idempotency-Key": "k"})
    assert unknown.status_code == 404


def test_config_check_and_serve_refuse_a_broken_program(tmp_path: Path) -> None:
    broken = tmp_path / "program.yaml"
    broken.write_text("program: x\nversion: 1\neffective_from: 2026-01-01\ncurrency: USD\nearn:\n  base_ponts: 1\n")
    for args in (("config", "check", str(broken)), ("serve", "--config", str(broken), "--data-dir", str(tmp_path))):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert f"{broken}:6: earn.base_ponts" in result.stderr and "Traceback" not in result.stderr
    from loyalty_cdp.programs import retail_program_path
    ok = run_cli("config", "check", str(retail_program_path()))
    assert ok.returncode == 0 and ok.stdout.startswith("ok:")


def test_manual_adjustment_with_a_reason_is_applied_once(server: ServerProcess, key: str) -> None:
    httpx.post(server.url + "/v1/batch", json={"batch": [order(1, 20.0, "2026-08-01")]}, auth=(key, ""))
    before = loyalty_of(server, key, lambda loyalty: loyalty["lifetime_points"] > 0)["points_balance"]
    url = server.url + "/v1/members/m-1/adjustments"
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "goodwill-1"}
    for _ in range(2):
        answer = httpx.post(url, json={"points": 250, "reason": "late delivery goodwill"}, headers=headers)
        assert answer.status_code == 202, answer.text
    assert loyalty_of(server, key, lambda loyalty: loyalty["points_balance"] == before + 250)
    time.sleep(0.5)
    assert loyalty_of(server, key, lambda loyalty: True)["points_balance"] == before + 250
    no_reason = httpx.post(url, json={"points": 5, "reason": " "}, headers=headers)
    assert no_reason.status_code == 400 and no_reason.json()["field"] == "reason"
    zero = httpx.post(url, json={"points": 0, "reason": "x"}, headers=headers)
    assert zero.status_code == 400 and zero.json()["field"] == "points"
