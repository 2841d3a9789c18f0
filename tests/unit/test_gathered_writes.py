"""The server's HTTP protocol sends what a response writes in one turn of the event loop as one write."""

from __future__ import annotations

import asyncio

from loyalty_cdp.api.http_protocol import _GatheredWrites


class Transport:
    """The part of a transport the proxy uses, recording each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_of_one_turn_leave_as_one_write_and_the_next_turn_as_another() -> None:
    async def run() -> Transport:
        transport = Transport()
        gathered = _GatheredWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        gathered.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        gathered.write(b"{}")
        assert transport.writes == [] and gathered.get_write_buffer_size() == 40
        await asyncio.sleep(0)
        gathered.write(b"next")
        await asyncio.sleep(0)
        return transport

    assert asyncio.run(run()).writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"next"]


def test_close_sends_what_is_gathered_first_and_abort_drops_it() -> None:
    async def run() -> tuple[Transport, Transport]:
        loop = asyncio.get_running_loop()
        closed, aborted = Transport(), Transport()
        for transport in (closed, aborted):
            gathered = _GatheredWrites(transport, loop)  # type: ignore[arg-type]
            gathered.write(b"bye")
            gathered.close() if transport is closed else gathered.abort()
            assert gathered.get_extra_info("peername") == "info:peername"  # the rest is the real transport's
        await asyncio.sleep(0)  # the scheduled flush finds nothing left to send
        return closed, aborted

    closed, aborted = asyncio.run(run())
    assert closed.writes == [b"bye"] and closed.closed
    assert aborted.writes == [] and aborted.aborted
