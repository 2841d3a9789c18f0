"""Scores reach the profile: ``loyalty-cdp score`` runs beside a live server and the member API shows them."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from loyalty_cdp.testing import ServerProcess, run_cli


def test_score_job_beside_the_server_fills_the_profiles_scores(tmp_path: Path) -> None:
    simulated = tmp_path / "sim.jsonl"
    assert run_cli("simulate", "--members", "60", "--days", "200", "--seed", "8", "--out", str(simulated),
                   "--start", "2026-01-01").returncode == 0
    server = ServerProcess(tmp_path / "data")
    ingest, read = server.create_key("ingest"), server.create_key("read")
    with server:
        assert run_cli("import", str(simulated), "--target", server.url, "--write-key", ingest).returncode == 0
        deadline = time.monotonic() + 60
        while "lcdp_processor_lag_events 0.0" not in httpx.get(server.url + "/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        scored = run_cli("score", "--data-dir", str(server.data_dir), "--as-of", "2026-07-20")
        assert scored.returncode == 0, scored.stderr
        user_ids = [line.split('"userId":"')[1].split('"')[0] for line in simulated.read_text().splitlines()
                    if '"type":"identify"' in line and '"userId":"' in line]
        found = refused = 0
        for user_id in dict.fromkeys(user_ids):
            answer = httpx.get(f"{server.url}/v1/members/{user_id}", headers={"Authorization": f"Bearer {read}"})
            scores = answer.json()["scores"] if answer.status_code == 200 else {}
            if scores and not scores["scored_for_targeting"]:  # refused Personalization: no prediction kept
                refused += 1
                assert "p_alive" not in scores and scores["explanation"][0]["code"] == "admt_opt_out"
            elif scores:
                found += 1
                assert {"p_alive", "lapse_risk", "expected_purchases_90d", "clv"} <= set(scores)
                assert 0.0 <= scores["p_alive"] <= 1.0 and 0.0 <= scores["lapse_risk"] <= 1.0
                assert scores["explanation"] and scores["model_version"]
        assert found >= 20 and refused >= 1
