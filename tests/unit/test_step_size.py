"""The server loop's step size follows the fold's pace and the step target (Processor._run, next_step_size)."""

import time

from hypothesis import given
from hypothesis import strategies as st

from loyalty_cdp.adapters.eventlog.sqlite import SqliteEventLog
from loyalty_cdp.adapters.profilestore.sqlite import SqliteProfileStore
from loyalty_cdp.services.processor import (
    READING_LINGERS_S,
    READING_STEP_TARGET_S,
    SMALLEST_STEP_EVENTS,
    STEP_TARGET_S,
    Processor,
    next_step_size,
    resized_step,
)


def test_a_slow_full_step_shrinks_to_the_target_duration() -> None:
    # 5,000 events in 5 s is 1,000 events/s: a quarter-second step is 250 events.
    assert next_step_size(5_000, 5_000, 5.0, 5_000) == int(1_000 * STEP_TARGET_S)
    assert next_step_size(5_000, 5_000, 1.0, 5_000) == int(5_000 * STEP_TARGET_S)
    assert next_step_size(5_000, 5_000, 100.0, 5_000) == SMALLEST_STEP_EVENTS


def test_a_shorter_target_gives_a_proportionally_smaller_step() -> None:
    # 20,000 events/s: 5,000 events in a quarter second, 600 in the 30 ms of a step while members are read.
    assert next_step_size(5_000, 5_000, 0.25, 5_000) == 5_000
    assert next_step_size(5_000, 5_000, 0.25, 5_000, READING_STEP_TARGET_S) == int(20_000 * READING_STEP_TARGET_S)


def test_a_fast_full_step_grows_at_most_twofold_up_to_the_batch_size() -> None:
    assert next_step_size(500, 500, 0.01, 5_000) == 1_000
    assert next_step_size(4_000, 4_000, 0.01, 5_000) == 5_000


def test_a_step_that_found_less_than_it_asked_for_keeps_the_size() -> None:
    assert next_step_size(2_000, 10, 0.5, 5_000) == 2_000


@given(st.integers(1, 100_000), st.integers(0, 100_000), st.floats(0, 100), st.integers(1, 100_000),
       st.sampled_from([STEP_TARGET_S, READING_STEP_TARGET_S]))
def test_the_size_stays_within_bounds(size: int, applied: int, spent: float, largest: int, target: float) -> None:
    size = min(size, largest)
    new = next_step_size(size, applied, spent, largest, target)
    assert min(SMALLEST_STEP_EVENTS, largest) <= new <= largest or new == size


def test_steps_aim_short_while_members_are_read_and_long_again_after(tmp_path, monkeypatch) -> None:
    processor = Processor(SqliteEventLog(tmp_path / "events.db"), SqliteProfileStore(tmp_path / "profiles.db"))
    try:
        assert processor.step_target_s() == STEP_TARGET_S
        processor.reading()
        assert processor.step_target_s() == READING_STEP_TARGET_S
        later = time.monotonic() + READING_LINGERS_S
        monkeypatch.setattr(time, "monotonic", lambda: later)
        assert processor.step_target_s() == STEP_TARGET_S
    finally:
        processor.close()


def test_a_step_sized_for_a_quarter_second_shrinks_at_once_when_members_start_being_read() -> None:
    # 2,000 events sized for 0.25 s are 240 for the 30 ms of a step while members are read.
    assert resized_step(2_000, STEP_TARGET_S, READING_STEP_TARGET_S, 5_000) == int(2_000 * READING_STEP_TARGET_S
                                                                                  / STEP_TARGET_S)
    assert resized_step(100, STEP_TARGET_S, READING_STEP_TARGET_S, 5_000) == SMALLEST_STEP_EVENTS
    # Sized for the target in force, or for a shorter one: unchanged (next_step_size grows it back).
    assert resized_step(2_000, STEP_TARGET_S, STEP_TARGET_S, 5_000) == 2_000
    assert resized_step(240, READING_STEP_TARGET_S, STEP_TARGET_S, 5_000) == 240
