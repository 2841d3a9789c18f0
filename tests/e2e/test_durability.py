"""Nothing acknowledged is lost and nothing is stored twice: SIGKILL mid-ingest, replays, restarts."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from loyalty_cdp.testing import ServerProcess, stored_client_ids


def batch(prefix: str, start: int, size: int) -> dict:
    return {"batch": [
        {"type": "track", "userId": f"u{n % 97}", "event": "Order Completed", "messageId": f"{prefix}-{n}",
         "properties": {"order_id": f"o{n}", "total": 10.0}}
        for n in range(start, start + size)
    ]}


def test_sigkill_mid_ingest_loses_no_acknowledged_event(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    key = server.create_key("ingest")
    server.start()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        with httpx.Client(base_url=server.url, auth=(key, ""), timeout=5) as client:
            n = 0
            while not stop.is_set():
                body = batch(f"w{worker}", n, 200)
                try:
                    response = client.post("/v1/batch", json=body)
                except httpx.HTTPError:
                    return  # the server died: this batch was never acknowledged
                if response.status_code == 200:
                    with lock:
                        acked.extend(call["messageId"] for call in body["batch"])
                n += 200

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    while len(acked) < 20_000:
        stop.wait(0.05)
    server.kill()
    stop.set()
    for thread in threads:
        thread.join()

    server.start()
    try:
        ids = stored_client_ids(server.data_dir)
    finally:
        server.stop()
    assert len(ids) == len(set(ids)), "an event was stored twice"
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"


def test_same_batch_replayed_concurrently_and_across_restarts_is_stored_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    key = server.create_key("ingest")
    body = batch("replay", 0, 500)

    def post_many() -> None:
        with httpx.Client(base_url=server.url, auth=(key, ""), timeout=10) as client:
            for _ in range(3):
                assert client.post("/v1/batch", json=body).status_code == 200

    for _ in range(2):
        server.start()
        threads = [threading.Thread(target=post_many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        server.stop()
    ids = stored_client_ids(server.data_dir)
    assert sorted(ids) == sorted(call["messageId"] for call in body["batch"])
