"""Predictions inside the running server: the scheduled scoring job, then a purchase refreshing one member."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from loyalty_cdp.testing import ServerProcess, run_cli, wait_for


def test_the_server_scores_on_schedule_and_refreshes_lapse_risk_on_purchase(tmp_path: Path) -> None:
    simulated = tmp_path / "sim.jsonl"
    assert run_cli("simulate", "--members", "60", "--days", "200", "--seed", "8", "--out", str(simulated),
                   "--start", "2026-03-01").returncode == 0
    loading = ServerProcess(tmp_path / "data")
    ingest, read = loading.create_key("ingest"), loading.create_key("read")
    bearer = {"Authorization": f"Bearer {read}"}
    with loading:
        assert run_cli("import", str(simulated), "--target", loading.url, "--write-key", ingest).returncode == 0
    # Hourly: the first run comes 5 s after start, the next not within this test, so what changes
    # a member's scores after that is the refresh on purchase alone.
    server = ServerProcess(tmp_path / "data", {"LOYALTY_CDP_SCORE_EVERY_S": "3600"})
    with server:
        status = wait_for(lambda: (s := httpx.get(server.url + "/healthz").json()["scoring"])["last_members"] and s,
                          "the first scheduled run", timeout=120)
        assert status["failures"] == 0 and status["last_members"] >= 20
        assert "lcdp_scoring_runs_total" in httpx.get(server.url + "/metrics").text

        user_ids = dict.fromkeys(line.split('"userId":"')[1].split('"')[0] for line in simulated.read_text().splitlines()
                                 if '"type":"identify"' in line and '"userId":"' in line)

        def scored_member() -> tuple[str, dict[str, Any]] | None:
            for user_id in user_ids:
                scores = httpx.get(f"{server.url}/v1/members/{user_id}", headers=bearer).json().get("scores") or {}
                if scores.get("scored_for_targeting") and scores.get("lapse_risk", 0) > 0.2:
                    return user_id, scores
            return None

        user_id, before = wait_for(scored_member)
        order = {"userId": user_id, "event": "Order Completed",
                 "properties": {"order_id": "scheduled-scoring-1", "total": 42.0, "currency": "USD",
                                "products": [{"product_id": "p1", "category": "Coffee", "price": 42.0, "quantity": 1}]}}
        assert httpx.post(server.url + "/v1/track", json=order, auth=(ingest, "")).status_code == 200

        def refreshed() -> dict[str, Any] | None:
            scores = httpx.get(f"{server.url}/v1/members/{user_id}", headers=bearer).json()["scores"]
            return scores if scores["lapse_risk"] < before["lapse_risk"] else None

        after = wait_for(refreshed, timeout=30)
        assert after["p_alive"] > before["p_alive"]
        assert after["scored_at"] == before["scored_at"] and after["model_version"] == before["model_version"]
        assert httpx.get(server.url + "/healthz").json()["scoring"]["runs"] == 1
