"""W9: slow items shared among many workers, at the default ``buffer``.

200 items of 50 ms over 32 workers, and 2,000 items of 5 ms over 8: the ideal
time is items x seconds / workers (0.31 s and 1.25 s), plus the start-up of the
workers. A library that hands early items out in growing batches leaves most
workers idle. The calls sleep (as IO or a native library would), so the two
cores of a small machine are not the limit. Peers: mpire's ``imap`` and
multiprocess ``Pool.imap`` at their defaults (the latter's ``chunksize=1`` shares
items one at a time).
"""

from __future__ import annotations

import os
import time

from _common import START_METHOD, Case, flowdsl_executor


def numbers(n: int):
    yield from range(n)


def nap(x: int, seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def _result(n: int, seconds: float, workers: int, t0: float, pids: list[int]) -> dict:
    took = time.perf_counter() - t0
    if len(pids) != n:
        raise AssertionError(f"{len(pids)} results of {n}")
    ideal = n * seconds / workers
    return {"flow_s": took, "vs_ideal": took / ideal, "busy_workers": len(set(pids))}


def flowdsl(n: int, seconds: float, workers: int) -> dict:
    from flowdsl import source, transform

    t0 = time.perf_counter()
    flow = source(numbers)(n) >> transform(nap, workers=workers)(seconds=seconds)
    pids = list(flow.iterate(executor=flowdsl_executor()))
    return _result(n, seconds, workers, t0, pids)


def mpire(n: int, seconds: float, workers: int) -> dict:
    import functools
    import warnings

    from mpire import WorkerPool

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unsized stream
        with WorkerPool(n_jobs=workers, start_method=START_METHOD) as pool:
            pids = list(pool.imap(functools.partial(nap, seconds=seconds), numbers(n)))
    return _result(n, seconds, workers, t0, pids)


def pool(n: int, seconds: float, workers: int) -> dict:
    import functools

    import multiprocess

    t0 = time.perf_counter()
    with multiprocess.get_context(START_METHOD).Pool(workers) as p:
        pids = list(p.imap(functools.partial(nap, seconds=seconds), numbers(n)))
    return _result(n, seconds, workers, t0, pids)


def cases(quick: bool) -> list[Case]:
    sizes = [(200, 0.05, 32), (2000, 0.005, 8)] if not quick else [(100, 0.05, 32)]
    out = []
    for n, seconds, workers in sizes:
        kwargs = {"n": n, "seconds": seconds, "workers": workers}
        tag = f"{n}x{seconds * 1000:.0f}ms w={workers}"
        out += [
            Case(f"flowdsl {tag}", "flowdsl", "flowdsl", kwargs),
            Case(f"mpire {tag}", "mpire", "mpire", kwargs),
            Case(f"Pool {tag}", "Pool", "pool", kwargs),
        ]
    return out
