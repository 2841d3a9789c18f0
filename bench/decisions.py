"""Event to decision stored: p50/p99 from a purchase crossing a tier threshold to its stored decision.

Run:  .venv/bin/python bench/decisions.py [--trials 200] [--background 1000]

1. Starts ``loyalty-cdp serve`` on a fresh data directory with the example retail program.
2. For each trial, a new member: an ``identify`` granting every consent, then one
   ``Order Completed`` of $600 (Silver is at $500 of qualifying spend). The clock starts
   when the order is sent. The loyalty engine emits ``Tier Upgraded``, the processor folds
   it, the ``tier-upgrade-welcome`` trigger fires and the decision (with its outbound
   message, when the member is not held out) is committed to ``outbox.db``; the clock
   stops when this process can read that decision there (polled every 2 ms).
3. Runs the trials first on a quiet server, then while a second process streams
   simulated traffic at ``--background`` events/s.

Prints p50/p90/p99/max per phase; the brief's target is p99 under 1 s.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
import uuid
from pathlib import Path

from harness import background_ingest, latency_summary, post_json, running_server

CONSENT = {"categoryPreferences": {"email_marketing": True, "sms": True, "push": True, "profiling": True}}


def decided(conn: sqlite3.Connection, user_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM decisions WHERE user_id = ? AND trigger_id = 'tier-upgrade-welcome'",
                       (user_id,)).fetchone()
    return row is not None


def trial(url: str, key: str, conn: sqlite3.Connection) -> float:
    user = f"bench-{uuid.uuid4().hex[:12]}"
    post_json(url, key, "/v1/identify", {"userId": user, "traits": {"email": f"{user}@example.com", "first_name": "Bo"},
                                         "context": {"consent": CONSENT}})
    started = time.perf_counter()
    post_json(url, key, "/v1/track", {"userId": user, "event": "Order Completed", "context": {"channel": "pos"},
                                      "properties": {"order_id": f"o-{user}", "total": 600.0, "currency": "USD",
                                                     "products": [{"product_id": "sku-tv", "category": "Electronics",
                                                                   "price": 600.0, "quantity": 1}]}})
    deadline = started + 30
    while not decided(conn, user):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"no decision for {user} after 30 s")
        time.sleep(0.002)
    return time.perf_counter() - started


def phase(name: str, url: str, key: str, conn: sqlite3.Connection, trials: int) -> None:
    latencies = [trial(url, key, conn) * 1000 for _ in range(trials)]
    print(f"{name:<28} n={trials}  {latency_summary(latencies)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--background", type=float, default=1000.0, help="events/s of simulated traffic meanwhile")
    args = parser.parse_args()
    with running_server() as server:
        key = server.create_key("ingest")
        conn = sqlite3.connect(Path(server.data_dir) / "outbox.db", timeout=10)
        trial(server.url, key, conn)  # warm-up
        phase("quiet server", server.url, key, conn, args.trials)
        if args.background > 0:
            with background_ingest(server.url, key, args.background):
                phase(f"with {args.background:.0f} events/s ingest", server.url, key, conn, args.trials)
        conn.close()


if __name__ == "__main__":
    main()
