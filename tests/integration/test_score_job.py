"""``loyalty-cdp score`` over real files: orders as of a date, scores stored, lapse alerts once, back-tests apart.

A data directory is filled the way the server fills it (event log appended, processor folding
into ``profiles.db``); the job then runs beside a processor thread that keeps folding new
events, as it would beside ``loyalty-cdp serve``.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import typer
from typer.testing import CliRunner

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.adapters.scorestore import ScoreStore
from loyalty_cdp.cli.score import parse_as_of, score
from loyalty_cdp.core.events import Event, format_time, normalise, parse_time
from loyalty_cdp.core.predictions.explain import LAPSE_CODES
from loyalty_cdp.services.processor import Processor
from loyalty_cdp.services.scoring import read_admt_opt_outs, read_history, read_identities, run_scoring
from loyalty_cdp.settings import Settings
from loyalty_cdp.simulator.generator import simulate

FIRST_RUN, SECOND_RUN, BACKTEST = "2026-04-10", "2026-05-30", "2026-03-01"
NOW = parse_as_of("2026-06-01")


def lapse_alerts(log: SqliteEventLog) -> list[dict[str, object]]:
    alerts, after = [], 0
    while batch := log.read(after):
        after = batch[-1].offset
        alerts += [msgspec.json.decode(e.body) for e in batch if e.event == "Lapse Risk Detected"]
    return alerts


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return [
        normalise(call, call_type=None, received_at=parse_time(call["timestamp"], "timestamp"),
                  default_message_id=f"sim-{n}")
        for n, call in enumerate(simulate(250, 150, seed=17))
    ]


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory, events: list[Event]) -> Path:
    """A data directory with the log and the profiles of the events up to the second run's date."""
    directory = tmp_path_factory.mktemp("folded")
    cut = parse_as_of(SECOND_RUN)
    log = SqliteEventLog(directory / "events.db")
    log.append([e for e in events if e.timestamp <= cut])
    store = SqliteProfileStore(directory / "profiles.db")
    Processor(log, store).catch_up()
    store.close()
    log.close()
    return directory


@pytest.fixture
def data_dir(folded: Path, tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "data"
    shutil.copytree(folded, directory)
    yield directory


def test_orders_are_read_as_of_the_date_and_attributed_through_identity(data_dir: Path, events: list[Event]) -> None:
    log = SqliteEventLog(data_dir / "events.db")
    identities = read_identities(data_dir / "profiles.db")
    as_of = parse_as_of(FIRST_RUN)
    history, unattributed = read_history(log, identities, as_of)
    orders = [e for e in events if e.event == "Order Completed" and e.timestamp <= as_of]
    assert unattributed == 0
    assert history.order_time.size == len(orders) and history.order_time.max() <= as_of
    pos_orders = [e for e in orders if e.user_id is None]
    assert pos_orders  # POS orders carry only the POS customer id: the identity table names their member
    assert set(history.member_ids.tolist()) <= {m for m in identities.owner.values()}
    log.close()


def test_two_runs_store_scores_and_raise_each_lapse_alert_once(data_dir: Path, events: list[Event]) -> None:
    settings = Settings(data_dir=data_dir)
    first = run_scoring(settings, as_of_ms=parse_as_of(FIRST_RUN), now_ms=NOW)
    assert first.alerts_appended == 0 and not first.backtest  # the first run is the baseline
    store = ScoreStore(data_dir)
    before = store.lapse_risks()

    # The server keeps running: its processor folds the events after the second run's date meanwhile.
    log = SqliteEventLog(data_dir / "events.db")
    processor = Processor(log, SqliteProfileStore(data_dir / "profiles.db"))
    processor.start()
    later = [e for e in events if e.timestamp > parse_as_of(SECOND_RUN)]
    appender = threading.Thread(target=lambda: [log.append(later[i:i + 500]) for i in range(0, len(later), 500)])
    appender.start()
    second = run_scoring(settings, as_of_ms=parse_as_of(SECOND_RUN), now_ms=NOW)
    appender.join()
    processor.stop()
    processor.close()

    after = store.lapse_risks()
    crossed = {m for m, risk in after.items() if risk >= 0.7 and before.get(m, 0.0) < 0.7}
    assert crossed and second.alerts_appended == len(crossed)
    alerts = lapse_alerts(log)
    assert {a["userId"] for a in alerts} == crossed
    alert = alerts[0]
    member = store.get(str(alert["userId"]))
    assert member is not None and member["model_version"] == second.model_version
    assert alert["context"] == {"channel": "predictions"}
    assert alert["timestamp"] == "2026-05-30T23:59:59.999Z"
    assert alert["properties"] == {
        "lapse_risk": round(member["lapse_risk"], 4), "p_alive": round(member["p_alive"], 4), "threshold": 0.7,
        "model_version": second.model_version,
        "reasons": [r["text"] for r in member["explanation"] if r["code"] in LAPSE_CODES],
    }
    assert {"p_alive", "lapse_risk", "expected_purchases_90d", "clv"} <= member.keys()

    again = run_scoring(settings, as_of_ms=parse_as_of(SECOND_RUN), now_ms=NOW)
    assert again.alerts_appended == 0 and len(lapse_alerts(log)) == len(alerts)
    assert (data_dir / "models" / f"{second.model_version}.json").is_file()
    log.close()


def test_members_who_refused_automated_decisions_are_not_scored_for_targeting(data_dir: Path) -> None:
    log = SqliteEventLog(data_dir / "events.db")
    store = SqliteProfileStore(data_dir / "profiles.db")
    Processor(log, store).catch_up()
    store.close()
    identities = read_identities(data_dir / "profiles.db")
    # Simulated members answer the consent banner: some refused Personalization from the start.
    already = read_admt_opt_outs(data_dir / "profiles.db")
    refusing, agreeing = [user for user in sorted(identities.user_id.values()) if user not in already][:2]
    at = parse_as_of(FIRST_RUN)
    consent = [
        normalise({"type": "track", "event": "Consent Updated", "userId": user_id, "messageId": f"consent-{user_id}",
                   "timestamp": format_time(at), "properties": {"purpose": "profiling", "granted": granted}},
                  call_type=None, received_at=at, default_message_id="unused")
        for user_id, granted in ((refusing, False), (agreeing, True))
    ]
    log.append(consent)
    store = SqliteProfileStore(data_dir / "profiles.db")
    Processor(log, store).catch_up()
    store.close()
    assert read_admt_opt_outs(data_dir / "profiles.db") == already | {refusing}
    report = run_scoring(Settings(data_dir=data_dir), as_of_ms=parse_as_of(SECOND_RUN), now_ms=NOW)
    scores = ScoreStore(data_dir)
    refused = scores.get(refusing)
    assert refused is not None and refused["scored_for_targeting"] is False and "lapse_risk" not in refused
    assert refused["explanation"][0]["code"] == "admt_opt_out"
    assert scores.get(agreeing)["scored_for_targeting"] is True  # type: ignore[index]
    scored_refusing = [row for row in (scores.get(m) for m in already | {refusing}) if row is not None]
    assert all(row["scored_for_targeting"] is False for row in scored_refusing)
    assert report.scored_for_targeting == report.members - len(scored_refusing)
    log.close()


def test_a_backtest_leaves_the_live_scores_alone(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir)
    live = run_scoring(settings, as_of_ms=parse_as_of(SECOND_RUN), now_ms=NOW)
    past = run_scoring(settings, as_of_ms=parse_as_of(BACKTEST), now_ms=NOW)
    assert past.backtest and past.alerts_appended == 0
    assert past.store_dir == data_dir / "backtests" / BACKTEST
    assert ScoreStore(data_dir).last_run().model_version == live.model_version  # type: ignore[union-attr]
    assert ScoreStore(past.store_dir).last_run().model_version == past.model_version  # type: ignore[union-attr]
    assert past.members < live.members


def test_the_command(data_dir: Path) -> None:
    app = typer.Typer()
    app.command()(score)
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "--as-of", SECOND_RUN])
    assert result.exit_code == 0, result.output
    assert "as of 2026-05-30T23:59:59.999Z with model btyd-1-2026-05-30-" in result.output
    assert ScoreStore(data_dir).count() > 200
    future = CliRunner().invoke(app, ["--data-dir", str(data_dir), "--as-of", "2999-01-01"])
    assert future.exit_code != 0 and "in the future" in str(future.exception)
