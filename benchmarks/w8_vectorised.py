"""W8: a vectorised stage, per item and batched: ``x * 2 + 1`` in numpy over a
stream of 1 M floats (the flow ends there: its outputs are counted, not
collected, so the driver's share does not blur the stage's).

`per item` calls the stage once per float. `batch=1024` gives the same stage
lists of 1,024 floats, which numpy turns into one array operation, and spreads
the results out again; `then a sink` sends those results, numpy scalars, on to
one more stage. The ceiling is what a user
reaches by making the source yield arrays (`arrays from the source`): no
per-item hop at all.

numpy is imported at the top, as a user's script imports it: the workers start
with it loaded, and no case's time holds an import of numpy in a worker (50 to
90 ms here, about as long as the whole batched run).
"""

from __future__ import annotations

import time

import numpy as np
from _common import Case, flowdsl_executor


def floats(n: int):
    for i in range(n):
        yield float(i)


def affine(x):
    return np.multiply(x, 2.0) + 1.0


def _timed(flow, n: int, stage: str, outputs: int | None = None) -> dict[str, float]:
    t = time.perf_counter()
    report = flow.run(executor=flowdsl_executor())
    seconds = time.perf_counter() - t
    made, want = report[stage].items_out, n if outputs is None else outputs
    if made != want:
        raise AssertionError(f"{made} results of {want}")
    return {"items_per_s": n / seconds}


def per_item(n: int) -> dict[str, float]:
    from flowdsl import source, transform

    return _timed(source(floats)(n) >> transform(affine), n, "affine")


def vectorised(xs):
    return affine(np.asarray(xs))


def batched(n: int, size: int = 1024) -> dict[str, float]:
    from flowdsl import source, transform

    return _timed(source(floats)(n) >> transform(vectorised, batch=size), n, "vectorised")


class Count:
    def local_init(self):
        self.n = 0

    def run(self, x):
        self.n += 1


def batched_then_sink(n: int, size: int = 1024) -> dict[str, float]:
    from flowdsl import sink, source, transform

    flow = source(floats)(n) >> transform(vectorised, batch=size) >> sink(Count)()
    return _timed(flow, n, "vectorised")


def arrays(n: int, size: int = 1024) -> dict[str, float]:
    from flowdsl import source, transform

    def chunks(n):
        for start in range(0, n, size):
            yield np.arange(start, min(n, start + size), dtype=float)

    return _timed(source(chunks)(n) >> transform(affine), n, "affine", outputs=-(-n // size))


def cases(quick: bool) -> list[Case]:
    n = 100_000 if quick else 1_000_000
    return [
        Case("flowdsl per item", "flowdsl", "per_item", {"n": n}, timeout=120),
        Case("flowdsl batch=1024", "flowdsl", "batched", {"n": n}, timeout=120),
        Case(
            "flowdsl batch=1024, then a sink", "flowdsl", "batched_then_sink", {"n": n}, timeout=120
        ),
        Case("flowdsl arrays from the source", "flowdsl", "arrays", {"n": n}, timeout=120),
    ]
