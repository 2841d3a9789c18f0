"""``loyalty-cdp replay``: rebuild every profile and the identity graph from the event log."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from loyalty_cdp.bootstrap import (
    open_decision_store,
    open_decisioning_stage,
    open_event_log,
    open_processor,
    open_profile_store,
    open_program,
)
from loyalty_cdp.settings import Settings

REPLAY_BATCH = 50_000


def replay(
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data directory (default ./data)."),
) -> None:
    """Forget the profiles and fold the whole log again. Run it with the server stopped.

    Segment memberships are rebuilt with them; stored decisions are kept, and a trigger
    occurrence already decided is not decided (or sent) again."""
    # The score store and the segments (numpy, scipy) load here, not when any other command starts.
    from loyalty_cdp.adapters.scorestore import ScoreStore
    from loyalty_cdp.services.segments import SegmentRegistry

    settings = Settings.from_env(data_dir=data_dir)
    event_log = open_event_log(settings)
    store = open_profile_store(settings)
    store.reset()
    store.close()
    program = open_program(settings)
    scores, decisions = ScoreStore(settings.data_dir), open_decision_store(settings)
    stage = open_decisioning_stage(settings, program, decisions, scores,
                                   SegmentRegistry(program[1], decisions, program=program[0], scores=scores))
    processor = open_processor(settings, event_log, batch_size=REPLAY_BATCH, program=program, decisioning=stage)
    try:
        started = time.perf_counter()
        applied = processor.catch_up()
        seconds = time.perf_counter() - started
    finally:
        processor.close()
        decisions.close()
        decisions.outbox.close()
        scores.close()
        event_log.close()
    rate = applied / seconds if seconds > 0 else 0.0
    typer.echo(f"replayed {applied} events into {len(processor.view)} profiles in {seconds:.1f}s "
               f"({rate:,.0f} events/s)")
