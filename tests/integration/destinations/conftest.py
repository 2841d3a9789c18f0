"""Fixtures of the destination tests: real local servers, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from aiosmtpd.controller import Controller
from destination_support import HttpSink, MailRecorder

from loyalty_cdp.testing import free_port


@pytest.fixture()
def make_sink() -> Iterator[Callable[..., HttpSink]]:
    """Start HTTP sinks on demand (``make_sink()`` or ``make_sink(port)``)."""
    sinks: list[HttpSink] = []

    def make(port: int = 0) -> HttpSink:
        sink = HttpSink(port)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.stop()


@pytest.fixture()
def smtp_server() -> Iterator[tuple[Controller, MailRecorder]]:
    """An aiosmtpd server on a free port, recording what it accepts."""
    recorder = MailRecorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, recorder
    finally:
        controller.stop()
