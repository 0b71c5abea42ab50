"""Output order: results released in the order their work was given out.

A stage with several workers that keeps order numbers each batch it gives out
and releases what the batches made in that order, whatever order the workers
finish in.  The serial executor (with parallel schedules) and the Ray driver
keep one :class:`Reorder` per such stage; the process executor's workers, which
share no memory, take turns on a shared counter instead (``_worker.Ordering``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Reorder"]


class Reorder:
    """Tickets in the order work is given out; results back in that order."""

    def __init__(self) -> None:
        self._given = 0  # tickets handed out
        self._next = 0  # the ticket whose result goes out next
        self._done: dict[int, Any] = {}

    def ticket(self) -> int:
        """The number of the next piece of work given out."""
        self._given += 1
        return self._given - 1

    def done(self, ticket: int, result: Any) -> list[Any]:
        """``ticket``'s work has finished with ``result``: the results that may
        now go out, in order (none while an earlier one is still running)."""
        self._done[ticket] = result
        ready = []
        while self._next in self._done:
            ready.append(self._done.pop(self._next))
            self._next += 1
        return ready
