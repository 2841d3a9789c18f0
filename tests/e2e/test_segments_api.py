"""Segments over HTTP on a real server: the program's segments kept in real time, a JSON definition recomputed in
batch, paginated members, previews, deletion, and clear errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from loyalty_cdp.core.events import format_time
from loyalty_cdp.testing import ServerProcess, wait_for

DAY_MS = 86_400_000


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http
SPEND = {"s-1": 120.0, "s-2": 350.0, "s-3": 420.0, "s-4": 80.0, "s-5": 610.0}


def ingest(server: ServerProcess, key: str) -> None:
    now = int(time.time() * 1000)
    calls: list[dict[str, Any]] = []
    for user, total in SPEND.items():
        calls.append({"type": "identify", "userId": user, "traits": {"first_name": user}})
        calls.append({"type": "track", "userId": user, "event": "Order Completed", "messageId": f"o-{user}",
                      "timestamp": format_time(now - 3 * DAY_MS), "context": {"channel": "pos"},
                      "properties": {"order_id": f"o-{user}", "total": total, "currency": "USD",
                                     "products": [{"product_id": "p1", "category": "Coffee", "price": total,
                                                   "quantity": 1}]}})
    assert httpx.post(server.url + "/v1/batch", json={"batch": calls}, auth=(key, "")).status_code == 200


def test_segments_defined_in_json_are_recomputed_listed_paginated_previewed_and_deleted(server: ServerProcess, client: httpx.Client) -> None:
    ingest(server, server.create_key("ingest"))
    read = {"Authorization": f"Bearer {server.create_key('read')}"}
    admin = {"Authorization": f"Bearer {server.create_key('admin')}"}
    wait_for(lambda: all(client.get(f"/v1/members/{u}", headers=read).status_code == 200 for u in SPEND), "members")

    # the program's segments, kept in real time by the processor: first orders 3 days ago make new members
    listed = client.get("/v1/segments", headers=read).json()["segments"]
    assert {s["source"] for s in listed} == {"program"} and "new-members" in {s["id"] for s in listed}
    new = wait_for(lambda: (b := client.get("/v1/segments/new-members", headers=read).json())["size"] == 5 and b,
                   "new members")
    assert new["history"][-1]["size"] == 5 and len(new["history"]) == 30 and new["source"] == "program"
    members = client.get("/v1/segments/new-members/members", headers=read).json()["members"]
    assert sorted(m["user_id"] for m in members) == sorted(SPEND) and all(m["since"] for m in members)

    # a preview of the draft, exact over five members, stores nothing
    draft = {"when": {"field": "signals.monetary.total_spend", "gte": 300}}
    preview = client.post("/v1/segments/preview", json=draft, headers=read)
    assert preview.status_code == 200, preview.text
    assert preview.json()["estimate"] == 3 and preview.json()["exact"] and preview.json()["population"] == 5

    created = client.post("/v1/segments", json={"id": "big-spenders", "name": "Big spenders", **draft}, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["source"] == "api" and body["size"] == 3 and body["recomputed"]["entered"] == 3
    assert body["recomputed"]["evaluated"] == 5
    pages, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/segments/big-spenders/members", params=params, headers=read).json()
        pages.append(page["members"])
        after = page["next"]
        if after is None:
            break
    # the members who entered in batch get their Segment Entered event and the membership in their profile
    def entered(user: str) -> bool:
        timeline = client.get(f"/v1/members/{user}/events", headers=read).json()["events"]
        return any(e.get("event") == "Segment Entered" and e["properties"]["segment_id"] == "big-spenders"
                   for e in timeline)
    wait_for(lambda: all(entered(u) for u in ("s-2", "s-3", "s-5")), "Segment Entered events")
    assert not entered("s-1")
    assert client.get("/v1/members/s-5", headers=read).json()["segments"]["big-spenders"]["member"] is True
    assert [len(p) for p in pages] == [2, 1]
    assert sorted(m["user_id"] for p in pages for m in p) == ["s-2", "s-3", "s-5"]
    one = client.get("/v1/segments/big-spenders", headers=read).json()
    assert one["size"] == 3 and one["history"][-1]["entered"] == 3 and one["when"] == draft["when"]
    assert {s["id"]: s["source"] for s in client.get("/v1/segments", headers=read).json()["segments"]}[
        "big-spenders"] == "api"

    # replacing the definition recomputes: two leave
    replaced = client.post("/v1/segments", json={"id": "big-spenders", "when": {
        "field": "signals.monetary.total_spend", "gte": 500}}, headers=admin)
    assert replaced.status_code == 200 and replaced.json()["recomputed"]["exited"] == 2
    assert replaced.json()["size"] == 1

    deleted = client.delete("/v1/segments/big-spenders", headers=admin)
    assert deleted.status_code == 200 and deleted.json()["exited"] == 1
    assert client.get("/v1/segments/big-spenders", headers=read).status_code == 404
    assert client.delete("/v1/segments/big-spenders", headers=admin).status_code == 404
    assert client.delete("/v1/segments/new-members", headers=admin).status_code == 409


def test_segment_errors_name_the_field_and_scopes_hold(server: ServerProcess, client: httpx.Client) -> None:
    read = {"Authorization": f"Bearer {server.create_key('read')}"}
    admin = {"Authorization": f"Bearer {server.create_key('admin')}"}
    assert client.get("/v1/segments").status_code == 401
    assert client.post("/v1/segments", json={"id": "x", "when": {}}, headers=read).status_code == 403
    assert client.get("/v1/segments", headers=admin).status_code == 403
    bad = client.post("/v1/segments", json={"id": "x", "when": {"field": "signals.purchase.order", "gte": 1}},
                      headers=admin)
    assert bad.status_code == 400 and bad.json()["field"] == "body.when.field" and "orders" in bad.json()["reason"]
    missing = client.post("/v1/segments", json={"id": "x"}, headers=admin)
    assert missing.status_code == 400 and missing.json()["field"] == "body.when"
    clash = client.post("/v1/segments", json={"id": "at-risk", "when": {"field": "signals.purchase.orders",
                                                                          "gte": 1}}, headers=admin)
    assert clash.status_code == 409 and clash.json()["field"] == "body.id"
    garbage = client.post("/v1/segments", content=b"{not json", headers=admin)
    assert garbage.status_code == 400 and garbage.json()["field"] == "body"
    preview = client.post("/v1/segments/preview", json={"when": {"count": {"event": "Order Completed", "days": 0},
                                                                 "gte": 1}}, headers=read)
    assert preview.status_code == 400 and preview.json()["field"] == "body.when.count.days"
    nobody = client.post("/v1/segments/preview", json={"when": {"field": "signals.purchase.orders", "gte": 1}},
                         headers=read)
    assert nobody.status_code == 400 and nobody.json()["field"] == "population"
    assert client.get("/v1/segments/nope", headers=read).status_code == 404
    assert client.get("/v1/segments/nope/members", headers=read).status_code == 404
    days = client.get("/v1/segments", params={"history_days": 0}, headers=read)
    assert days.status_code == 400 and days.json()["field"] == "history_days"
    limit = client.get("/v1/segments/at-risk/members", params={"limit": 0}, headers=read)
    assert limit.status_code == 400 and limit.json()["field"] == "limit"
