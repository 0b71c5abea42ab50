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

import contextlib
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


@contextlib.contextmanager
def cluster() -> Iterator[None]:
    """A Ray cluster of three nodes on this machine, connected to: a head that
    runs no actor (the driver's), and nodes ``a`` and ``b`` of 2 CPUs each, with a
    resource of their own to pin stages to (``pinned("a")``).  Each node has its
    own raylet and object store, so items between ``a`` and ``b`` cross nodes as
    on a real cluster (over loopback, not a network)."""
    import ray
    from ray.cluster_utils import Cluster

    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for name in "ab":
            made.add_node(num_cpus=2, resources={name: 8})
        made.wait_for_nodes()
        ray.init(address=made.address, log_to_driver=False, configure_logging=False)
        yield
    finally:
        ray.shutdown()
        made.shutdown()


def pinned(node: str) -> dict[str, Any]:
    """Actor options that put an actor on node ``node`` of :func:`cluster`."""
    return {"num_cpus": 0, "resources": {node: 1}}


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
    source_options: dict[str, Any] | None = None,
    options: tuple[dict[str, Any], ...] | None = None,
) -> Iterator[list[Any]]:
    """Yield ``stages[-1](...stages[0](x))`` for every ``x`` of ``items()``, a batch
    at a time, ``items()`` running in a source actor and each stage in
    ``workers[i]`` actors (made with ``options[i]``, the source with
    ``source_options``: where they run on a cluster)."""
    import ray

    workers = workers or (1,) * len(stages)
    options = options or ({},) * len(stages)
    source = ray.remote(_Source).options(**(source_options or {})).remote(items, batch)
    maps = [
        [ray.remote(_Map).options(**opts).remote(fn) for _ in range(w)]
        for fn, w, opts in zip(stages, workers, options, strict=True)
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
