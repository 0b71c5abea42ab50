"""W5: latency of one item through 3 stages at a low rate (200 items/s).

The source stamps each item with ``time.monotonic()`` (one clock for all
processes on Linux) as it emits it, on a fixed schedule; the driver (minipipe:
a sink process) subtracts the stamp from the time of arrival after source →
identity → identity.  mpire and Pool have one stage, so their items make two
hops instead of three; both use chunks of 1 here, like raw (batches of 1: a
hand-written low-latency pipeline sends every item at once).  The first
``WARMUP`` items are not counted.
"""

from __future__ import annotations

import statistics
import time

from _common import START_METHOD, Case, flowdsl_executor

WARMUP = 20


def paced(n, rate):
    """``n`` timestamps, one every ``1/rate`` seconds."""
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield time.monotonic()


def identity(x):
    return x


def _result(latencies: list[float], n: int) -> dict[str, float]:
    if len(latencies) != n:
        raise AssertionError(f"{len(latencies)} items arrived of {n}")
    ms = sorted(1000 * x for x in latencies[WARMUP:])
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50_ms": q[49], "p99_ms": q[98], "max_ms": ms[-1]}


def _arrivals(stamps) -> list[float]:
    return [time.monotonic() - t for t in stamps]


# -- one function per library -------------------------------------------------------------
def serial(n: int, rate: float) -> dict[str, float]:
    return _result(_arrivals(identity(identity(t)) for t in paced(n, rate)), n)


def raw(n: int, rate: float) -> dict[str, float]:
    import _raw

    return _result(_arrivals(_raw.pipeline(lambda: paced(n, rate), identity, identity, batch=1)), n)


def flowdsl(n: int, rate: float) -> dict[str, float]:
    from flowdsl import source, transform

    flow = source(paced)(n, rate) >> transform(identity) >> transform(identity)
    return _result(_arrivals(flow.iterate(executor=flowdsl_executor())), n)


class _LatencySink:
    def __init__(self, queue):
        self.queue, self.latencies = queue, []

    def run(self, t):
        self.latencies.append(time.monotonic() - t)

    def local_term(self):
        self.queue.put(self.latencies)


def minipipe(n: int, rate: float) -> dict[str, float]:
    import multiprocessing as mp

    import minipipe as mpp

    results = mp.Queue()
    line = mpp.PipeLine()
    line.add(mpp.Source(paced(n, rate), "paced"))
    line.add(mpp.Transform(identity, "identity_1"))
    line.add(mpp.Transform(identity, "identity_2"))
    line.add(mpp.Sink(_LatencySink(results), "latency"))
    line.build(log_lvl="ERROR")
    line.run()
    latencies = results.get()
    line.close()
    return _result(latencies, n)


def pypeln(n: int, rate: float) -> dict[str, float]:
    import pypeln as pl

    stage = pl.process.map(identity, paced(n, rate))
    stage = pl.process.map(identity, stage)
    return _result(_arrivals(stage), n)


def mpire(n: int, rate: float) -> dict[str, float]:
    from mpire import WorkerPool

    with WorkerPool(n_jobs=2, start_method=START_METHOD) as pool:
        return _result(_arrivals(pool.imap(identity, paced(n, rate), chunk_size=1)), n)


def pool(n: int, rate: float) -> dict[str, float]:
    import multiprocess

    with multiprocess.get_context(START_METHOD).Pool(2) as p:
        return _result(_arrivals(p.imap(identity, paced(n, rate), chunksize=1)), n)


def cases(quick: bool) -> list[Case]:
    kwargs = {"n": 60 if quick else 420, "rate": 200.0}
    return [
        Case(lib, lib, fn, kwargs, timeout=30)
        for lib, fn in [
            ("serial", "serial"),
            ("raw", "raw"),
            ("flowdsl", "flowdsl"),
            ("minipipe", "minipipe"),
            ("pypeln", "pypeln"),
            ("mpire", "mpire"),
            ("Pool", "pool"),
        ]
    ]
