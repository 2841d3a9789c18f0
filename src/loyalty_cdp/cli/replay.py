"""``loyalty-cdp replay``: rebuild every profile and the identity graph from the event log."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from loyalty_cdp.bootstrap import open_event_log, open_processor, open_profile_store
from loyalty_cdp.settings import Settings

REPLAY_BATCH = 50_000


def replay(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data directory (default ./data)."),
) -> None:
    """Forget all derived state and fold the whole log again. Run it with the server stopped."""
    settings = Settings.from_env(data_dir=data_dir)
    event_log = open_event_log(settings)
    store = open_profile_store(settings)
    store.reset()
    store.close()
    processor = open_processor(settings, event_log, batch_size=REPLAY_BATCH)
    try:
        started = time.perf_counter()
        applied = processor.catch_up()
        seconds = time.perf_counter() - started
    finally:
        processor.close()
        event_log.close()
    rate = applied / seconds if seconds > 0 else 0.0
    typer.echo(f"replayed {applied} events into {len(processor.view)} profiles in {seconds:.1f}s "
               f"({rate:,.0f} events/s)")
