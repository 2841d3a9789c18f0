"""End-to-end fixtures: a real server process on a fresh data directory, and keys for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loyalty_cdp.testing import ServerProcess


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture()
def write_key(server: ServerProcess) -> str:
    return server.create_key("ingest")
