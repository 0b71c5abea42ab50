"""Ray cases: a local Ray instance per case, and a Ray actor chain written by hand.

The hand-written chain is what a competent Ray user writes for a streaming
pipeline with Ray Core: a source actor hands out batches of 1024 items (Ray
Data's default batch size), one actor per stage worker, each batch's ObjectRef
passed from actor to actor without the driver fetching it, a stage's workers
taken in turn, a bounded window of batches in flight so every actor always has
work queued, and results fetched in order.  No error handling, no adaptive
batching: the yardstick for the ray executor, which does the same with a
driver that schedules every call.

Both kinds of case time the run only: ``ray.init`` (a few seconds, paid once per
process by any Ray program) comes before the clock starts; starting the actors
and stopping them are inside it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

BATCH = 1024
DEPTH = 4  # batches in flight per worker of the widest stage


def init() -> None:
    """A local Ray instance for this case's process (never one running elsewhere)."""
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)


def shutdown() -> None:
    import ray

    ray.shutdown()


class _Source:
    def __init__(self, items: Callable[[], Iterable[Any]], batch: int) -> None:
        self.items = iter(items())
        self.batch = batch

    def next(self) -> tuple[list[Any], bool]:
        """The next batch, and whether more may follow."""
        chunk = list(itertools.islice(self.items, self.batch))
        return chunk, len(chunk) == self.batch


class _Map:
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def apply(self, items: list[Any]) -> list[Any]:
        fn = self.fn
        return [fn(x) for x in items]


def chain(
    items: Callable[[], Iterable[Any]],
    *stages: Callable[[Any], Any],
    workers: tuple[int, ...] | None = None,
    batch: int = BATCH,
    depth: int = DEPTH,
) -> Iterator[list[Any]]:
    """Yield ``stages[-1](...stages[0](x))`` for every ``x`` of ``items()``, a batch
    at a time, ``items()`` running in a source actor and each stage in
    ``workers[i]`` actors."""
    import ray

    workers = workers or (1,) * len(stages)
    source = ray.remote(_Source).remote(items, batch)
    maps = [
        [ray.remote(_Map).remote(fn) for _ in range(w)]
        for fn, w in zip(stages, workers, strict=True)
    ]
    window: deque[tuple[Any, Any]] = deque()
    sent, more = 0, True
    try:
        while more or window:
            while more and len(window) < depth * max(workers):
                data, has_more = source.next.options(num_returns=2).remote()
                for actors in maps:
                    data = actors[sent % len(actors)].apply.remote(data)
                window.append((has_more, data))
                sent += 1
            has_more, data = window.popleft()
            more = more and ray.get(has_more)
            yield ray.get(data)
    finally:
        for actor in [source, *itertools.chain.from_iterable(maps)]:
            ray.kill(actor)
