"""W2: CPU-bound items, about 1 ms of pure Python each, through one stage run by
1 worker and by 2 workers: items per second, and the speed-up of 2 over 1.

source → burn (w workers) → driver.  run.py calibrates ``loops`` once so that
``burn`` takes about 1 ms here, and gives every case the same value.  The Ray
cases (flowdsl's ray executor, a Ray actor chain written by hand) run 2000 items,
as starting their actors takes about a second (``ray.init`` is not timed).
"""

from __future__ import annotations

import functools
import time
import warnings

from _common import START_METHOD, Case, flowdsl_executor


def numbers(n):
    yield from range(n)


def burn(x, loops):
    """About 1 ms of pure-Python arithmetic (for the calibrated ``loops``)."""
    acc = x
    for i in range(loops):
        acc = (acc * 31 + i) % 1_000_003
    return acc


def calibrate(target: float = 0.001) -> int:
    """The ``loops`` for which ``burn`` takes ``target`` seconds on this machine."""
    loops = 20_000
    for _ in range(3):
        t0 = time.perf_counter()
        for x in range(20):
            burn(x, loops)
        per_call = (time.perf_counter() - t0) / 20
        loops = max(1, int(loops * target / per_call))
    return loops


def _result(n: int, t0: float, count: int) -> dict[str, float]:
    seconds = time.perf_counter() - t0
    if count != n:
        raise AssertionError(f"{count} results for {n} items")
    return {"items_per_s": n / seconds, "seconds": seconds}


# -- one function per library -------------------------------------------------------------
def serial(n: int, loops: int, workers: int = 1) -> dict[str, float]:
    t0 = time.perf_counter()
    count = sum(1 for x in numbers(n) if burn(x, loops) is not None)
    return _result(n, t0, count)


def raw(n: int, loops: int, workers: int) -> dict[str, float]:
    import _raw

    t0 = time.perf_counter()
    fn = functools.partial(burn, loops=loops)
    # 1 ms items: batches of 8, not 256, or 2 workers could not share 1000 items evenly
    count = sum(1 for _ in _raw.pipeline(lambda: numbers(n), fn, workers=(workers,), batch=8))
    return _result(n, t0, count)


def flowdsl(n: int, loops: int, workers: int) -> dict[str, float]:
    from flowdsl import source, transform

    t0 = time.perf_counter()
    flow = source(numbers)(n) >> transform(burn, workers=workers)(loops=loops)
    count = sum(1 for _ in flow.iterate(executor=flowdsl_executor()))
    return _result(n, t0, count)


class _CountSink:
    def __init__(self, queue):
        self.queue, self.count = queue, 0

    def run(self, x):
        self.count += 1

    def local_term(self):
        self.queue.put(self.count)


def minipipe(n: int, loops: int, workers: int) -> dict[str, float]:
    import multiprocessing as mp

    import minipipe as mpp

    t0 = time.perf_counter()
    results = mp.Queue()
    line = mpp.PipeLine()
    line.add(mpp.Source(numbers(n), "numbers"))
    line.add(mpp.Transform(functools.partial(burn, loops=loops), "burn"), n_processes=workers)
    line.add(mpp.Sink(_CountSink(results), "count"))
    line.build(log_lvl="ERROR")
    line.run()
    count = results.get()
    line.close()
    return _result(n, t0, count)


def pypeln(n: int, loops: int, workers: int) -> dict[str, float]:
    import pypeln as pl

    t0 = time.perf_counter()
    stage = pl.process.map(functools.partial(burn, loops=loops), numbers(n), workers=workers)
    count = sum(1 for _ in stage)
    return _result(n, t0, count)


def mpire(n: int, loops: int, workers: int) -> dict[str, float]:
    from mpire import WorkerPool

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unsized stream: chunks of 4
        with WorkerPool(n_jobs=workers, start_method=START_METHOD) as pool:
            count = sum(1 for _ in pool.imap(functools.partial(burn, loops=loops), numbers(n)))
    return _result(n, t0, count)


def pool(n: int, loops: int, workers: int) -> dict[str, float]:
    import multiprocess

    t0 = time.perf_counter()
    with multiprocess.get_context(START_METHOD).Pool(workers) as p:
        count = sum(1 for _ in p.imap(functools.partial(burn, loops=loops), numbers(n)))
    return _result(n, t0, count)


def flowdsl_ray(n: int, loops: int, workers: int) -> dict[str, float]:
    import _ray

    from flowdsl import RayExecutor, source, transform

    _ray.init()
    try:
        t0 = time.perf_counter()
        flow = source(numbers)(n) >> transform(burn, workers=workers)(loops=loops)
        count = sum(1 for _ in flow.iterate(executor=RayExecutor()))
        return _result(n, t0, count)
    finally:
        _ray.shutdown()


def ray_by_hand(n: int, loops: int, workers: int) -> dict[str, float]:
    import _ray

    _ray.init()
    try:
        t0 = time.perf_counter()
        fn = functools.partial(burn, loops=loops)
        # 1 ms items: batches of 8, so that 2 workers share the stream evenly
        count = sum(
            len(batch) for batch in _ray.chain(lambda: numbers(n), fn, workers=(workers,), batch=8)
        )
        return _result(n, t0, count)
    finally:
        _ray.shutdown()


def cases(quick: bool, loops: int = 0, ray: bool = True) -> list[Case]:
    n = 100 if quick else 1000
    out = [Case("serial", "serial", "serial", {"n": n, "loops": loops, "workers": 1})]
    libraries = [
        ("raw", "raw"),
        ("flowdsl", "flowdsl"),
        ("minipipe", "minipipe"),
        ("pypeln", "pypeln"),
        ("mpire", "mpire"),
        ("Pool", "pool"),
    ]
    for lib, fn in libraries:
        for w in (1, 2):
            out.append(Case(f"{lib} w={w}", lib, fn, {"n": n, "loops": loops, "workers": w}))
    for lib, fn in [("flowdsl-ray", "flowdsl_ray"), ("ray-by-hand", "ray_by_hand")] if ray else []:
        for w in (1, 2):
            out.append(
                Case(
                    f"{lib} w={w}", lib, fn, {"n": 2 * n, "loops": loops, "workers": w}, timeout=120
                )
            )
    return out
