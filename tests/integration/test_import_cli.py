"""Getting events in: ``import`` into the event log or a server, and ``/v1/batch`` streaming.

Streaming is checked against a tiny HTTP server started in the test (it checks the Basic
auth header and records every batch, or answers what the test scripts), and ``import
--target`` once against a real ``loyalty-cdp serve``.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import deque
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest
import typer
from typer.testing import CliRunner, Result

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.cli.importer import import_file
from loyalty_cdp.cli.simulate import simulate as simulate_command
from loyalty_cdp.errors import Forbidden, InvalidInput, StorageUnavailable, Unauthorized
from loyalty_cdp.simulator import simulate
from loyalty_cdp.simulator.streaming import BatchSender, batch_url
from loyalty_cdp.testing import SYSTEM_CHANNELS, ServerProcess, free_port, run_cli

WRITE_KEY = "wk_test"


class BatchServer:
    """Records the batches posted with the right key; answers scripted statuses first."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.body_sizes: list[int] = []
        self.scripted: deque[tuple[int, dict[str, str], bytes]] = deque()
        self.requests = 0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.requests += 1
                expected = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
                answer = b'{"success": true}'
                if recorder.scripted:
                    status, headers, answer = recorder.scripted.popleft()
                elif self.path != "/v1/batch" or self.headers["Authorization"] != expected:
                    status, headers, answer = 401, {}, b'{"success": false}'
                else:
                    status, headers = 200, {}
                    recorder.batches.append(json.loads(body)["batch"])
                    recorder.body_sizes.append(len(body))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"

    @property
    def calls(self) -> list[dict[str, Any]]:
        return [call for batch in self.batches for call in batch]


@pytest.fixture()
def server() -> Iterator[BatchServer]:
    recorder = BatchServer()
    thread = threading.Thread(target=recorder.http.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        recorder.http.shutdown()
        recorder.http.server_close()
        thread.join()


def calls(count: int, padding: int = 0) -> list[dict[str, Any]]:
    return [{"type": "track", "event": "Product Viewed", "userId": f"u{i}", "messageId": f"m{i}",
             "properties": {"pad": "x" * padding}} for i in range(count)]


# ---------------------------------------------------------------- BatchSender


def test_calls_arrive_once_in_order_in_batches_within_the_limits(server: BatchServer) -> None:
    sent = calls(1234)
    with BatchSender(server.url, WRITE_KEY) as sender:
        assert sender.send(sent) == 1234
    assert server.calls == sent
    assert [len(batch) for batch in server.batches] == [500, 500, 234]


def test_large_calls_are_split_to_stay_under_500_kb(server: BatchServer) -> None:
    sent = calls(120, padding=20_000)
    with BatchSender(server.url, WRITE_KEY) as sender:
        sender.send(sent)
    assert server.calls == sent
    assert len(server.batches) > 1 and max(server.body_sizes) < 500_000


def test_429_waits_for_retry_after_and_5xx_backs_off(server: BatchServer) -> None:
    server.scripted.extend([(429, {"Retry-After": "2"}, b""), (503, {}, b"busy")])
    waits: list[float] = []
    with BatchSender(server.url, WRITE_KEY, sleep=waits.append) as sender:
        sender.send(calls(10))
    assert server.calls == calls(10) and server.requests == 3
    assert waits == [2.0, 0.5] and sender.retries == 2


def test_the_sender_gives_up_after_its_attempts(server: BatchServer) -> None:
    server.scripted.extend([(500, {}, b"oops")] * 3)
    waits: list[float] = []
    sender = BatchSender(server.url, WRITE_KEY, max_attempts=3, sleep=waits.append)
    with sender, pytest.raises(StorageUnavailable, match="gave up after 3 attempts"):
        sender.send(calls(1))
    assert waits == [0.25, 0.5, 1.0] and server.batches == []


def test_an_unreachable_server_is_storage_unavailable() -> None:
    sender = BatchSender(f"http://127.0.0.1:{free_port()}", WRITE_KEY, max_attempts=2,
                         sleep=lambda _: None)
    with sender, pytest.raises(StorageUnavailable, match="ConnectError"):
        sender.send(calls(1))


@pytest.mark.parametrize(
    ("status", "error"), [(401, Unauthorized), (403, Forbidden), (400, InvalidInput)]
)
def test_client_errors_stop_at_once(
    server: BatchServer, status: int, error: type[Exception]
) -> None:
    server.scripted.append((status, {}, b'{"success": false, "message": "scripted"}'))
    with BatchSender(server.url, WRITE_KEY) as sender, pytest.raises(error):
        sender.send(calls(1))
    assert server.requests == 1


def test_events_a_server_rejects_from_a_stored_batch_are_recorded_and_sending_goes_on(
    server: BatchServer,
) -> None:
    error = {"index": 0, "messageId": "m0", "field": "batch[0].userId", "reason": "bad"}
    server.scripted.append(
        (400, {}, json.dumps({"success": False, "accepted": 499, "rejected": 1,
                              "errors": [error]}).encode())
    )
    with BatchSender(server.url, WRITE_KEY) as sender:
        sender.send(calls(600))
    assert sender.sent == 499 + 100 and sender.rejected == [error]
    assert server.calls == calls(600)[500:]


def test_a_wrong_write_key_is_unauthorized(server: BatchServer) -> None:
    with BatchSender(server.url, "wrong") as sender, pytest.raises(Unauthorized):
        sender.send(calls(1))


def test_a_rate_paces_small_batches() -> None:
    clock = [0.0]
    posted: list[float] = []

    class Transport:
        def post(self, url: str, **_: Any) -> Any:
            posted.append(clock[0])
            return type("Response", (), {"status_code": 200})()

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    sender = BatchSender("http://h", WRITE_KEY, rate=200, sleep=sleep, clock=lambda: clock[0],
                         client=Transport())  # type: ignore[arg-type]
    sender.send(calls(100))
    assert len(posted) == 5  # batches of rate/10 = 20 calls
    assert posted == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:8080", "http://h:8080/v1/batch"),
        ("http://h:8080/", "http://h:8080/v1/batch"),
        ("https://h/cdp", "https://h/cdp/v1/batch"),
        ("http://h/v1/batch", "http://h/v1/batch"),
    ],
)
def test_batch_url(given: str, expected: str) -> None:
    assert batch_url(given) == expected


@pytest.mark.parametrize("given", ["ftp://h", "h:8080", "http://", ""])
def test_a_target_that_is_not_an_http_url_is_invalid(given: str) -> None:
    with pytest.raises(InvalidInput):
        batch_url(given)


def invoke(command: Any, *arguments: str, env: dict[str, str] | None = None) -> Result:
    """A ``loyalty-cdp`` command run in process (main's exit codes are checked by run_cli)."""
    app = typer.Typer()
    app.command()(command)
    return CliRunner(env=env).invoke(app, list(arguments))


def test_simulate_streams_the_simulation_to_a_server(server: BatchServer) -> None:
    result = invoke(simulate_command, "--members", "8", "--days", "10", "--seed", "4",
                    "--target", server.url, "--write-key", WRITE_KEY, "--rate", "5000")
    assert result.exit_code == 0, result.output
    assert server.calls == list(simulate(8, 10, seed=4))
    assert max(len(batch) for batch in server.batches) <= 500


# --------------------------------------------------------------- import FILE


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(b"".join(
        (line if isinstance(line, bytes) else msgspec.json.encode(line)) + b"\n" for line in lines
    ))
    return path


def log_count(data_dir: Path) -> int:
    log = SqliteEventLog(data_dir / "events.db")
    try:
        return log.count()
    finally:
        log.close()


def test_importing_a_simulation_twice_stores_it_once(tmp_path: Path) -> None:
    simulated = list(simulate(10, 10, seed=1, start=date(2026, 5, 1)))
    for call in simulated[::3]:
        del call["messageId"]  # these get a messageId derived from their line
    source = write_jsonl(tmp_path / "events.jsonl", simulated)
    data = tmp_path / "data"
    first = invoke(import_file, str(source), "--data-dir", str(data))
    assert first.exit_code == 0, first.output
    total = len(simulated)
    assert f"{total:,} lines read, appended {total:,}, duplicates 0, 0 lines rejected" in (
        first.stdout
    )
    again = invoke(import_file, str(source), "--data-dir", str(data))
    assert again.exit_code == 0
    assert f"appended 0, duplicates {total:,}" in again.stdout
    assert log_count(data) == total
    assert not (tmp_path / "events.jsonl.errors.jsonl").exists()


def test_rejected_lines_are_reported_and_the_valid_ones_imported(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "mixed.jsonl", [
        {"type": "identify", "userId": "u1", "traits": {"email": "a@example.com"}},
        b"{not json",
        {"type": "track", "event": "Order Completed"},
        [1, 2],
        {"type": "track", "userId": "u2", "event": "Email Opened", "messageId": "m" * 120},
        {"type": "page", "anonymousId": "a1", "name": "Home"},
    ])
    result = invoke(import_file, str(source), "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 2
    assert "6 lines read, appended 2, duplicates 0, 4 lines rejected" in result.stdout
    assert "line 3: userId: userId or anonymousId is required" in result.stderr
    assert "the valid ones were imported" in result.stderr and "Traceback" not in result.stderr
    report = [json.loads(line) for line in (tmp_path / "mixed.jsonl.errors.jsonl").read_text()
              .splitlines()]
    assert [(e["line"], e["field"]) for e in report] == [
        (2, ""), (3, "userId"), (4, ""), (5, "messageId")
    ]
    assert "invalid JSON" in report[0]["reason"]
    assert log_count(tmp_path / "data") == 2


def test_pos_csv_import_groups_orders_and_is_idempotent(tmp_path: Path) -> None:
    source = tmp_path / "till.csv"
    source.write_text(
        "order_id,store_id,card_number,timestamp,sku,price,quantity,discount\n"
        "A1,S1,6035000011112222,2026-01-05T10:00:00Z,PF-1,39.99,1,0\n"
        "A1,S1,6035000011112222,2026-01-05T10:00:00Z,COF-2,12.50,2,2.50\n"
        "A2,S1,6035000033334444,2026-01-05T11:00:00Z,PF-1,39.99,one,0\n"
        "A3,S2,6035000033334444,2026-01-05T12:00:00Z,PF-1,39.99,1,0\n"
    )
    data = tmp_path / "data"
    first = invoke(import_file, str(source), "--data-dir", str(data))
    assert first.exit_code == 2
    assert "4 lines read, appended 2, duplicates 0, 1 lines rejected" in first.stdout
    assert "line 4: quantity: must be a whole number" in first.stderr
    again = invoke(import_file, str(source), "--data-dir", str(data))
    assert "appended 0, duplicates 2" in again.stdout
    log = SqliteEventLog(data / "events.db")
    try:
        stored = [msgspec.json.decode(event.body) for event in log.read()]
    finally:
        log.close()
    assert [e["properties"]["order_id"] for e in stored] == ["A1", "A3"]
    assert stored[0]["properties"]["total"] == 62.49 and stored[0]["context"]["channel"] == "pos"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{dir}/absent.jsonl"], "does not exist"),
        (["{dir}/events.txt"], "cannot tell the format"),
        (["{dir}/events.txt", "--format", "xml"], "must be jsonl or csv"),
        (["{dir}/events.jsonl", "--data-dir", "{dir}/d", "--target", "http://h"],
         "either --data-dir or --target"),
        (["{dir}/events.jsonl", "--target", "http://h"], "--write-key"),
        (["{dir}/bad.csv"], "unknown column(s) qty"),
    ],
)
def test_unusable_arguments_are_invalid_input_and_import_nothing(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    (tmp_path / "events.txt").write_text("{}\n")
    (tmp_path / "events.jsonl").write_text("{}\n")
    (tmp_path / "bad.csv").write_text("order_id,member_id,timestamp,sku,price,qty\n")
    result = invoke(import_file, *(a.replace("{dir}", str(tmp_path)) for a in arguments),
                    env={"LOYALTY_CDP_DATA_DIR": str(tmp_path / "data")})
    assert isinstance(result.exception, InvalidInput)
    assert message in str(result.exception)
    assert not (tmp_path / "data" / "events.db").exists()


def test_the_command_exits_with_code_2_and_a_clear_message(tmp_path: Path) -> None:
    result = run_cli("import", str(tmp_path / "absent.jsonl"), "--data-dir", str(tmp_path))
    assert result.returncode == 2
    absent = tmp_path / "absent.jsonl"
    assert result.stderr.strip() == f"error: FILE: {absent} does not exist or is not a file"


@pytest.mark.slow
def test_import_to_a_running_server_stores_each_event_once(tmp_path: Path) -> None:
    simulated = list(simulate(5, 7, seed=3))
    source = write_jsonl(tmp_path / "events.jsonl", simulated)
    with ServerProcess(tmp_path / "data") as live:
        key = live.create_key("ingest")
        for _ in range(2):
            result = run_cli("import", str(source), "--target", live.url, "--write-key", key)
            assert result.returncode == 0, result.stderr
            assert f"sent {len(simulated):,} to {live.url}/v1/batch" in result.stdout
    log = SqliteEventLog(tmp_path / "data" / "events.db")
    try:  # the loyalty engine's own events (channel "loyalty") come on top of what was imported
        imported = [e for e in log.read(0, 100_000) if e.channel not in SYSTEM_CHANNELS or e.type == "identify"]
    finally:
        log.close()
    assert len(imported) == len(simulated)
