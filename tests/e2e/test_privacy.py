"""Data-subject rights over HTTP against a real server: erasure leaves no trace anywhere, access exports
every event, opt-outs reach the profile and the scoring job, and bad requests change nothing."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from loyalty_cdp.adapters.audit import AuditLog
from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.keystore import KeyStore
from loyalty_cdp.core.events import normalise
from loyalty_cdp.testing import ServerProcess, run_cli, wait_for

# The person: every identifier and a distinctive trait, each in every form a client may send or a store may keep.
USER_ID = "zq-member-7781"
EMAIL = "Zelda.Quill-zq@Example.org"
PHONE = "+1 415 555 0199"
CARD = "7000 4444 5555"
WEB_ANON = "zq-web-anon-1"
POS_ANONS = ["zq-pos-txn-1", "zq-pos-txn-2", "zq-pos-txn-3"]
APP_ANON = "zq-app-install-1"
FIRST_NAME = "Zqelda"
TRACES = [USER_ID, EMAIL, EMAIL.lower(), PHONE, "+14155550199", "4155550199", CARD, "700044445555",
          "7000-4444-5555", WEB_ANON, *POS_ANONS, APP_ANON, FIRST_NAME]


def days_ago(days: int, hour: int = 10) -> str:
    moment = datetime.now(UTC).replace(hour=hour, minute=0, second=0, microsecond=0) - timedelta(days=days)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def order(anonymous_id: str, number: int, total: float, days: int, card: str | None = None,
          user_id: str | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "order_id": f"{anonymous_id}-o{number}", "total": total, "currency": "USD",
        "products": [{"product_id": "cof-1", "sku": "COF-1", "category": "Coffee", "brand": "Bean Co",
                      "price": total, "quantity": 1}]}
    if card is not None:
        properties["loyalty_card_number"] = card
    call = {"type": "track", "event": "Order Completed", "timestamp": days_ago(days), "context": {"channel": "pos"},
            "properties": properties, "messageId": f"msg-{anonymous_id}-{number}"}
    call |= {"userId": user_id} if user_id else {"anonymousId": anonymous_id}
    return call


def person_calls() -> list[dict[str, Any]]:
    """What the person sends: anonymous browsing, a web login, POS purchases by card, an app session."""
    web = {"context": {"channel": "web"}}
    return [
        {"type": "page", "anonymousId": WEB_ANON, "name": "Coffee", "timestamp": days_ago(200, 8),
         "messageId": "msg-p-1", **web},
        {"type": "track", "anonymousId": WEB_ANON, "event": "Product Viewed", "timestamp": days_ago(200, 9),
         "messageId": "msg-p-2", "properties": {"product_id": "cof-1", "category": "Coffee"}, **web},
        {"type": "identify", "anonymousId": WEB_ANON, "userId": USER_ID, "timestamp": days_ago(199),
         "messageId": "msg-p-3", "traits": {"email": EMAIL, "phone": PHONE, "card_number": CARD,
                                            "first_name": FIRST_NAME}, **web},
        order(POS_ANONS[0], 1, 400.0, 160, card=CARD),
        order(POS_ANONS[1], 2, 350.0, 120, card=CARD),
        order(POS_ANONS[2], 3, 300.0, 80, card=CARD),
        {"type": "track", "userId": USER_ID, "anonymousId": APP_ANON, "event": "Application Opened",
         "timestamp": days_ago(60), "messageId": "msg-p-7", "context": {"channel": "app"}},
    ]


def population() -> list[dict[str, Any]]:
    """Other members, so that the scoring job has a population to fit."""
    return [order(f"other-{n}", k, 40.0 + n, 30 + 45 * k + n, user_id=f"other-{n}")
            for n in range(25) for k in range(3)]


def make_keys(data_dir: Path) -> dict[str, str]:
    """One key per scope, made in-process (a running server sees new keys on its next request)."""
    store = KeyStore(data_dir / "keys.db")
    try:
        return {scope: store.create(frozenset({scope}))[0] for scope in ("ingest", "read", "loyalty", "privacy", "admin")}
    finally:
        store.close()


@pytest.fixture()
def keys(server: ServerProcess) -> dict[str, str]:
    return make_keys(server.data_dir)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    """One server holding the person, for the tests that change nothing about them."""
    server = ServerProcess(tmp_path_factory.mktemp("shared") / "data")
    keys = make_keys(server.data_dir)
    with server:
        send(server, keys["ingest"], person_calls() + population()[:6])
        wait_for(lambda: httpx.get(server.url + f"/v1/members/{USER_ID}", headers=bearer(keys["read"])).json()
                 .get("signals", {}).get("purchase", {}).get("orders") == 3)
        caught_up(server)
        yield server, keys


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, name
    return float(found.group(1))


def caught_up(server: ServerProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while metric(server, "lcdp_processor_lag_events") > 0 or metric(server, "lcdp_ingest_queue_events") > 0:
        assert time.monotonic() < deadline, "the processor did not catch up"
        time.sleep(0.05)


def send(server: ServerProcess, key: str, calls: list[dict[str, Any]]) -> None:
    answer = httpx.post(server.url + "/v1/batch", json={"batch": calls}, auth=(key, ""))
    assert answer.status_code == 200, answer.text


def privacy_request(server: ServerProcess, key: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/privacy/requests", json=body, headers={**bearer(key), **headers}, timeout=30)


def lookups(server: ServerProcess, key: str) -> dict[tuple[str, str], int]:
    pairs = [("user_id", USER_ID), ("email", EMAIL), ("phone", PHONE), ("card", CARD), ("anonymous_id", WEB_ANON),
             ("anonymous_id", APP_ANON), *[("anonymous_id", a) for a in POS_ANONS]]
    return {(kind, value): httpx.get(server.url + "/v1/members/lookup", params={"type": kind, "value": value},
                                     headers=bearer(key)).status_code for kind, value in pairs}


def traces_in(data_dir: Path) -> list[str]:
    """Every file under the data directory (databases, WALs, shared memory, models, anything) holding a trace."""
    found = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        content = path.read_bytes()
        found += [f"{path.relative_to(data_dir)}: {trace!r}" for trace in TRACES if trace.encode() in content]
    return found


def test_erasure_removes_every_trace_keeps_the_person_out_and_survives_replay(
        server: ServerProcess, keys: dict[str, str]) -> None:
    send(server, keys["ingest"], person_calls() + population())
    wait_for(lambda: httpx.get(server.url + f"/v1/members/{USER_ID}", headers=bearer(keys["read"])).json()
             .get("loyalty", {}).get("points_balance", 0) >= 500)
    redeemed = httpx.post(server.url + f"/v1/members/{USER_ID}/redemptions", json={"reward_id": "five-off"},
                          headers={**bearer(keys["loyalty"]), "Idempotency-Key": "checkout-1"})
    assert redeemed.status_code == 201, redeemed.text
    caught_up(server)
    scored = run_cli("score", "--data-dir", str(server.data_dir))
    assert scored.returncode == 0, scored.stderr
    profile = httpx.get(server.url + f"/v1/members/{USER_ID}", headers=bearer(keys["read"])).json()
    assert profile["scores"]["p_alive"] is not None and profile["loyalty"]["redeemed_points"] == 500
    earlier = privacy_request(server, keys["privacy"], {"type": "access", "identifier": {"type": "phone",
                                                                                        "value": PHONE}})
    assert earlier.status_code == 201 and earlier.json()["identifier"]["value"] == "+14155550199"
    assert traces_in(server.data_dir), "the scan must see the person before the erasure"

    started = time.perf_counter()
    erased = privacy_request(server, keys["privacy"], {"type": "erasure", "regime": "gdpr",
                                                       "identifier": {"type": "email", "value": f" {EMAIL} "}})
    erasure_s = time.perf_counter() - started
    assert erased.status_code == 201, erased.text
    # Suppression is the erasure's first step, so it was in force before the answer came back.
    assert erasure_s < 1.0, f"erasure took {erasure_s:.3f}s"
    status = httpx.get(server.url + f"/v1/privacy/requests/{erased.json()['id']}", headers=bearer(keys["privacy"]))
    body = status.json()
    assert body["status"] == "completed" and body["identifier"]["redacted"] and not body["overdue"]
    received = datetime.fromisoformat(body["received_at"].replace("Z", "+00:00"))
    deadline = datetime.fromisoformat(body["deadline"].replace("Z", "+00:00"))
    assert 28 <= (deadline - received).days <= 31  # GDPR: one calendar month
    result = body["result"]
    assert result["member_found"] and result["events_deleted"] >= 8 and result["scores_deleted"] >= 1
    assert result["identifiers_suppressed"] >= 9 and result["requests_redacted"] >= 1
    assert result["liability_points_anonymised"] > 0
    assert result["suppressed_in_s"] < 1.0
    print(f"\nerasure: suppression in force {result['suppressed_in_s'] * 1000:.1f} ms into the request, every store "
          f"purged {result['purged_in_s'] * 1000:.0f} ms later, answered in {erasure_s * 1000:.0f} ms over HTTP; "
          f"{result['events_deleted']} events, {result['scores_deleted']} score rows")

    liability = httpx.get(server.url + "/v1/reports/liability/erased",
                          headers=bearer(keys["admin"])).json()
    assert liability["totals"][0]["members"] == 1
    assert liability["totals"][0]["outstanding_points"] == result["liability_points_anonymised"]

    again = [dict(call, messageId=f"new-{n}") for n, call in enumerate(person_calls())]
    send(server, keys["ingest"], again)
    for call in again:  # one at a time too, through the single-call endpoints
        answer = httpx.post(server.url + f"/v1/{call['type']}", json=dict(call, messageId="one-" + call["messageId"]),
                            auth=(keys["ingest"], ""))
        assert answer.status_code == 200
    caught_up(server)
    log = SqliteEventLog(server.data_dir / "events.db")
    try:
        stored = log.read_member([USER_ID], [WEB_ANON, APP_ANON, *POS_ANONS])
    finally:
        log.close()
    assert stored == [], "an erased person's new events were stored"
    assert set(lookups(server, keys["read"]).values()) == {404}
    assert traces_in(server.data_dir) == []

    server.stop()
    assert traces_in(server.data_dir) == []
    replayed = run_cli("replay", "--data-dir", str(server.data_dir))
    assert replayed.returncode == 0, replayed.stderr
    assert "into 25 profiles" in replayed.stdout, replayed.stdout  # everyone else is back; the person is not
    assert traces_in(server.data_dir) == []


def test_access_export_holds_every_event_of_every_channel(shared: tuple[ServerProcess, dict[str, str]]) -> None:
    server, keys = shared
    calls = person_calls()
    made = privacy_request(server, keys["privacy"], {"type": "access", "identifier": {"type": "card", "value": CARD}})
    assert made.status_code == 201 and made.json()["status"] == "completed", made.text
    export = httpx.get(server.url + made.json()["result"]["export"], headers=bearer(keys["privacy"])).json()
    assert export["member_found"] and export["profile"]["user_id"] == USER_ID
    sent = {call["messageId"] for call in calls}
    held = {event["messageId"]: event for event in export["events"]}
    assert sent <= set(held), sent - set(held)
    assert {held[m]["context"].get("channel") for m in sent} == {"web", "pos", "app"}
    assert {"Points Earned"} <= {e.get("event") for e in export["events"] if e["messageId"] not in sent}
    assert not any(e.get("userId", "").startswith("other-") for e in export["events"])
    assert set(export["identities"]) >= {"user_id", "email", "phone", "card", "anonymous_id"}
    assert any(record["action"] == "merge" for record in export["identity_history"])
    assert export["loyalty"]["enrolled"] and export["loyalty"]["summary"]["lifetime_points"] > 0
    assert export["consent"]["policy"] == "strict" and "profiling" in export["consent"]["purposes"]
    assert export["format"] == 2  # decisions, messages, segments and audiences are read (test_privacy_decisions.py)
    assert all(d["user_id"] == USER_ID for d in export["decisions"]["records"])
    assert {d["decision_id"] for d in export["decisions"]["records"]} == {
        d["decision_id"] for d in export["admt"]["decisions"]}
    assert isinstance(export["messages"]["records"], list) and isinstance(export["audiences"]["records"], list)
    assert isinstance(export["segments"]["current"], list) and isinstance(export["segments"]["history"], list)
    assert made.json()["id"] in [r["id"] for r in export["privacy_requests"]]
    nobody = privacy_request(server, keys["privacy"], {"type": "access",
                                                       "identifier": {"type": "email", "value": "no@one.example"}})
    assert httpx.get(server.url + nobody.json()["result"]["export"],
                     headers=bearer(keys["privacy"])).json()["member_found"] is False


def test_admt_access_opt_outs_and_correction(
        server: ServerProcess, keys: dict[str, str]) -> None:
    send(server, keys["ingest"], person_calls() + population())
    wait_for(lambda: httpx.get(server.url + f"/v1/members/{USER_ID}", headers=bearer(keys["read"])).json()
             .get("signals", {}).get("purchase", {}).get("orders") == 3)
    caught_up(server)
    assert run_cli("score", "--data-dir", str(server.data_dir)).returncode == 0
    before = httpx.get(server.url + f"/v1/members/{USER_ID}", headers=bearer(keys["read"])).json()["scores"]
    assert before["scored_for_targeting"] is True
    account = admt_account(server, keys["privacy"], {"type": "user_id", "value": USER_ID})
    assert account["profiling_allowed"] is True and account["scored_for_targeting"] is True
    names = {score["name"]: score for score in account["scores"]}
    assert names["lapse_risk"]["meaning"] == "the estimated risk that you stop buying from us"
    assert names["lapse_risk"]["explanation"] and names["lapse_risk"]["model_version"] == before["model_version"]
    assert "decisions_note" not in account
    assert all(d["summary"] and d["reason"] and isinstance(d["rule_based_only"], bool) for d in account["decisions"])

    for kind, identifier in (("opt_out_sale", {"type": "phone", "value": "(415) 555-0199"}),
                             ("opt_out_admt", {"type": "user_id", "value": USER_ID})):
        made = privacy_request(server, keys["privacy"], {"type": kind, "identifier": identifier, "regime": "ccpa"})
        assert made.status_code == 201 and made.json()["status"] == "completed", made.text
    member = httpx.get(server.url + f"/v1/members/{USER_ID}", headers=bearer(keys["read"])).json()
    for purpose in ("sale_sharing", "profiling"):  # Profile.consent: [history, ...]; a record: [granted, at, id, source, ...]
        history = member["consent"][purpose][0]
        assert [(r[0], r[3]) for r in history if r[2].startswith("privacy-pr_")] == [(False, "privacy_request")]
    assert member["scores"] == {}  # no propensity score is used from the opt-out on

    assert run_cli("score", "--data-dir", str(server.data_dir)).returncode == 0
    after = httpx.get(server.url + f"/v1/members/{USER_ID}", headers=bearer(keys["read"])).json()["scores"]
    assert after["scored_for_targeting"] is False and after.get("p_alive") is None
    other = httpx.get(server.url + "/v1/members/other-1", headers=bearer(keys["read"])).json()["scores"]
    assert other["scored_for_targeting"] is True
    account = admt_account(server, keys["privacy"], {"type": "email", "value": EMAIL})
    assert account["profiling_allowed"] is False and account["scored_for_targeting"] is False
    assert "opted out" in account["status"] and account["scores"] == []

    consent_url = server.url + f"/v1/members/{USER_ID}/consent"
    once = {**bearer(keys["privacy"]), "Idempotency-Key": "preferences-1"}
    change = {"purpose": "profiling", "granted": True, "source": "preference_center"}
    granted = httpx.post(consent_url, headers=once, json=change)
    assert granted.status_code == 200, granted.text
    assert granted.json()["consent"]["profiling"]["granted"] is True
    repeated = httpx.post(consent_url, headers=once, json=change)
    assert repeated.status_code == 200 and repeated.json()["message_id"] == granted.json()["message_id"]
    assert httpx.post(consent_url, headers=once, json={**change, "granted": False}).status_code == 409

    corrected = privacy_request(server, keys["privacy"], {"type": "correction", "identifier": {"type": "card",
                                                                                             "value": CARD},
                                                          "corrections": {"first_name": "Zoe", "nickname": None}})
    assert corrected.status_code == 201 and corrected.json()["result"]["corrected"] == ["first_name", "nickname"]
    traits = httpx.get(server.url + f"/v1/members/{USER_ID}", headers=bearer(keys["read"])).json()["traits"]
    assert traits["first_name"] == "Zoe" and traits["nickname"] is None and traits["email"] == EMAIL


def admt_account(server: ServerProcess, key: str, identifier: dict[str, str]) -> dict[str, Any]:
    made = privacy_request(server, key, {"type": "admt_access", "identifier": identifier})
    assert made.status_code == 201 and made.json()["status"] == "completed", made.text
    return httpx.get(server.url + made.json()["result"]["export"], headers=bearer(key)).json()


def test_bad_requests_get_a_clear_4xx_and_change_nothing(shared: tuple[ServerProcess, dict[str, str]]) -> None:
    server, keys = shared
    url = server.url + "/v1/privacy/requests"
    privacy = bearer(keys["privacy"])
    requests_before = httpx.get(url, headers=privacy).json()["requests"]
    member_before = httpx.get(server.url + f"/v1/members/{USER_ID}", headers=bearer(keys["read"])).json()
    cases = [
        ({"type": "forget_me", "identifier": {"type": "email", "value": EMAIL}}, 400, "type"),
        ({"type": "erasure", "identifier": {"type": "shoe_size", "value": "9"}}, 400, "identifier.type"),
        ({"type": "erasure", "identifier": {"type": "email"}}, 400, "identifier.value"),
        ({"type": "erasure", "identifier": {"type": "email", "value": "not-an-email"}}, 400, "identifier.value"),
        ({"type": "erasure"}, 400, "identifier"),
        ({"type": "erasure", "identifier": {"type": "email", "value": EMAIL}, "regime": "lgpd"}, 400, "regime"),
        ({"type": "correction", "identifier": {"type": "email", "value": EMAIL}}, 400, "corrections"),
    ]
    for body, status, field in cases:
        answer = httpx.post(url, json=body, headers=privacy)
        assert answer.status_code == status and answer.json()["field"] == field, (body, answer.text)
    broken = httpx.post(url, content=b"{not json", headers={**privacy, "Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["field"] == "body"
    erasure = {"type": "erasure", "identifier": {"type": "email", "value": EMAIL}}
    assert httpx.post(url, json=erasure, headers=bearer(keys["read"])).status_code == 403
    assert httpx.post(url, json=erasure).status_code == 401
    assert httpx.post(url, json=erasure, headers=bearer("lcdp_" + "0" * 43)).status_code == 401
    assert httpx.get(url + "/pr_0000000000000000", headers=privacy).status_code == 404
    consent = server.url + f"/v1/members/{USER_ID}/consent"
    assert httpx.post(consent, json={"purpose": "telepathy", "granted": False}, headers=privacy).json()["field"] \
        == "purpose"
    assert httpx.post(consent, json={"purpose": "sms", "granted": "no"}, headers=privacy).json()["field"] == "granted"
    assert httpx.post(consent, json={"purpose": "sms", "granted": False}, headers=bearer(keys["ingest"])) \
        .status_code == 403
    assert httpx.post(server.url + "/v1/members/nobody/consent", json={"purpose": "sms", "granted": False},
                      headers=privacy).status_code == 404
    # Nothing changed: no request stored, the member as it was, no consent recorded.
    assert httpx.get(url, headers=privacy).json()["requests"] == requests_before
    member = httpx.get(server.url + f"/v1/members/{USER_ID}", headers=bearer(keys["read"])).json()
    assert member["consent"] == member_before["consent"] == {}
    assert member["identities"] == member_before["identities"] and member["traits"] == member_before["traits"]
    # The same Idempotency-Key for a different request is a conflict; for the same one, the stored answer.
    first = privacy_request(server, keys["privacy"], {"type": "access", "identifier": {"type": "email",
                                                                                      "value": EMAIL}}, **{
        "Idempotency-Key": "ticket-1"})
    repeat = privacy_request(server, keys["privacy"], {"type": "access", "identifier": {"type": "email",
                                                                                       "value": EMAIL}}, **{
        "Idempotency-Key": "ticket-1"})
    assert first.status_code == 201 and repeat.status_code == 200 and repeat.json()["id"] == first.json()["id"]
    other = privacy_request(server, keys["privacy"], erasure, **{"Idempotency-Key": "ticket-1"})
    assert other.status_code == 409
    assert httpx.get(server.url + f"/v1/members/{USER_ID}", headers=bearer(keys["read"])).status_code == 200


def test_the_cli_serves_requests_remotely_and_on_a_stopped_servers_data(
        shared: tuple[ServerProcess, dict[str, str]], tmp_path: Path) -> None:
    server, keys = shared
    remote = run_cli("privacy", "request", "--type", "access", "--identifier-type", "email", "--value", EMAIL,
                     "--target", server.url, "--key", keys["privacy"])
    assert remote.returncode == 0, remote.stderr
    answered = json.loads(remote.stdout)
    assert answered["status"] == "completed" and answered["result"]["events"] >= len(person_calls())
    audit = AuditLog(server.data_dir / "audit.db")
    try:
        assert audit.list(subject=answered["id"], limit=10)[-1].action == "privacy.access.completed"
    finally:
        audit.close()

    # A data directory no server has processed yet: the command folds the log itself, then erases.
    data = tmp_path / "data"
    data.mkdir()
    log = SqliteEventLog(data / "events.db")
    try:
        log.append([normalise(call, call_type=None, received_at=int(time.time() * 1000),
                              default_message_id=call["messageId"]) for call in person_calls()])
    finally:
        log.close()
    local = run_cli("privacy", "request", "--type", "erasure", "--identifier-type", "card", "--value", CARD,
                    "--data-dir", str(data))
    assert local.returncode == 0, local.stderr
    erased = json.loads(local.stdout)
    assert erased["status"] == "completed" and erased["result"]["events_deleted"] >= len(person_calls())
    # The command folds with the program's decisioning and erases from the decision store too (the $750 of
    # orders crossed Silver: a tier-upgrade decision, too old to be delivered).
    assert erased["result"]["decisions_deleted"] >= 1, erased["result"]
    assert set(erased["result"]["destinations_notified"]) == {"crm-webhook"}  # the example's (no receiver here)
    assert traces_in(data) == []
    audit = AuditLog(data / "audit.db")
    try:
        assert [(e.actor, e.action) for e in audit.list()] == [("cli", "privacy.erasure.received"),
                                                              ("cli", "privacy.erasure.completed")]
        assert audit.verify().ok
    finally:
        audit.close()
