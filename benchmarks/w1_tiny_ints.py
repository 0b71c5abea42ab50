"""W1: tiny ints through source → +1 → *2 → sum, in items per second.

The pipelines (raw, flowdsl, minipipe, pypeln) run one process per stage and sum
in the driver (minipipe, which cannot return items to the driver, sums in a sink
process).  mpire and Pool are maps, not pipelines: their 2 workers run +1 and *2
fused, the driver feeds the stream and sums.  On Ray, flowdsl's ray executor and
a Ray actor chain written by hand run one actor per stage (``ray.init`` not timed).
``flowdsl check_types`` is flowdsl with ``check_types=True`` on both transforms:
the cost of checking every item and result against the annotations.
"""

from __future__ import annotations

import time
import warnings

from _common import START_METHOD, Case, flowdsl_executor


def numbers(n):
    """The stream: a generator, so no library knows its length in advance."""
    yield from range(n)


def add1(x: int) -> int:
    return x + 1


def mul2(x: int) -> int:
    return x * 2


def add1_mul2(x):
    return mul2(add1(x))


def _result(n: int, t0: float, total: int) -> dict[str, float]:
    seconds = time.perf_counter() - t0
    if total != n * (n + 1):
        raise AssertionError(f"wrong sum {total}, expected {n * (n + 1)}: items lost?")
    return {"items_per_s": n / seconds, "seconds": seconds}


# -- one function per library -------------------------------------------------------------
def serial(n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    total = sum(mul2(add1(x)) for x in numbers(n))
    return _result(n, t0, total)


def raw(n: int) -> dict[str, float]:
    import _raw

    t0 = time.perf_counter()
    total = sum(_raw.pipeline(lambda: numbers(n), add1, mul2))
    return _result(n, t0, total)


def flowdsl(n: int, check_types: bool = False) -> dict[str, float]:
    from flowdsl import source, transform

    t0 = time.perf_counter()
    flow = (
        source(numbers)(n)
        >> transform(add1, check_types=check_types)
        >> transform(mul2, check_types=check_types)
    )
    total = sum(flow.iterate(executor=flowdsl_executor()))
    return _result(n, t0, total)


class _SumSink:
    """minipipe: a sink process sums, and hands the total back through a queue."""

    def __init__(self, queue):
        self.queue, self.total = queue, 0

    def run(self, x):
        self.total += x

    def local_term(self):
        self.queue.put(self.total)


def minipipe(n: int) -> dict[str, float]:
    import multiprocessing as mp

    import minipipe as mpp

    t0 = time.perf_counter()
    results = mp.Queue()
    line = mpp.PipeLine()
    line.add(mpp.Source(numbers(n), "numbers"))
    line.add(mpp.Transform(add1, "add1"))
    line.add(mpp.Transform(mul2, "mul2"))
    line.add(mpp.Sink(_SumSink(results), "sum"))
    line.build(log_lvl="ERROR")
    line.run()
    total = results.get()
    line.close()
    return _result(n, t0, total)


def pypeln(n: int) -> dict[str, float]:
    import pypeln as pl

    t0 = time.perf_counter()
    stage = pl.process.map(add1, numbers(n))
    stage = pl.process.map(mul2, stage)
    total = sum(stage)
    return _result(n, t0, total)


def mpire(n: int, chunk_size: int | None = None) -> dict[str, float]:
    from mpire import WorkerPool

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # without chunk_size, an unsized stream gets chunks of 4 and a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        with WorkerPool(n_jobs=2, start_method=START_METHOD) as pool:
            total = sum(pool.imap(add1_mul2, numbers(n), chunk_size=chunk_size))
    return _result(n, t0, total)


def pool(n: int) -> dict[str, float]:
    import multiprocess

    t0 = time.perf_counter()
    with multiprocess.get_context(START_METHOD).Pool(2) as p:
        total = sum(p.imap(add1_mul2, numbers(n), chunksize=256))
    return _result(n, t0, total)


def flowdsl_ray(n: int) -> dict[str, float]:
    import _ray

    from flowdsl import RayExecutor, source, transform

    _ray.init()
    try:
        t0 = time.perf_counter()
        flow = source(numbers)(n) >> transform(add1) >> transform(mul2)
        total = sum(flow.iterate(executor=RayExecutor()))
        return _result(n, t0, total)
    finally:
        _ray.shutdown()


def ray_by_hand(n: int) -> dict[str, float]:
    import _ray

    _ray.init()
    try:
        t0 = time.perf_counter()
        total = sum(sum(batch) for batch in _ray.chain(lambda: numbers(n), add1, mul2))
        return _result(n, t0, total)
    finally:
        _ray.shutdown()


def cases(quick: bool, ray: bool = True) -> list[Case]:
    def n(full: int) -> int:
        return max(1000, full // 50) if quick else full

    return [
        Case("serial", "serial", "serial", {"n": n(5_000_000)}),
        Case("raw", "raw", "raw", {"n": n(5_000_000)}),
        Case("flowdsl", "flowdsl", "flowdsl", {"n": n(3_000_000)}),
        Case(
            "flowdsl check_types",
            "flowdsl",
            "flowdsl",
            {"n": n(1_000_000), "check_types": True},
            note="every item and result checked against the annotations",
        ),
        Case("minipipe", "minipipe", "minipipe", {"n": n(20_000)}),
        Case("pypeln", "pypeln", "pypeln", {"n": n(5_000)}),
        Case(
            "mpire",
            "mpire",
            "mpire",
            {"n": n(60_000)},
            note="defaults: an unsized stream gets chunk_size=4",
        ),
        Case("mpire chunk=256", "mpire", "mpire", {"n": n(400_000), "chunk_size": 256}),
        Case("Pool", "Pool", "pool", {"n": n(1_000_000)}, note="imap, chunksize=256"),
    ] + (
        [
            Case(
                "flowdsl-ray",
                "flowdsl-ray",
                "flowdsl_ray",
                {"n": n(2_000_000)},
                timeout=120,
                note="RayExecutor(), a local Ray instance",
            ),
            Case(
                "ray-by-hand",
                "ray-by-hand",
                "ray_by_hand",
                {"n": n(2_000_000)},
                timeout=120,
                note="actor chain, batches of 1024 (benchmarks/_ray.py)",
            ),
        ]
        if ray
        else []
    )
