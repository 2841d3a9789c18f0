"""The processor's thread runs at its nice value, and only that thread: the HTTP threads keep theirs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.services.processor import Processor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are Linux's")


def test_the_processor_thread_is_lowered_to_its_nice_value_and_the_rest_of_the_process_is_not(tmp_path: Path) -> None:
    log, store = SqliteEventLog(tmp_path / "events.db"), SqliteProfileStore(tmp_path / "profiles.db")
    processor = Processor(log, store, nice=7)
    before = os.getpriority(os.PRIO_PROCESS, 0)
    processor.start()
    try:
        assert processor._thread is not None and processor._thread.native_id is not None
        deadline = time.monotonic() + 5
        while os.getpriority(os.PRIO_PROCESS, processor._thread.native_id) != max(before, 7):
            assert time.monotonic() < deadline, "the processor thread was not lowered"
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, 0) == before  # this (the calling) thread keeps its own
    finally:
        processor.stop()
        processor.close()
        log.close()
