"""Switching a SQLite file to WAL mode while other connections may be opening it too, and the
one busy timeout every embedded store's connections wait for another connection's lock.

Every embedded store keeps its file in WAL mode, set by the first connection to open it. While
other connections open the same new file (the server and its writer process starting on an empty
data directory, say), SQLite can answer ``PRAGMA journal_mode = WAL`` "database is locked" at
once instead of waiting through ``busy_timeout``: eight event logs opening one new file together
failed so in 4 trials of 60. :func:`switch_to_wal` retries it for as long as a busy lock is waited for.
"""

from __future__ import annotations

import sqlite3
import time

BUSY_TIMEOUT_S = 10.0  # how long a connection waits for another one's lock
BUSY_TIMEOUT = f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}"


def switch_to_wal(conn: sqlite3.Connection, wait_s: float = BUSY_TIMEOUT_S) -> str:
    """``PRAGMA journal_mode = WAL`` (a no-op once the file is in WAL mode); returns the mode."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return str(mode)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)
