"""The server loop's step size follows the fold's pace (Processor._run, next_step_size)."""

from hypothesis import given
from hypothesis import strategies as st

from loyalty_cdp.services.processor import FIRST_STEP_EVENTS, STEP_TARGET_S, next_step_size


def test_a_slow_full_step_shrinks_to_the_target_duration() -> None:
    # 5,000 events in 5 s is 1,000 events/s: a quarter-second step is 250 events, floored at the first size.
    assert next_step_size(5_000, 5_000, 5.0, 5_000) == FIRST_STEP_EVENTS
    assert next_step_size(5_000, 5_000, 1.0, 5_000) == int(5_000 * STEP_TARGET_S)


def test_a_fast_full_step_grows_at_most_twofold_up_to_the_batch_size() -> None:
    assert next_step_size(500, 500, 0.01, 5_000) == 1_000
    assert next_step_size(4_000, 4_000, 0.01, 5_000) == 5_000


def test_a_step_that_found_less_than_it_asked_for_keeps_the_size() -> None:
    assert next_step_size(2_000, 10, 0.5, 5_000) == 2_000


@given(st.integers(1, 100_000), st.integers(0, 100_000), st.floats(0, 100), st.integers(1, 100_000))
def test_the_size_stays_within_bounds(size: int, applied: int, spent: float, largest: int) -> None:
    size = min(size, largest)
    new = next_step_size(size, applied, spent, largest)
    assert min(FIRST_STEP_EVENTS, largest) <= new <= largest or new == size
