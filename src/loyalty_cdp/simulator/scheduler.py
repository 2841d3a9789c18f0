"""A discrete-event scheduler that releases the calls its actions emit in timestamp order.

Actions run in time order; an action may schedule later actions and emit calls stamped at or
after its own time. A call is released once no pending action is earlier than it, so the
output is sorted by timestamp (ties in emission order) while only the calls of sessions
still in progress are held in memory.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from typing import Any

Action = Callable[[int, Any], None]


class Scheduler:
    """Actions and calls before ``end_ms`` (epoch ms); anything at or after it is dropped."""

    def __init__(self, end_ms: int) -> None:
        self.end_ms = end_ms
        self.now_ms = 0
        self._tasks: list[tuple[int, int, Action, Any]] = []
        self._calls: list[tuple[int, int, dict[str, Any]]] = []
        self._sequence = itertools.count()

    def at(self, time_ms: int, action: Action, argument: Any = None) -> None:
        """Run ``action(time_ms, argument)`` at ``time_ms`` (which must not be in the past)."""
        if time_ms < self.end_ms:
            heapq.heappush(self._tasks, (time_ms, next(self._sequence), action, argument))

    def emit(self, time_ms: int, call: dict[str, Any]) -> None:
        if time_ms < self.end_ms:
            heapq.heappush(self._calls, (time_ms, next(self._sequence), call))

    def run(self) -> Iterator[dict[str, Any]]:
        tasks, calls = self._tasks, self._calls
        pop = heapq.heappop
        while tasks:
            time_ms, _, action, argument = pop(tasks)
            self.now_ms = time_ms
            while calls and calls[0][0] <= time_ms:
                yield pop(calls)[2]
            action(time_ms, argument)
        self.now_ms = self.end_ms
        while calls:
            yield pop(calls)[2]
