"""Shared pieces of the benchmarks: a real server, a lean HTTP/1.1 load client, background traffic, statistics."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loyalty_cdp.simulator.generator import simulate
from loyalty_cdp.simulator.streaming import BatchSender
from loyalty_cdp.testing import ServerProcess


@contextmanager
def running_server(env: dict[str, str] | None = None, *extra: str) -> Iterator[ServerProcess]:
    """A real server on a fresh data directory for the length of a benchmark."""
    with tempfile.TemporaryDirectory(prefix="lcdp-bench-") as tmp, \
            ServerProcess(Path(tmp), env, *extra) as server:
        yield server


def process_cpu(pid: int, children: bool = True) -> float:
    """CPU seconds (user + system) used so far by a process, and its live children unless told not."""
    pids = [pid]
    if children:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                pids.extend(int(child) for child in listed.read().split())
    seconds = 0.0
    for each in pids:
        try:
            with open(f"/proc/{each}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a child that just exited
            continue
        seconds += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return seconds


def post_json(url: str, key: str, path: str, body: dict[str, Any]) -> None:
    """One authenticated JSON POST to the server, its answer read and dropped."""
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _stream_simulated(url: str, key: str, rate: float) -> None:
    sender = BatchSender(url, key, rate=rate)
    try:
        sender.send(simulate(5_000, 365, seed=9))
    finally:
        sender.close()


@contextmanager
def background_ingest(url: str, key: str, rate: float) -> Iterator[None]:
    """Simulated traffic streamed at ``rate`` events/s by a second process (so that it does not share this
    one's GIL), given 3 s to get going before the body runs, stopped after it."""
    feeder = multiprocessing.Process(target=_stream_simulated, args=(url, key, rate), daemon=True)
    feeder.start()
    try:
        time.sleep(3)
        yield
    finally:
        feeder.terminate()
        feeder.join()


def metric(base_url: str, name: str) -> float:
    """One unlabelled value from the server's Prometheus metrics."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise KeyError(name)


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def http_request(path: str, body: bytes, auth_header: str, port: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth_header}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _worker(port: int, requests: list[bytes], latencies: list[float], statuses: dict[int, int],
                  pace: float | None, start: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for index, raw in enumerate(requests):
            if pace is not None:
                delay = start + index * pace - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            began = time.perf_counter()
            status = await _request(reader, writer, raw)
            latencies.append(time.perf_counter() - began)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


def load(port: int, requests: list[bytes], connections: int, rate: float | None = None
         ) -> tuple[float, list[float], dict[int, int]]:
    """Send pre-built requests over ``connections`` keep-alive connections (optionally paced to
    ``rate`` requests/s overall); returns (seconds, latencies, status counts)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    shares = [requests[i::connections] for i in range(connections)]
    pace = connections / rate if rate else None

    async def main() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(_worker(port, share, latencies, statuses, pace, start) for share in shares))
        return time.perf_counter() - start

    return asyncio.run(main()), latencies, statuses


class CoresBusy:
    """How many of the machine's cores were busy (not idle, not waiting on I/O) from creation
    to ``read()``, from /proc/stat, and how many the hypervisor took from this machine in that
    time (steal: wanted, not given): whether a phase had CPU to spare at all."""

    def __init__(self) -> None:
        self._busy, self._steal = self._seconds()
        self._at = time.monotonic()

    @staticmethod
    def _seconds() -> tuple[float, float]:
        with open("/proc/stat") as stat:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
        tick = os.sysconf("SC_CLK_TCK")
        return (user + nice + system + irq + softirq) / tick, steal / tick

    def read(self) -> str:
        """``cores busy B of N, steal S``."""
        busy, steal = self._seconds()
        elapsed = time.monotonic() - self._at
        return (f"cores busy {(busy - self._busy) / elapsed:.2f} of {os.cpu_count()}, "
                f"steal {(steal - self._steal) / elapsed:.2f}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_summary(milliseconds: list[float]) -> str:
    """``p50 … ms  p90 … ms  p99 … ms  max … ms``, the latency benchmarks' report line."""
    return (f"p50 {statistics.median(milliseconds):7.1f} ms  p90 {percentile(milliseconds, 0.9):7.1f} ms"
            f"  p99 {percentile(milliseconds, 0.99):7.1f} ms  max {max(milliseconds):7.1f} ms")


def median(values: list[float]) -> float:
    return statistics.median(values)
