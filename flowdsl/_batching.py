"""Batches for vectorised code: ``batch(n)`` groups items into lists of up to n,
``unbatch`` spreads lists out again, and ``@transform(batch=n)`` is the two
around one stage.

A batch is a :class:`~flowdsl.Regulator` (one worker, whose state is the list it
fills), so it ends like one: at the end of the stream the last, partial list goes
out.  With ``wait``, a partial list also goes out once its first item has waited
that long, so a slow stream still moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ._sentinel import Sentinel
from ._stages import Regulator, transform
from .errors import GraphError

__all__ = ["FLUSH", "Batch", "batch", "unbatch"]


class _Flush:
    """Sent into a batch's coroutine when its partial list is to go out."""

    def __repr__(self) -> str:
        return "FLUSH"


FLUSH = _Flush()


class Batcher:
    """The coroutine of a batch: it fills ``held`` and yields it when full, on
    FLUSH, and at the end of the stream."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.held: list[Any] = []

    def take(self, items: list[Any]) -> list[list[Any]]:
        """Add ``items``; return the lists they filled (the fast path for a
        batch of items, beside the coroutine's one item at a time)."""
        held, n = self.held, self.n
        if len(held) + len(items) < n:
            held.extend(items)
            return []
        full, i = [], n - len(held)
        full.append(held + items[:i])
        while i + n <= len(items):
            full.append(items[i : i + n])
            i += n
        self.held = items[i:]
        return full

    def run(self) -> Iterator[list[Any] | None]:
        self.held = []
        while True:
            try:
                x = yield None
            except Sentinel:
                if self.held:
                    yield self.held
                return
            if x is FLUSH:
                if self.held:
                    full, self.held = self.held, []
                    yield full
                continue
            self.held.append(x)
            if len(self.held) >= self.n:
                full, self.held = self.held, []
                yield full


class Batch(Regulator):
    """Groups items into lists of up to ``n``; ``wait`` (seconds) bounds how long
    the first item of a partial list waits for the rest."""

    _default_name = "batch"

    def __init__(self, n: int, *, wait: float | None = None, name: str | None = None) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise GraphError(f"batch: n must be an integer >= 1, got {n!r}")
        if wait is not None and (
            isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait > 0
        ):
            raise GraphError(f"batch: wait must be a number of seconds > 0, got {wait!r}")
        super().__init__(Batcher(n), name=name or "batch")
        self.n, self.wait = n, wait

    def _check_options(self) -> None:
        super()._check_options()
        if self.workers != 1:
            raise GraphError(
                f"transform {self.name!r}: a batch runs in exactly one worker "
                f"(it fills one list at a time); give the stage after it "
                f"the workers"
            )

    def __repr__(self) -> str:
        return f"batch({self.n}{'' if self.wait is None else f', wait={self.wait}'})"


def batch(n: int, *, wait: float | None = None, name: str | None = None) -> Batch:
    """A stage that groups items into lists of up to ``n`` (the last one may be
    shorter), for a stage that works on many items at once (numpy, a model):
    ``numbers >> batch(256) >> vectorised >> unbatch``.

    ``@transform(batch=n)`` does the same for one stage, and spreads its
    results again.

    Args:
        n: The most items per list.
        wait: Send a partial list once its first item has waited this many
            seconds, for streams that trickle (the process executor; the serial
            and Ray executors send it when it is full or the stream ends).
        name: The stage's name (default ``"batch"``).

    Returns:
        A transform making lists.

    Raises:
        GraphError: ``n`` is not a positive integer, or ``wait`` is not a
            positive number (a ``ValueError``).

    A batch stage runs in one worker (it fills its lists in order).

    Examples:
        >>> from flowdsl import batch, source, unbatch
        >>> @source
        ... def numbers(n):
        ...     yield from range(n)
        >>> (numbers(5) >> batch(2)).collect()
        [[0, 1], [2, 3], [4]]
        >>> (numbers(5) >> batch(2) >> unbatch).collect()
        [0, 1, 2, 3, 4]
    """
    return Batch(n, wait=wait, name=name)


@transform
def unbatch(items: Iterable[Any]) -> Iterator[Any]:
    """Spread each list (or any iterable) into its items.

    The inverse of :func:`batch`, and a transform like any other.

    Examples:
        >>> from flowdsl import source, unbatch
        >>> @source
        ... def rows():
        ...     yield from [[1, 2], [], [3]]
        >>> (rows() >> unbatch).collect()
        [1, 2, 3]
    """
    yield from items
