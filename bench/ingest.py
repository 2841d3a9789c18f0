"""Ingest benchmark: durable batched events/s and single-event requests/s with p50/p99, over loopback.

Run:  .venv/bin/python bench/ingest.py [--events 300000] [--batch 500] [--repeat 3] [--single 5000 (0: none)]
          [--postgres DSN]

Each run starts a real ``loyalty-cdp serve`` (embedded SQLite, or PostgreSQL with --postgres),
sends pre-encoded batches with unique messageIds over keep-alive connections, and counts
only acknowledged events (the server acks after the durable append). It repeats each
measurement ``--repeat`` times and reports the median, with the load average of the machine
around each run (other work on the machine competes for the same cores), the server's CPU
time per event (the HTTP process, where the profile processor also runs, and its child, the
event log writer), and how far the profile processor lagged behind the log at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import uuid

from harness import http_request, load, median, metric, percentile, process_cpu, running_server

PRODUCTS = [
    {"product_id": f"p{i}", "sku": f"SKU-{i:05d}", "category": c, "brand": b, "price": 4.99 + i,
     "quantity": 1 + i % 3}
    for i, (c, b) in enumerate([("Pet Food", "Acme"), ("Coffee", "Bean Co"), ("Produce", "Farm")])
]


def make_event(n: int) -> dict:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"member-{n % 50_000}",
        "messageId": str(uuid.uuid4()),
        "timestamp": "2026-11-01T10:00:00.000Z",
        "context": {"channel": ("pos", "web", "app")[n % 3], "library": {"name": "bench"}},
        "properties": {"order_id": f"o-{n}", "total": 42.5, "currency": "USD", "products": PRODUCTS[: 1 + n % 3]},
    }


def batched_requests(events: int, batch: int, auth: str, port: int) -> list[bytes]:
    bodies = []
    for start in range(0, events, batch):
        calls = [make_event(n) for n in range(start, min(events, start + batch))]
        bodies.append(http_request("/v1/batch", json.dumps({"batch": calls}).encode(), auth, port))
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--single", type=int, default=5_000, help="single-event requests to time")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", help="PostgreSQL DSN: benchmark the PostgreSQL event log instead")
    args = parser.parse_args()
    env = {"LOYALTY_CDP_STORAGE": "postgres", "LOYALTY_CDP_POSTGRES_DSN": args.postgres} if args.postgres else {}
    store = "postgres" if args.postgres else "sqlite"

    with running_server(env) as server:
        assert server.process is not None
        key = server.create_key("ingest")
        auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        rates = []
        for run in range(args.repeat):
            requests = batched_requests(args.events, args.batch, auth, server.port)
            pid = server.process.pid
            load_before, cpu_before, main_before = os.getloadavg()[0], process_cpu(pid), process_cpu(pid, False)
            seconds, _, statuses = load(server.port, requests, args.connections)
            cpu, main_cpu = process_cpu(pid) - cpu_before, process_cpu(pid, False) - main_before
            assert set(statuses) == {200}, statuses
            rates.append(args.events / seconds)
            print(f"store={store} batched run {run + 1}: {rates[-1]:,.0f} events/s, server CPU "
                  f"{cpu / args.events * 1e6:.1f} us/event on {cpu / seconds:.2f} cores (HTTP process with the "
                  f"profile processor {main_cpu / args.events * 1e6:.1f}, writer process "
                  f"{(cpu - main_cpu) / args.events * 1e6:.1f}), load average {load_before:.2f} -> "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
        lag = metric(server.url, "lcdp_processor_lag_events")
        if args.single:
            singles = [http_request("/v1/track", json.dumps(make_event(n)).encode(), auth, server.port)
                       for n in range(args.single)]
            load_before = os.getloadavg()[0]
            seconds, latencies, statuses = load(server.port, singles, args.connections)
            assert set(statuses) == {200}, statuses

    print(f"store={store} batched: median {median(rates):,.0f} events/s over {args.repeat} runs "
          f"of {args.events:,} events in batches of {args.batch} ({', '.join(f'{r:,.0f}' for r in rates)}); "
          f"the profile processor was {lag:,.0f} events behind the log at the end")
    if args.single:
        print(f"store={store} single-event: {args.single / seconds:,.0f} requests/s, "
              f"p50 {percentile(latencies, 0.5) * 1000:.2f} ms, p99 {percentile(latencies, 0.99) * 1000:.2f} ms "
              f"(load average {load_before:.2f} -> {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
