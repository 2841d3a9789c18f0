"""The event log writer (a process of its own) dying mid-ingest: the server replaces it, and no
acknowledged event is lost or stored twice; an out-of-range event time is a 400, not a dead writer."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from loyalty_cdp.testing import ServerProcess, stored_client_ids

BATCH = 200
SENDERS = 3
KILLS = 3


def writer_pid(server: ServerProcess) -> int | None:
    """The pid of the server's writer process (a multiprocessing spawn child), if one runs."""
    assert server.process is not None
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the thread ended
            continue
        for child in map(int, children):
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in command:
                return child
    return None


def wait_for_new_writer(server: ServerProcess, old: int | None, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = writer_pid(server)
        if pid is not None and pid != old:
            return pid
        time.sleep(0.02)
    raise AssertionError(f"no writer replaced pid {old} within {timeout}s")


def batch(prefix: str, start: int) -> dict:
    return {"batch": [
        {"type": "track", "userId": f"u{n % 53}", "event": "Product Viewed", "messageId": f"{prefix}-{n}",
         "properties": {"sku": f"sku-{n % 11}"}}
        for n in range(start, start + BATCH)
    ]}


def test_writer_killed_mid_ingest_is_replaced_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    key = server.create_key("ingest")
    server.start()
    acked: list[str] = []
    answers: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        """A client as Segment's libraries behave: a batch that got no 200 is sent again, unchanged."""
        with httpx.Client(base_url=server.url, auth=(key, ""), timeout=30) as client:
            n = 0
            while not stop.is_set():
                body = batch(f"w{worker}", n)
                while True:
                    status = client.post("/v1/batch", json=body).status_code
                    with lock:
                        answers[status] = answers.get(status, 0) + 1
                    if status == 200:
                        break
                    assert status == 503, f"a writer's death must give 503, got {status}"
                    time.sleep(0.05)
                with lock:
                    acked.extend(call["messageId"] for call in body["batch"])
                n += BATCH

    threads = [threading.Thread(target=sender, args=(w,), daemon=True) for w in range(SENDERS)]
    try:
        pid = wait_for_new_writer(server, None)
        for thread in threads:
            thread.start()
        for _ in range(KILLS):
            before = len(acked)
            while len(acked) < before + 4 * BATCH:  # ingest is flowing through this writer
                assert all(thread.is_alive() for thread in threads), "a sender failed"
                time.sleep(0.01)
            os.kill(pid, signal.SIGKILL)
            pid = wait_for_new_writer(server, pid)
        before = len(acked)
        deadline = time.monotonic() + 20
        while len(acked) < before + 10 * BATCH:  # and it flows through the last replacement
            assert time.monotonic() < deadline, f"ingest did not resume after the writer died: {answers}"
            assert all(thread.is_alive() for thread in threads), "a sender failed"
            time.sleep(0.01)
        health = httpx.get(server.url + "/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        assert server.stop() in (0, -signal.SIGTERM)  # graceful: uvicorn re-raises the SIGTERM it handled
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, "the last writer outlived the server"
        time.sleep(0.05)

    assert set(answers) <= {200, 503}, answers
    # Three kills under continuous load from three clients: requests were in flight at least once.
    assert answers.get(503, 0) > 0, f"no kill landed mid-append, the test proved nothing: {answers}"
    ids = stored_client_ids(server.data_dir)
    assert len(ids) == len(set(ids)), "an event was stored twice"
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"


def test_out_of_range_event_times_get_400_naming_the_field_and_the_writer_lives_on(
    server: ServerProcess, write_key: str
) -> None:
    pid = wait_for_new_writer(server, None)
    with httpx.Client(base_url=server.url, auth=(write_key, ""), timeout=10) as client:
        # The client's clock is 1,000 years behind: corrected, its 2999 event lands after 3999.
        skewed = client.post("/v1/track", json={"userId": "ann", "event": "Order Completed",
                                                "timestamp": "2999-06-01T00:00:00Z", "sentAt": "1026-01-01T00:00:00Z"})
        assert skewed.status_code == 400, skewed.text
        assert skewed.json()["field"] == "timestamp"
        assert "corrected by receivedAt - sentAt" in skewed.json()["reason"]
        # Year 9999 at UTC-1 is year 10000 in UTC: no date-time names it (this used to kill the writer).
        beyond = client.post("/v1/identify", json={"userId": "ann", "timestamp": "9999-12-31T23:59:59.999-01:00"})
        assert beyond.status_code == 400, beyond.text
        assert beyond.json()["field"] == "timestamp"
        in_batch = client.post("/v1/batch", json={"sentAt": "1000-01-01T00:00:00Z", "batch": [
            {"type": "track", "userId": "bob", "event": "Order Completed", "timestamp": "2990-01-01T00:00:00Z",
             "messageId": "skewed"},
            {"type": "track", "userId": "bob", "event": "Order Completed", "messageId": "fine",
             "timestamp": "1000-01-01T00:00:00Z"},
        ]})
        assert in_batch.status_code == 400, in_batch.text
        assert in_batch.json()["accepted"] == 1
        assert [(e["field"], e["messageId"]) for e in in_batch.json()["errors"]] == [("batch[0].timestamp", "skewed")]
        assert client.post("/v1/track", json={"userId": "ann", "event": "Order Completed"}).status_code == 200
    assert writer_pid(server) == pid, "the writer process was replaced: bad input must never kill it"
