"""Settings from LOYALTY_CDP_* variables: the ingest writer count is checked and named when wrong."""

from __future__ import annotations

import pytest

from loyalty_cdp.errors import InvalidInput
from loyalty_cdp.settings import Settings


def test_ingest_writers_default_to_two_and_follow_the_variable() -> None:
    assert Settings.from_env({}).ingest_writers == 2
    assert Settings.from_env({"LOYALTY_CDP_INGEST_WRITERS": "3"}).ingest_writers == 3


@pytest.mark.parametrize("value", ["0", "65", "-1", "two"])
def test_an_ingest_writer_count_out_of_range_or_not_a_number_names_the_variable(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Settings.from_env({"LOYALTY_CDP_INGEST_WRITERS": value})
    assert caught.value.field == "LOYALTY_CDP_INGEST_WRITERS"
