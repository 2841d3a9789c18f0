"""Decisions over HTTP on a real server: a tier upgrade's decision stored by the processor and read back whole,
outcomes recorded once, a member's decisions newest first across pages, and the uplift report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from loyalty_cdp.adapters.decisionstore import Batch, DecisionStore
from loyalty_cdp.adapters.outbox import OUTBOX_FILE, Outbox
from loyalty_cdp.core.decisioning import Chosen, Decision, decision_id
from loyalty_cdp.core.events import format_time
from loyalty_cdp.testing import ServerProcess, wait_for

DAY_MS = 86_400_000


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def order(user: str, at: int, total: float, number: int = 0) -> dict[str, Any]:
    return {"type": "track", "userId": user, "event": "Order Completed", "messageId": f"o-{user}-{number}",
            "timestamp": format_time(at), "context": {"channel": "pos"},
            "properties": {"order_id": f"o-{user}-{number}", "total": total, "currency": "USD",
                           "products": [{"product_id": "p1", "category": "Coffee", "price": total, "quantity": 1}]}}


def seeded(member: str, user: str, at: int, campaign: str, arm: str, n: int) -> Decision:
    key = f"seed:{n}"
    return Decision(decision_id=decision_id(member, "trigger", campaign, key), member_id=member, user_id=user, at=at,
                    action="send" if arm == "treatment" else "hold_out", reason="seeded", automated=True,
                    trigger_id=campaign, occurrence_key=key, occurred_at=at, campaign=campaign, arm=arm,
                    holdout_period="seed", chosen=[Chosen(offer_id="seed-offer", name="Seed", channel="email",
                                                          score=1.0, send_at=at, content={}, reason="seeded")])


def write(server: ServerProcess, decisions: list[Decision]) -> None:
    outbox = Outbox(server.data_dir / OUTBOX_FILE)
    store = DecisionStore(outbox)
    try:
        store.write(Batch(decisions=decisions), int(time.time() * 1000))
    finally:
        store.close()
        outbox.close()


def test_a_tier_upgrade_decision_is_readable_whole_and_takes_outcomes_once(server: ServerProcess, client: httpx.Client) -> None:
    ingest = server.create_key("ingest")
    read = {"Authorization": f"Bearer {server.create_key('read')}"}
    write_bearer = {"Authorization": f"Bearer {ingest}"}
    now = int(time.time() * 1000)
    calls = [{"type": "identify", "userId": "d-1", "traits": {"first_name": "Dee", "email": "dee@example.com"}},
             order("d-1", now - 60_000, 650.0)]  # over the Silver threshold: Tier Upgraded
    assert client.post("/v1/batch", json={"batch": calls}, auth=(ingest, "")).status_code == 200
    page = wait_for(lambda: (r := client.get("/v1/members/d-1/decisions", headers=read)).status_code == 200
                    and r.json()["decisions"] and r.json(), "the tier upgrade's decision")
    [upgrade] = [d for d in page["decisions"] if d["trigger_id"] == "tier-upgrade-welcome"]
    record = client.get(f"/v1/decisions/{upgrade['decision_id']}", headers=read).json()
    assert record["decision_id"] == upgrade["decision_id"] and record["reason"] and record["candidates"]
    assert record["inputs"] and record["campaign"] and record["arm"] in ("treatment", "holdout")
    assert record["outcomes"] == {}

    url = f"/v1/decisions/{upgrade['decision_id']}/outcome"
    first = client.post(url, json={"outcome": "shown"}, headers=write_bearer)
    assert first.status_code == 200 and first.json()["recorded"] is True
    again = client.post(url, json={"outcome": "shown"}, headers=write_bearer)
    assert again.status_code == 200 and again.json()["recorded"] is False and again.json()["at"] == first.json()["at"]
    assert list(client.get(f"/v1/decisions/{upgrade['decision_id']}", headers=read).json()["outcomes"]) == ["shown"]
    bad = client.post(url, json={"outcome": "loved"}, headers=write_bearer)
    assert bad.status_code == 400 and bad.json()["field"] == "outcome"
    extra = client.post(url, json={"outcome": "shown", "when": 1}, headers=write_bearer)
    assert extra.status_code == 400 and extra.json()["field"] == "when"
    garbage = client.post(url, content=b"[", headers=write_bearer)
    assert garbage.status_code == 400 and garbage.json()["field"] == "body"
    assert client.post("/v1/decisions/dec-unknown/outcome", json={"outcome": "shown"},
                       headers=write_bearer).status_code == 404
    assert client.post(url, json={"outcome": "shown"}, headers=read).status_code == 403
    assert client.get("/v1/decisions/dec-unknown", headers=read).status_code == 404
    assert client.get(f"/v1/decisions/{upgrade['decision_id']}").status_code == 401


def test_a_members_decisions_come_newest_first_across_pages(server: ServerProcess, client: httpx.Client) -> None:
    ingest = server.create_key("ingest")
    read = {"Authorization": f"Bearer {server.create_key('read')}"}
    identify = {"type": "identify", "userId": "p-1", "traits": {"first_name": "Pat"}}
    assert client.post("/v1/identify", json=identify, auth=(ingest, "")).status_code == 200
    profile = wait_for(lambda: (r := client.get("/v1/members/p-1", headers=read)).status_code == 200 and r.json(),
                       "the member")
    start = int(time.time() * 1000) - 10 * DAY_MS
    planted = [seeded(profile["member_id"], "p-1", start + n * DAY_MS, "seeded", "treatment", n)
               for n in (3, 0, 4, 1, 2)]
    write(server, planted)
    seen: list[int] = []
    ids: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"before": cursor} if cursor else {})}
        body = client.get("/v1/members/p-1/decisions", params=params, headers=read).json()
        seen += [d["at"] for d in body["decisions"]]
        ids += [d["decision_id"] for d in body["decisions"]]
        cursor = body["next"]
        if cursor is None:
            break
    # the seeded decisions, and any the processor took for the member (the program's triggers), each once
    assert seen == sorted(seen, reverse=True) and len(ids) == len(set(ids))
    assert {d.decision_id for d in planted} <= set(ids)
    bad = client.get("/v1/members/p-1/decisions", params={"before": "yesterday"}, headers=read)
    assert bad.status_code == 400 and bad.json()["field"] == "before"
    assert client.get("/v1/members/nobody/decisions", headers=read).status_code == 404


def test_the_uplift_report_counts_conversions_after_each_exposure(server: ServerProcess, client: httpx.Client) -> None:
    ingest = server.create_key("ingest")
    admin = {"Authorization": f"Bearer {server.create_key('admin')}"}
    exposed = int(time.time() * 1000) - 30 * DAY_MS
    decisions, calls = [], []
    for n in range(20):
        user = f"up-{n}"
        arm = "treatment" if n % 2 == 0 else "holdout"
        decisions.append(seeded(f"member-{user}", user, exposed + n * 60_000, "spring", arm, n))
        if n % 2 == 0 or n % 6 == 1:  # every treated member converts, a third of the control group
            calls.append(order(user, exposed + DAY_MS, 40.0, 1))
        calls.append(order(user, exposed - DAY_MS, 25.0, 2))  # before the exposure: never counted
    write(server, decisions)
    assert client.post("/v1/batch", json={"batch": calls}, auth=(ingest, "")).status_code == 200
    report = wait_for(lambda: (r := client.get("/v1/reports/uplift", params={"campaign": "spring", "window_days": 7},
                                               headers=admin).json())["campaigns"]
                      and r["campaigns"][0]["treated"]["converted"] == 10 and r, "the orders in the log")
    [spring] = report["campaigns"]
    assert spring["treated"]["members"] == spring["control"]["members"] == 10
    assert spring["control"]["converted"] == 4 and spring["treated"]["revenue"] == 400.0
    rate = spring["uplift"]["conversion_rate"]
    assert abs(rate["difference"] - 0.6) < 1e-9 and rate["low"] > 0 and rate["significant"] is True
    bad = client.get("/v1/reports/uplift", params={"window_days": 0}, headers=admin)
    assert bad.status_code == 400 and bad.json()["field"] == "window_days"
    by = client.get("/v1/reports/uplift", params={"group_by": "member"}, headers=admin)
    assert by.status_code == 400 and by.json()["field"] == "group_by"
    assert client.get("/v1/reports/uplift", headers={"Authorization": admin["Authorization"].replace(
        admin["Authorization"][7:], server.create_key("read"))}).status_code == 403
