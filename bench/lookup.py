"""Member lookup latency at the POS: p50/p99 at a fixed request rate, alone and while ingest runs.

Run:  .venv/bin/python bench/lookup.py [--members 2000] [--days 180] [--rate 2000] [--seconds 20]

1. Appends a simulated program to a fresh data directory and starts ``loyalty-cdp serve``
   on it (the processor folds it at start-up; the run waits until the lag is 0).
2. Measures ingest capacity: batched ingest as fast as it goes for a few seconds.
3. Waits until the processor has folded what that ingested and what it emitted in turn (lag
   0 for 3 s), so that "alone" means alone.
4. Sends ``GET /v1/members/lookup?type=email`` and ``GET /v1/members/{user_id}`` (at random)
   open-loop at ``--rate`` requests/s over keep-alive connections, first alone
   (``--repeat`` times), then while a second process ingests at 80% of the measured
   capacity. Latency is measured from each request's *scheduled* send time, so a stalled
   server cannot hide its queueing (no coordinated omission). Each phase also reports the
   server's CPU per lookup (all its threads, from /proc), which the machine's other load
   disturbs much less than the percentiles, and the load average around it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
import urllib.request
import uuid
from multiprocessing.synchronize import Event
from pathlib import Path

from harness import CoresBusy, http_request, load, percentile, process_cpu

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.core.events import normalise, parse_time
from loyalty_cdp.simulator.generator import simulate
from loyalty_cdp.testing import ServerProcess


def seed_log(data_dir: Path, members: int, days: int) -> list[tuple[str, str]]:
    """Append a simulation to the data directory's log; return (type, value) lookups to ask."""
    log = SqliteEventLog(data_dir / "events.db")
    calls = list(simulate(members, days, seed=2))
    lookups: set[tuple[str, str]] = set()
    for start in range(0, len(calls), 10_000):
        chunk = calls[start:start + 10_000]
        log.append([normalise(c, call_type=None, received_at=parse_time(c["timestamp"], "t"),
                              default_message_id=f"seed-{start + i}") for i, c in enumerate(chunk)])
        for call in chunk:
            traits = call.get("traits") or {}
            if call["type"] == "identify" and traits.get("email"):
                lookups.add(("email", traits["email"]))
                lookups.add(("user_id", call["userId"]))
    log.close()
    return sorted(lookups)


def get_request(path: str, key: str, port: int) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n\r\n").encode()


async def _open_loop(port: int, requests: list[bytes], rate: float, connections: int) -> tuple[list[float], dict]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    interval = connections / rate
    start = time.perf_counter() + 0.1

    async def worker(share: list[bytes], offset: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for index, raw in enumerate(share):
            scheduled = start + offset + index * interval
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:")
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - scheduled)
            statuses[int(head[9:12])] = statuses.get(int(head[9:12]), 0) + 1
        writer.close()

    await asyncio.gather(*(worker(requests[i::connections], i * interval / connections)
                           for i in range(connections)))
    return latencies, statuses


def lookups_at_rate(port: int, key: str, targets: list[tuple[str, str]], rate: float, seconds: float,
                    connections: int) -> tuple[float, float, dict]:
    rng = random.Random(5)
    from urllib.parse import quote
    requests = []
    for _ in range(int(rate * seconds)):
        kind, value = rng.choice(targets)
        path = f"/v1/members/{quote(value)}" if kind == "user_id" else \
            f"/v1/members/lookup?type={kind}&value={quote(value)}"
        requests.append(get_request(path, key, port))
    latencies, statuses = asyncio.run(_open_loop(port, requests, rate, connections))
    return percentile(latencies, 0.5), percentile(latencies, 0.99), statuses


def batches(count: int, port: int, auth: str) -> list[bytes]:
    out = []
    for _ in range(count):
        calls = [{"type": "track", "userId": f"load-{uuid.uuid4().hex[:8]}", "event": "Product Viewed",
                  "messageId": str(uuid.uuid4()), "properties": {"product_id": "p1", "category": "Coffee"},
                  "context": {"channel": "web"}} for _ in range(500)]
        out.append(http_request("/v1/batch", json.dumps({"batch": calls}).encode(), auth, port))
    return out


def ingest_at(port: int, auth: str, events_per_s: float, seconds: float, sending: Event) -> None:
    """Ingest at ``events_per_s`` for ``seconds``; ``sending`` is set once the batches are built
    (building them takes seconds of a core: the lookups measured under ingest wait for it)."""
    requests = batches(int(events_per_s * seconds / 500) + 1, port, auth)
    sending.set()
    load(port, requests, 4, rate=events_per_s / 500)


def wait_for_lag_zero(url: str, settled_s: float = 3.0) -> None:
    """Until the processor's lag has stayed 0 for ``settled_s``: what it emits while folding (loyalty,
    segment and decision events) is folded in turn, so one reading of 0 can come mid-cascade."""
    since = None
    while since is None or time.monotonic() - since < settled_s:
        metrics = urllib.request.urlopen(url + "/metrics").read().decode()
        if "lcdp_processor_lag_events 0.0" not in metrics:
            since = None
        elif since is None:
            since = time.monotonic()
        time.sleep(0.25)


def measured(server: ServerProcess, key: str, targets: list[tuple[str, str]], args: argparse.Namespace
             ) -> tuple[float, float, dict, float, str]:
    """(p50, p99, statuses, server CPU seconds per lookup, a note on the machine's load) of one phase.

    The note gives the load averages before and after, the cores busy machine-wide (every
    process: server, its writers, load generators) and those the server used with its writers."""
    assert server.process is not None
    pid = server.process.pid
    before_load, before_cpu, before_all = os.getloadavg()[0], process_cpu(pid, children=False), process_cpu(pid)
    started, busy = time.monotonic(), CoresBusy()
    p50, p99, statuses = lookups_at_rate(server.port, key, targets, args.rate, args.seconds, args.connections)
    cores, server_cores = busy.read(), (process_cpu(pid) - before_all) / (time.monotonic() - started)
    cpu = (process_cpu(pid, children=False) - before_cpu) / (args.rate * args.seconds)
    return p50, p99, statuses, cpu, (f"load {before_load:.1f}-{os.getloadavg()[0]:.1f}, {cores} "
                                     f"(server and writers {server_cores:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--rate", type=float, default=2_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the lookups alone (medians reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lcdp-bench-") as tmp:
        data = Path(tmp) / "data"
        targets = seed_log(data, args.members, args.days)
        server = ServerProcess(data)
        read_key, ingest_key = server.create_key("read"), server.create_key("ingest")
        with server:
            wait_for_lag_zero(server.url)
            auth = "Basic " + base64.b64encode(f"{ingest_key}:".encode()).decode()
            capacity_requests = batches(60, server.port, auth)
            busy = CoresBusy()
            seconds, _, _ = load(server.port, capacity_requests, 8)
            capacity = 60 * 500 / seconds
            print(f"ingest capacity {capacity:,.0f} events/s, {busy.read()}", flush=True)
            wait_for_lag_zero(server.url)
            runs = []
            for _ in range(args.repeat):
                p50, p99, statuses, cpu, loads = measured(server, read_key, targets, args)
                runs.append((p50, p99, cpu))
                print(f"lookups alone: {args.rate:,.0f}/s for {args.seconds:.0f}s, p50 {p50 * 1000:.2f} ms, "
                      f"p99 {p99 * 1000:.2f} ms, server CPU {cpu * 1e6:.0f} us/lookup, {loads}, "
                      f"statuses {statuses}", flush=True)
            print(f"lookups alone, median of {args.repeat}: p50 {statistics.median(r[0] for r in runs) * 1000:.2f} ms, "
                  f"p99 {statistics.median(r[1] for r in runs) * 1000:.2f} ms, "
                  f"server CPU {statistics.median(r[2] for r in runs) * 1e6:.0f} us/lookup", flush=True)
            sending = multiprocessing.Event()
            background = multiprocessing.Process(target=ingest_at, args=(server.port, auth, 0.8 * capacity,
                                                                          args.seconds + 3, sending))
            background.start()
            sending.wait()
            time.sleep(1)
            p50, p99, statuses, cpu, loads = measured(server, read_key, targets, args)
            background.join()
            print(f"ingest capacity {capacity:,.0f} events/s; with ingest at 80% ({0.8 * capacity:,.0f}/s): "
                  f"lookups {args.rate:,.0f}/s p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
                  f"server CPU {cpu * 1e6:.0f} us/lookup (ingest and the processor included), {loads}, "
                  f"statuses {statuses}")


if __name__ == "__main__":
    main()
