"""The official Segment Python client, unmodified, pointed at our server: every call type is stored."""

from __future__ import annotations

import msgspec
from segment.analytics.client import Client

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.testing import SYSTEM_CHANNELS, ServerProcess


def test_official_client_calls_are_accepted_and_stored(server: ServerProcess, write_key: str) -> None:
    failures: list[object] = []
    client = Client(write_key=write_key, host=server.url, gzip=True,
                    on_error=lambda error, items: failures.append(error), max_retries=1)
    client.identify("member-1", {"email": "ann@example.com", "first_name": "Ann"},
                    context={"channel": "web"})
    client.track("member-1", "Order Completed",
                 {"order_id": "o-1", "total": 30.0, "currency": "USD",
                  "products": [{"product_id": "p1", "sku": "S1", "category": "Coffee",
                                "brand": "Bean Co", "price": 15.0, "quantity": 2}]},
                 context={"channel": "pos"})
    client.page("member-1", "Shop", "Coffee", {"url": "https://shop.example/coffee"})
    client.screen("member-1", "App", "Home")
    client.group("member-1", "household-7", {"name": "The Smiths"})
    client.alias("anon-42", "member-1")
    client.shutdown()  # flushes the queue through the client's consumer thread, then stops it
    assert failures == []

    log = SqliteEventLog(server.data_dir / "events.db")
    try:
        stored = [e for e in log.read(0, 100) if e.channel not in SYSTEM_CHANNELS]  # the engine's own events aside
    finally:
        log.close()
    assert sorted(e.type for e in stored) == ["alias", "group", "identify", "page", "screen", "track"]
    track = next(e for e in stored if e.type == "track")
    assert track.event == "Order Completed" and track.user_id == "member-1"
    assert track.channel == "pos"
    body = msgspec.json.decode(track.body)
    assert body["properties"]["products"][0]["category"] == "Coffee"
    assert body["context"]["library"]["name"] == "analytics-python"
