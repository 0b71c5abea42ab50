"""W3: 8 MB numpy arrays through source → identity → sink: two process hops, in MB/s,
with the peak RSS of the whole process tree.

``raw /dev/shm`` is the shared-memory ceiling: the same three processes joined by
two hops through ``/dev/shm`` written by hand for this one job.

The pipelines run source, identity and sink in three processes (pypeln's source
is its usual feeder thread in the driver, so its hops are driver → identity →
sink).  For mpire and Pool the driver is source and sink, the pool runs the
identity: also two hops.  The sink checks every array's size and counts them.
"""

from __future__ import annotations

import time
import warnings

from _common import START_METHOD, Case, PeakRSS, flowdsl_executor

ITEMS = 1_000_000  # float64: 8 MB per array
MB = 1e6


def arrays(n):
    """``n`` arrays of 8 MB that cost the source nothing: each is a new view of one
    buffer.  Each must be a new object: pickle stores an object met twice in one
    batch only once, so yielding the same array again would send it once per batch."""
    import numpy as np

    a = np.ones(ITEMS)
    for _ in range(n):
        yield a[:]


def identity(x):
    return x


def check(x):
    if x.nbytes != ITEMS * 8:
        raise AssertionError(f"got {x.nbytes} bytes")


def _result(n: int, t0: float, count: int) -> dict[str, float]:
    seconds = time.perf_counter() - t0
    if count != n:
        raise AssertionError(f"{count} arrays arrived of {n}")
    return {"mb_per_s": n * ITEMS * 8 / MB / seconds, "seconds": seconds}


def _count_arrays(acc, x):
    check(x)
    return acc + 1


# -- one function per library (serial does not apply: no hop, nothing is copied) ---------
def raw(n: int) -> dict[str, float]:
    import _raw

    t0 = time.perf_counter()
    # 8 MB items go one by one: 256 of them would make 2 GB messages
    count = _raw.reduce_in_sink(lambda: arrays(n), identity, sink=_count_arrays, initial=0, batch=1)
    return _result(n, t0, count)


def raw_shm(n: int) -> dict[str, float]:
    import _raw

    t0 = time.perf_counter()
    count = _raw.shm_reduce_in_sink(
        lambda: arrays(n),
        identity,
        sink=_count_arrays,
        initial=0,
        nbytes=ITEMS * 8,
        dtype="float64",
    )
    return _result(n, t0, count)


def flowdsl(n: int) -> dict[str, float]:
    from flowdsl import sink, source, transform

    t0 = time.perf_counter()
    flow = source(arrays)(n) >> transform(identity) >> sink(check)
    report = flow.run(executor=flowdsl_executor())
    return _result(n, t0, report.stages["check"].items_in)


class _CountSink:
    def __init__(self, queue):
        self.queue, self.count = queue, 0

    def run(self, x):
        self.count = _count_arrays(self.count, x)

    def local_term(self):
        self.queue.put(self.count)


def minipipe(n: int) -> dict[str, float]:
    import multiprocessing as mp

    import minipipe as mpp

    t0 = time.perf_counter()
    results = mp.Queue()
    line = mpp.PipeLine()
    line.add(mpp.Source(arrays(n), "arrays"))
    line.add(mpp.Transform(identity, "identity"))
    line.add(mpp.Sink(_CountSink(results), "check"))
    line.build(log_lvl="ERROR")
    line.run()
    count = results.get()
    line.close()
    return _result(n, t0, count)


def pypeln(n: int) -> dict[str, float]:
    import pypeln as pl

    t0 = time.perf_counter()
    stage = pl.process.map(identity, arrays(n))
    stage = pl.process.map(lambda x: check(x) or 1, stage)  # the sink: 1 per array
    count = sum(stage)
    return _result(n, t0, count)


def mpire(n: int) -> dict[str, float]:
    from mpire import WorkerPool

    t0 = time.perf_counter()
    count = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # unsized stream: chunks of 4
        with WorkerPool(n_jobs=2, start_method=START_METHOD) as pool:
            for x in pool.imap(identity, arrays(n)):
                count = _count_arrays(count, x)
    return _result(n, t0, count)


def pool(n: int) -> dict[str, float]:
    import multiprocess

    t0 = time.perf_counter()
    count = 0
    with multiprocess.get_context(START_METHOD).Pool(2) as p:
        for x in p.imap(identity, arrays(n)):
            count = _count_arrays(count, x)
    return _result(n, t0, count)


def with_peak_rss(function: str, n: int) -> dict[str, float]:
    """Run one library's function, adding the peak RSS of the process tree."""
    with PeakRSS() as rss:
        result = globals()[function](n)
    return {**result, "peak_mb": rss.peak}


def cases(quick: bool) -> list[Case]:
    n = 6 if quick else 48  # 384 MB a run: 1-2 s through a pipe
    # flowdsl and the shared-memory ceiling move arrays through shared memory: 48
    # of them take ~0.2 s, mostly start-up, so their cases run 10x more, ~1 s
    many = 60 if quick else 480
    out = []
    for label, fn in [
        ("raw", "raw"),
        ("raw /dev/shm", "raw_shm"),
        ("flowdsl", "flowdsl"),
        ("minipipe", "minipipe"),
        ("pypeln", "pypeln"),
        ("mpire", "mpire"),
        ("Pool", "pool"),
    ]:
        if fn in ("flowdsl", "raw_shm"):
            out.append(
                Case(
                    label,
                    label,
                    "with_peak_rss",
                    {"function": fn, "n": many},
                    note=f"{many} arrays (48 take ~0.2 s, mostly start-up)",
                )
            )
        else:
            out.append(Case(label, label, "with_peak_rss", {"function": fn, "n": n}))
    return out
