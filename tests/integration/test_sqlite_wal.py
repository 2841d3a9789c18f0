"""Connections opening one new SQLite file together all get it in WAL mode (adapters/sqlite_wal.py)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from loyalty_cdp.adapters.sqlite_wal import switch_to_wal


def _open_together(path: Path, connections: int) -> tuple[list[str], list[sqlite3.Error]]:
    """Open ``path`` from that many threads at once, each switching it to WAL: (modes, failures)."""
    together = threading.Barrier(connections)
    modes: list[str] = []
    failures: list[sqlite3.Error] = []

    def open_it() -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            together.wait()
            modes.append(switch_to_wal(conn))
            conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        except sqlite3.Error as exc:
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=open_it) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return modes, failures


def test_connections_opening_one_new_file_together_all_switch_it_to_wal(tmp_path: Path) -> None:
    for trial in range(40):
        modes, failures = _open_together(tmp_path / f"store-{trial}.db", 8)
        assert failures == [], f"trial {trial}: {failures[0]}"
        assert modes == ["wal"] * 8
