"""A real ``loyalty-cdp serve`` in a child process, for end-to-end tests and benchmarks.

Shipped with the package (like Starlette's TestClient) so that tests, benchmarks and users'
own integration tests drive the server exactly as a client would: over HTTP, on a port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# The channels of the events the system writes itself (the loyalty engine, segment
# memberships, offer grants, prediction alerts), as opposed to what clients sent.
SYSTEM_CHANNELS = frozenset({"loyalty", "segments", "decisioning", "predictions"})


def wait_for(check: Callable[[], T | None], what: str = "a condition", timeout: float = 30.0,
             interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy, and return that; AssertionError naming
    ``what`` after ``timeout`` seconds (the system is eventually consistent behind ingest)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def stored_client_ids(data_dir: Path) -> list[str]:
    """Message ids of what clients stored in a data directory's SQLite event log, in log order
    (the system's own events, :data:`SYSTEM_CHANNELS`, left out)."""
    from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog

    log = SqliteEventLog(data_dir / "events.db")
    try:
        ids: list[str] = []
        after = 0
        while page := log.read(after, 50_000):
            ids.extend(e.message_id for e in page if e.channel not in SYSTEM_CHANNELS)
            after = page[-1].offset
        return ids
    finally:
        log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``loyalty-cdp ARGS`` in a child process; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "loyalty_cdp", *args], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, check=False,
    )


class ServerProcess:
    """Start, stop, kill and restart a server on one data directory and one port."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, *extra_args: str) -> None:
        self.data_dir = data_dir
        # The scheduled scoring job stays off unless a test asks for it: a background run appends
        # its alerts to the log at a moment of its own, which tests comparing the log cannot allow.
        self.env = {"LOYALTY_CDP_SCORE_EVERY_S": "0", **os.environ, **(env or {})}
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def create_key(self, scopes: str) -> str:
        result = run_cli("keys", "create", "--scopes", scopes, "--data-dir", str(self.data_dir),
                         env=self.env)
        if result.returncode != 0:
            raise RuntimeError(f"keys create failed: {result.stderr}")
        return result.stdout.strip()

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loyalty_cdp", "serve", "--data-dir", str(self.data_dir),
             "--port", str(self.port), "--log-level", "warning", *self.extra_args],
            env=self.env, stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    response.read()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}") from None
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("server did not become healthy in time") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 60.0) -> int:
        """Graceful shutdown (SIGTERM): in-flight requests finish, the queue is drained."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: no chance to flush anything."""
        return self._signal(signal.SIGKILL, 10.0)

    def _signal(self, signum: int, timeout: float) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout=timeout)
        self.process = None
        return code

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
