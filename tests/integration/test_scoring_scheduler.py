"""The scoring schedule in the server: runs in a child process, one at a time, survives a failing run, skips a
run that would repeat the last one, stops promptly, and derives its settings from the program."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.scorestore import ScoreStore
from loyalty_cdp.bootstrap import open_program
from loyalty_cdp.core.events import normalise, parse_time
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.services.scoring import ScoringScheduler, score_every_s, scoring_config_for
from loyalty_cdp.settings import Settings
from loyalty_cdp.simulator.generator import simulate


def append_simulation(log: SqliteEventLog) -> None:
    calls = list(simulate(150, 120, seed=5))
    log.append([normalise(call, call_type=None, received_at=parse_time(call["timestamp"], "timestamp"),
                          default_message_id=f"sim-{n}") for n, call in enumerate(calls)])


def test_the_interval_comes_from_the_environment() -> None:
    assert score_every_s({}) == 3600.0
    assert score_every_s({"LOYALTY_CDP_SCORE_EVERY_S": "0"}) == 0.0
    assert score_every_s({"LOYALTY_CDP_SCORE_EVERY_S": " 600 "}) == 600.0
    for bad in ("soon", "-5", "0.5", "1e9"):
        with pytest.raises(InvalidInput) as caught:
            score_every_s({"LOYALTY_CDP_SCORE_EVERY_S": bad})
        assert caught.value.field == "LOYALTY_CDP_SCORE_EVERY_S"


def test_the_program_sets_the_threshold_and_the_replenishment_lead() -> None:
    book, decisioning = open_program(Settings.from_env(data_dir=Path("unused")))
    for program in (book, decisioning):
        config = scoring_config_for(program)
        assert config.lapse_threshold == 0.7  # retail.yaml: lapse-risk-win-back, scores.lapse_risk >= 0.7
        assert config.replenishment.lead_days == 2  # retail.yaml: replenishment-reminder
    assert scoring_config_for(None).replenishment.lead_days == 3


def test_a_failing_run_is_counted_and_the_next_one_succeeds_then_an_unchanged_log_is_skipped(tmp_path: Path) -> None:
    settings = Settings.from_env(data_dir=tmp_path)
    log = SqliteEventLog(tmp_path / "events.db")
    store = ScoreStore(tmp_path)
    scheduler = ScoringScheduler(settings, log, store, None, 3600)
    try:
        assert not scheduler.run_once()  # an empty log: nothing to fit yet
        status = scheduler.status()
        assert status["failures"] == 1 and status["runs"] == 1 and not status["running"]
        assert "nothing to fit" in status["last_error"] and status["last_success_at"] is None
        append_simulation(log)
        assert scheduler.run_once()
        status = scheduler.status()
        assert status["last_error"] is None and status["last_members"] > 100 and status["failures"] == 1
        assert status["last_duration_s"] > 0 and status["last_model_version"].startswith("btyd-1-")
        assert store.count() == status["last_members"]
        assert store.last_run() is not None
        assert scheduler.run_once() and scheduler.status()["skipped"] == 1  # nothing new today
        assert scheduler.status()["runs"] == 2
    finally:
        store.close()
        log.close()


def test_the_thread_runs_on_schedule_and_stops_promptly_mid_run(tmp_path: Path) -> None:
    settings = Settings.from_env(data_dir=tmp_path)
    log = SqliteEventLog(tmp_path / "events.db")
    append_simulation(log)
    store = ScoreStore(tmp_path)
    disabled = ScoringScheduler(settings, log, store, None, 0)
    disabled.start()
    assert disabled._thread is None
    scheduler = ScoringScheduler(settings, log, store, None, 3600, first_delay_s=0)
    try:
        scheduler.start()
        deadline = time.monotonic() + 30
        while not scheduler.status()["running"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scheduler.status()["running"]
        started = time.monotonic()
        scheduler.stop()
        assert time.monotonic() - started < 5
        status = scheduler.status()
        assert not status["running"] and status["runs"] == 1
        assert status["failures"] == 1 or status["last_success_at"] is not None
        assert scheduler._child is None
    finally:
        scheduler.stop()
        store.close()
        log.close()
