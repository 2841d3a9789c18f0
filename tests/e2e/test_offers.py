"""Next-best offers over HTTP: ranked, each with a decision id and a reason; clear errors."""

from __future__ import annotations

import time

import httpx

from loyalty_cdp.testing import ServerProcess


def test_a_member_gets_ranked_offers_with_reasons_on_every_channel(server: ServerProcess) -> None:
    key = server.create_key("ingest,read")
    orders = [{"type": "track", "userId": "m-1", "event": "Order Completed", "messageId": f"o-{n}",
               "timestamp": f"2026-0{n}-10T10:00:00Z", "context": {"channel": "pos"},
               "properties": {"order_id": f"o-{n}", "total": 260.0, "currency": "USD",
                              "products": [{"product_id": "p1", "category": "Coffee", "brand": "Northroast",
                                            "price": 260.0, "quantity": 1}]}} for n in range(1, 4)]
    identify = {"type": "identify", "userId": "m-1", "traits": {"first_name": "Ann", "email": "ann@example.com"}}
    assert httpx.post(server.url + "/v1/batch", json={"batch": [identify, *orders]}, auth=(key, "")).status_code == 200
    bearer = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 15
    while httpx.get(server.url + "/v1/members/m-1", headers=bearer).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for channel in ("web", "app", "pos"):
        answer = httpx.get(server.url + "/v1/members/m-1/offers", params={"channel": channel, "limit": 2,
                                                                          "request_id": "basket-9"}, headers=bearer)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["decision_id"] and body["reason"]
        assert 1 <= len(body["offers"]) <= 2
        for offer in body["offers"]:
            assert offer["decision_id"] == body["decision_id"] and offer["reason"] and offer["offer_id"]
            assert offer["channel"] == channel
        scores = [offer["score"] for offer in body["offers"]]
        assert scores == sorted(scores, reverse=True)
        again = httpx.get(server.url + "/v1/members/m-1/offers", params={"channel": channel, "limit": 2,
                                                                         "request_id": "basket-9"}, headers=bearer)
        assert again.json()["decision_id"] == body["decision_id"]  # same request, same decision


def test_offer_errors(server: ServerProcess) -> None:
    key = server.create_key("read")
    bearer = {"Authorization": f"Bearer {key}"}
    assert httpx.get(server.url + "/v1/members/ghost/offers", params={"channel": "web"}, headers=bearer).status_code == 404
    assert httpx.get(server.url + "/v1/members/ghost/offers", params={"channel": "web"}).status_code == 401
    missing = httpx.get(server.url + "/v1/members/ghost/offers", headers=bearer)
    assert missing.status_code == 400 and missing.json()["field"] == "channel"
