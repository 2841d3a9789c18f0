"""Event to delivery: p50/p99 from a purchase crossing a tier threshold to the message received at each sink.

Run:  .venv/bin/python bench/activation.py [--trials 100] [--background 0]

1. Starts local sinks that speak the vendors' wire formats (``loyalty_cdp.demo_sinks``: an
   aiosmtpd SMTP server, a Twilio-compatible API, an FCM HTTP v1-compatible API, a webhook
   receiver that verifies signatures) and ``loyalty-cdp serve`` on a fresh data directory
   with the example retail program, its tier-upgrade welcome split into one trigger per
   channel (email, SMS, push; a decision picks one channel) and its destinations pointed at
   the sinks.
2. For each trial, a new member: an ``identify`` granting email, SMS and push consent with
   an email, a phone and a push token, then one ``Order Completed`` of $620 (Silver is at
   $500). The clock starts when the order is sent and stops, per channel, when the sink
   receives that member's message (its own arrival clock; same machine). The path: ingest,
   durable append, fold, loyalty (``Tier Upgraded``), the next fold, the trigger, the
   decision and its messages committed to the outbox, the dispatcher's lane, the send.
3. Optionally (``--background``) repeats the trials while a second process streams
   simulated traffic at that many events/s.

Prints p50/p90/p99/max per channel and for "all three delivered"; the target is p99 under 1 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from harness import background_ingest, latency_summary, post_json

from loyalty_cdp.core.messages import is_e164
from loyalty_cdp.demo_sinks import FcmSink, SmtpSink, TwilioSink, WebhookReceiver
from loyalty_cdp.programs import retail_program_path
from loyalty_cdp.testing import ServerProcess

ENV = {"BENCH_TWILIO": "bench-twilio", "BENCH_FCM": "bench-fcm", "BENCH_HOOK": "bench-hook",
       "BENCH_TRACK": "bench-track", "LOYALTY_CDP_AUDIENCE_EVERY_S": "0"}
CONSENT = {"categoryPreferences": {"Email Marketing": True, "SMS Marketing": True, "Push Notifications": True}}
CHANNELS = ("email", "sms", "push")


def write_program(path: Path, server_url: str, smtp: SmtpSink, twilio: TwilioSink, fcm: FcmSink,
                  hook: WebhookReceiver) -> None:
    documents = list(yaml.safe_load_all(retail_program_path().read_text()))
    latest = documents[-1]
    policy = latest["offers"]["contact_policy"]["channels"]
    for channel in ("sms", "push"):
        policy[channel].pop("quiet_hours", None)  # the figures must not depend on the time of day
    welcome = next(o for o in latest["offers"]["catalog"] if o["id"] == "tier-welcome")
    latest["offers"]["catalog"] += [
        {**welcome, "id": "tier-welcome-sms",
         "content": {"sms": {"body": "Northwind: welcome to {{ tier }}! Reply STOP to opt out."}}},
        {**welcome, "id": "tier-welcome-push", "content": {"push": welcome["content"]["push"]}},
    ]
    latest["triggers"] = [
        {"id": f"tier-upgrade-{channel}", "type": "event", "event": "Tier Upgraded", "offers": [offer],
         "channels": [channel]}
        for channel, offer in (("email", "tier-welcome"), ("sms", "tier-welcome-sms"), ("push", "tier-welcome-push"))
    ]
    delivery = {"concurrency": 4, "poll_s": 1.0}
    latest["destinations"] = [
        {"name": "email", "type": "smtp", "delivery": delivery, "settings": {
            "from_address": "rewards@northwind.example", "host": "127.0.0.1", "port": smtp.port, "security": "none",
            "tracking_base_url": server_url, "tracking_secret_env": "BENCH_TRACK"}},
        {"name": "sms", "type": "twilio", "delivery": delivery, "settings": {
            "account_sid": twilio.account_sid, "auth_token_env": "BENCH_TWILIO", "from_number": "+14155550100",
            "base_url": twilio.url}},
        {"name": "push", "type": "fcm", "delivery": delivery, "settings": {
            "project_id": fcm.project_id, "access_token_env": "BENCH_FCM", "base_url": fcm.url}},
        {"name": "crm", "type": "webhook", "delivery": delivery, "settings": {
            "url": f"{hook.url}/decisions", "secret_env": "BENCH_HOOK", "allow_networks": ["127.0.0.0/8"]}},
    ]
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))


def phones() -> Any:
    for n in range(100_000):
        number = f"+1415{2000000 + n:07d}"
        if is_e164(number):
            yield number


def arrival(sinks: tuple[SmtpSink, TwilioSink, FcmSink], email: str, phone: str, token: str) -> dict[str, float]:
    smtp, twilio, fcm = sinks
    found: dict[str, float] = {}
    for at, recipients in list(smtp.arrivals):
        if email in recipients:
            found["email"] = at
    for item in twilio.accepted_items():
        if item.fields.get("To") == phone:
            found["sms"] = item.at
    for item in fcm.accepted_items():
        if item.fields.get("token") == token:
            found["push"] = item.at
    return found


def trial(url: str, key: str, sinks: tuple[SmtpSink, TwilioSink, FcmSink], phone: str) -> dict[str, float]:
    user = f"bench-{uuid.uuid4().hex[:12]}"
    email, token = f"{user}@example.com", f"{user}:APA91b"
    post_json(url, key, "/v1/identify", {"userId": user, "context": {"consent": CONSENT},
                                         "traits": {"first_name": "Bo", "email": email, "phone": phone,
                                                    "push_token": token}})
    time.sleep(0.05)  # the identify is folded before the order, as for a member who enrolled earlier
    started = time.time()
    post_json(url, key, "/v1/track", {"userId": user, "event": "Order Completed", "context": {"channel": "pos"},
                                      "properties": {"order_id": f"o-{user}", "total": 620.0, "currency": "USD",
                                                     "products": [{"product_id": "TV-1", "category": "Electronics",
                                                                   "price": 620.0, "quantity": 1}]}})
    deadline = time.monotonic() + 30
    while len(found := arrival(sinks, email, phone, token)) < len(CHANNELS):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{user}: only {sorted(found)} delivered after 30 s")
        time.sleep(0.002)
    return {channel: (at - started) * 1000 for channel, at in found.items()}


def report(name: str, results: list[dict[str, float]]) -> None:
    print(f"{name} (n={len(results)})")
    for channel in (*CHANNELS, "all three"):
        values = [max(r.values()) if channel == "all three" else r[channel] for r in results]
        print(f"  {channel:<10} {latency_summary(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--background", type=float, default=0.0, help="events/s of simulated traffic meanwhile")
    args = parser.parse_args()
    smtp, twilio = SmtpSink(), TwilioSink(auth_token=ENV["BENCH_TWILIO"], callbacks=False)
    fcm, hook = FcmSink(access_token=ENV["BENCH_FCM"]), WebhookReceiver(secret=ENV["BENCH_HOOK"])
    numbers = phones()
    try:
        with tempfile.TemporaryDirectory(prefix="lcdp-bench-") as tmp:
            program = Path(tmp) / "program.yaml"
            server = ServerProcess(Path(tmp) / "data", ENV, "--config", str(program))
            write_program(program, server.url, smtp, twilio, fcm, hook)
            with server:
                key = server.create_key("ingest")
                trial(server.url, key, (smtp, twilio, fcm), next(numbers))  # warm-up
                report("quiet server", [trial(server.url, key, (smtp, twilio, fcm), next(numbers))
                                        for _ in range(args.trials)])
                if args.background > 0:
                    with background_ingest(server.url, key, args.background):
                        report(f"with {args.background:.0f} events/s ingest",
                               [trial(server.url, key, (smtp, twilio, fcm), next(numbers)) for _ in range(args.trials)])
        if twilio.refused or fcm.refused or hook.refused:
            print(f"refused requests: sms {twilio.refused}, push {fcm.refused}, webhook {hook.refused}",
                  file=sys.stderr)
    finally:
        for sink in (twilio, fcm, hook, smtp):
            sink.stop()


if __name__ == "__main__":
    main()
