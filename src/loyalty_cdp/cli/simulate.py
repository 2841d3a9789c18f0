"""``loyalty-cdp simulate``: write simulated program activity to a file or stream it to a server."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import msgspec
import typer

from loyalty_cdp.core.events import parse_time
from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.simulator import DEFAULT_START, Simulation, truth_path
from loyalty_cdp.simulator.generator import validate

if TYPE_CHECKING:
    from rich.progress import Progress

PROGRESS_EVERY = 4096
FLUSH_BYTES = 1 << 20


def progress_bar(total: float | None, description: str) -> Progress:
    """A Rich progress bar on stderr, shown only when stderr is a terminal."""
    # Rich takes ~0.1 s to import: only the commands that show a bar load it.
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), console=console, disable=not console.is_terminal, transient=True,
    )
    progress.add_task(description, total=total, status="")
    return progress


def _parse_start(text: str | None) -> date:
    if text is None:
        return DEFAULT_START
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput("start", f"must be a date such as 2026-01-01, got {text!r}") from None


@contextmanager
def _atomic_file(path: Path, option: str) -> Iterator[BinaryIO]:
    """A file beside ``path`` that takes its place only if the block completes."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        stream = partial.open("wb")
    except OSError as exc:
        raise InvalidInput(option, f"cannot write to {path}: {exc.strerror}") from None
    try:
        with stream:
            yield stream
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _tracked(
    calls: Iterable[dict[str, Any]], simulation: Simulation, progress: Progress
) -> Iterable[dict[str, Any]]:
    """Pass the calls through, moving the bar by simulated day every few thousand calls."""
    task = progress.task_ids[0]
    for count, call in enumerate(calls, 1):
        if count % PROGRESS_EVERY == 0:
            elapsed = parse_time(call["timestamp"], "timestamp") - simulation.start_ms
            progress.update(task, completed=elapsed / 86_400_000, status=f"{count:,} events")
        yield call


def _write_jsonl(calls: Iterable[dict[str, Any]], stream: Any) -> int:
    encoder = msgspec.json.Encoder()
    buffer = bytearray()
    count = 0
    for call in calls:
        encoder.encode_into(call, buffer, -1)
        buffer.extend(b"\n")
        count += 1
        if len(buffer) >= FLUSH_BYTES:
            stream.write(buffer)
            buffer.clear()
    stream.write(buffer)
    return count


def simulate(
    members: int = typer.Option(..., "--members", help="Number of loyalty members."),
    days: int = typer.Option(..., "--days", help="Length of the simulated period in days."),
    seed: int = typer.Option(1, "--seed", help="Random seed: same arguments, same output."),
    out: Path | None = typer.Option(
        None, "--out", help="Write JSON Lines of Segment calls here (and FILE.truth.json)."
    ),
    target: str | None = typer.Option(
        None, "--target", help="Stream to this server's /v1/batch, e.g. http://127.0.0.1:8080."
    ),
    write_key: str | None = typer.Option(
        None, "--write-key", envvar="LOYALTY_CDP_WRITE_KEY",
        help="Key with the ingest scope, sent as HTTP Basic user name (with --target).",
    ),
    rate: float | None = typer.Option(
        None, "--rate", help="Events per second when streaming (default: as fast as possible)."
    ),
    start: str | None = typer.Option(
        None, "--start", help="First simulated day, YYYY-MM-DD (default 2026-01-01)."
    ),
    truth: Path | None = typer.Option(
        None, "--truth", help="Ground truth file (default with --out: FILE.truth.json)."
    ),
) -> None:
    """Generate a loyalty program's activity as Segment calls, with its ground truth."""
    first_day = _parse_start(start)
    validate(members, days, first_day)
    if (out is None) == (target is None):
        raise InvalidInput("out", "give exactly one of --out FILE or --target URL")
    if target is not None and not write_key:
        raise InvalidInput("write-key", "--target needs --write-key KEY")
    if rate is not None and target is None:
        raise InvalidInput("rate", "--rate applies to --target streaming only")
    for option, path in (("out", out), ("truth", truth)):
        if path is not None and (path.is_dir() or not path.name):
            raise InvalidInput(option, f"{path} is a directory, not a file")
    truth_file = truth if truth is not None else (truth_path(out) if out is not None else None)

    with ExitStack() as resources:
        sender = None
        if target is not None and write_key:
            from loyalty_cdp.simulator.streaming import BatchSender  # httpx only when needed

            sender = resources.enter_context(BatchSender(target, write_key, rate))
        events_file = resources.enter_context(_atomic_file(out, "out")) if out else None
        truth_stream = (
            resources.enter_context(_atomic_file(truth_file, "truth")) if truth_file else None
        )
        simulation = Simulation(members, days, seed, first_day)
        with progress_bar(days, "simulating") as progress:
            calls = _tracked(simulation.events(), simulation, progress)
            if sender is not None:
                count, where = sender.send(calls), sender.url
            elif events_file is not None:
                count, where = _write_jsonl(calls, events_file), str(out)
        if truth_stream is not None:
            truth_stream.writelines(simulation.truth.chunks())
    typer.echo(
        f"{count:,} events for {members:,} members over {days} days -> {where}"
        + (f" (ground truth: {truth_file})" if truth_file else ""),
        err=True,
    )
