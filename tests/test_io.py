"""IO-bound stages (``concurrency=N``) against a real HTTP server on localhost.

The server counts the requests it serves at once, so "N calls in flight, never
more" is checked where it matters, on the other end of the socket.
"""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import Fetch, Get, identity, listed, numbers
from http_server import Server
from hypothesis import given
from hypothesis import strategies as st

from flowdsl import (
    Failure,
    GraphError,
    StageError,
    StopFlow,
    Transform,
    loop,
    sink,
    source,
    transform,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server():
    with Server() as s:
        yield s


@pytest.fixture
def http(server):
    server.reset()
    return server


def fetch(http, n=16, **options):
    return Transform(Fetch(http.url, **options)).options(concurrency=n)


def get(http, n=16, **options):
    return Transform(Get(http.url, **options)).options(concurrency=n)


# -- what runs, and how many at once -------------------------------------------------


@pytest.mark.parametrize("client", [fetch, get], ids=["async", "threads"])
def test_n_calls_are_in_flight_at_once_and_never_more(http, executor, client):
    n = 64 if executor == "process" else 8
    flow = numbers(n) >> client(http, 16, delay=0.05)
    assert flow.collect(executor=executor) == list(range(n))
    if executor == "process":
        assert 8 < http.peak <= 16
    else:
        assert http.peak == 1  # the reference runs one item at a time


@pytest.mark.parametrize("client", [fetch, get], ids=["async", "threads"])
def test_an_ordered_stage_runs_other_calls_while_a_slow_one_holds_the_order(http, client):
    # The first call answers only once the server has served the 39 after it:
    # they must run, and wait for their turn, without taking its place.
    items = [(39, 0, "after"), *range(1, 40)]
    flow = listed(items) >> client(http, 4)
    assert flow.collect(timeout=30) == [39, *range(1, 40)]  # in order
    assert http.peak <= 4  # the held calls did not run on


@pytest.mark.parametrize("ordered", [True, False])
def test_workers_each_keep_n_calls_in_flight(http, ordered):
    # calls of 0.2 s: one worker alone would take 2.4 s, longer than the other two
    # take to start even as fresh interpreters, so their calls overlap in time
    flow = numbers(96) >> fetch(http, 8, delay=0.2).options(workers=3, ordered=ordered)
    got = flow.collect()
    assert got == list(range(96)) if ordered else sorted(got) == list(range(96))
    assert 8 < http.peak <= 24


@given(
    delays=st.lists(st.sampled_from([0, 0.001, 0.005, 0.02]), min_size=1, max_size=40),
    ordered=st.booleans(),
    workers=st.sampled_from([1, 2]),
)
def test_results_keep_input_order_whatever_each_call_takes(server, delays, ordered, workers):
    items = list(enumerate(delays))
    stage = Transform(Fetch(server.url)).options(concurrency=8, ordered=ordered, workers=workers)
    got = (listed(items) >> stage).collect()
    assert got == list(range(len(items))) if ordered else sorted(got) == list(range(len(items)))


def test_a_class_with_async_hooks_opens_one_session_per_worker(http, tmp_path):
    log = tmp_path / "log"
    flow = numbers(20) >> fetch(http, 4, path=str(log)).options(workers=2)
    assert flow.collect() == list(range(20))
    lines = log.read_text().splitlines()
    assert lines.count("local_term") == 2  # each worker closed its own session
    assert sorted(x for x in lines if x.startswith("start")) == sorted(
        f"start {i}" for i in range(20)
    )


def test_async_functions_generators_and_sources_run_on_every_executor(executor):
    @source
    async def ticks(n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @transform(concurrency=4)
    async def twice(x):
        await asyncio.sleep(0.001 * (x % 3))
        yield x
        yield x

    @transform  # async without concurrency: one call at a time, on the loop
    async def inc(x):
        return x + 1

    @sink(concurrency=3)
    async def keep(x):
        await asyncio.sleep(0)

    assert (ticks(5) >> twice >> inc).collect(executor=executor) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    report = (ticks(5) >> inc >> keep).run(executor=executor)
    assert report["keep"].items_in == 5


def test_zipped_items_and_bound_arguments_reach_async_calls(executor):
    @transform(concurrency=4)
    async def weigh(a, b, factor=1):
        await asyncio.sleep(0)
        return (a + b) * factor

    flow = [numbers(4), numbers(4) >> identity] >> weigh(factor=10)
    assert flow.collect(executor=executor) == [0, 20, 40, 60]


def test_an_async_loop_body_loses_no_item(executor):
    @transform(concurrency=8)
    async def step(x):
        await asyncio.sleep(0.001 * (x % 4))
        return x + 1

    flow = numbers(30) >> loop(step, until=lambda x: x >= 12)
    assert sorted(flow.collect(executor=executor)) == sorted(max(12, x + 1) for x in range(30))


# -- errors, stops and policies ------------------------------------------------------


@pytest.mark.parametrize("client", [Fetch, Get], ids=["async", "threads"])
def test_an_error_cancels_and_awaits_the_other_calls(http, tmp_path, client):
    log = tmp_path / "log"
    items = [(x, 0.0, "fail") if x == 40 else (x, 0.5) for x in range(64)]
    stage = Transform(client(http.url, path=str(log))).options(concurrency=64)
    start = time.monotonic()
    with pytest.raises(StageError, match="HTTP 500 for item 40") as info:
        (listed(items) >> stage).run()
    assert info.value.item == repr(items[40])
    assert time.monotonic() - start < 5
    lines = log.read_text().splitlines()
    assert lines[-1] == "local_term"  # after every call had ended
    starts = {x.split()[1] for x in lines if x.startswith("start")}
    ends = {x.split()[1] for x in lines if x.startswith("end")}
    assert len(starts) > 1 and starts == ends  # cancelled (async) or let finish (threads)


def test_a_failing_call_is_the_stages_error_with_its_item(http, executor):
    flow = numbers(8) >> fetch(http, 4, kind="fail")
    with pytest.raises(StageError) as info:
        flow.collect(executor=executor)
    assert info.value.stage == "Fetch" and "HTTP 500" in str(info.value)
    assert info.value.item in {repr(i) for i in range(8)}


@pytest.mark.parametrize("client", [fetch, get], ids=["async", "threads"])
def test_policies_apply_per_call(http, executor, client):
    # every item fails once: a retry makes each good, in its place
    assert (numbers(12) >> client(http, 4, kind="flaky").options(retries=1)).collect(
        executor=executor
    ) == list(range(12))
    http.reset()
    report = (numbers(6) >> client(http, 4, kind="fail").options(on_error="skip")).run(
        executor=executor
    )
    assert report["Fetch" if client is fetch else "Get"].errors == 6
    failures = []

    @sink
    def letters(f):
        assert isinstance(f, Failure)
        failures.append(f.item)

    kept = (numbers(5) >> client(http, 4, kind="fail").options(on_error=letters)).collect(
        executor="serial"
    )
    assert kept == [] and sorted(failures) == list(range(5))


def test_stop_flow_from_a_coroutine_ends_the_flow_cleanly(executor):
    @transform(concurrency=4)
    async def until_five(x):
        await asyncio.sleep(0)
        if x == 5:
            raise StopFlow
        return x

    report = (numbers(10**6) >> until_five).run(executor=executor)
    assert report.stopped
    assert report["until_five"].items_out >= 5  # settled in order: 0 to 4 came first


def test_the_report_shows_how_many_calls_were_in_flight(http):
    report = (numbers(40) >> fetch(http, 10, delay=0.05)).run()
    assert report["Fetch"].max_in_flight == 10
    assert report["Fetch"].in_flight == 0  # at the end, none
    assert report["Fetch"].busy_seconds >= 0.15  # calls in flight: the stage was busy
    assert "Fetch: at most 10 calls in flight" in repr(report)


# -- backpressure --------------------------------------------------------------------


def test_a_slow_consumer_holds_back_the_calls(http, tmp_path):
    """Behind a slow sink, the stage starts calls only as room frees downstream:
    what it has fetched and the sink has not seen stays bounded."""
    log = tmp_path / "ahead"
    url = http.url

    @sink(buffer=8)
    def slow(x):
        import urllib.request

        with urllib.request.urlopen(f"{url}/stats/") as r:  # what the server has served
            served = int(r.read().split()[0])
        with open(log, "a") as f:
            f.write(f"{served - 2 * x}\n")  # (one /stats/ request per item seen)

    (numbers(600) >> fetch(http, 8).options(buffer=8) >> slow).run()
    ahead = [int(line) for line in log.read_text().split()]
    assert len(ahead) == 600
    assert max(ahead) <= 64, max(ahead)  # not 600: the calls wait for room
    assert http.peak <= 9  # (8 calls, and the sink's own request)


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", True])
def test_concurrency_must_be_a_positive_integer(bad):
    with pytest.raises(GraphError, match="concurrency must be an integer >= 1"):
        transform(concurrency=bad)(lambda x: x)


def test_concurrency_that_cannot_apply_is_refused_naming_the_stage():
    def flat(x):
        yield x

    with pytest.raises(GraphError, match=r"transform 'flat'.*async generator"):
        transform(concurrency=4)(flat)

    async def agen():
        yield 1

    with pytest.raises(GraphError, match=r"source 'agen'.*one item at a time"):
        source(agen).options(concurrency=2)

    class HalfAsync:
        async def local_init(self):
            pass

        def run(self, x):
            return x

    with pytest.raises(GraphError, match="local_init is a coroutine function but run"):
        Transform(HalfAsync())


# -- Ctrl-C --------------------------------------------------------------------------

CTRL_C = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from helpers import Fetch, numbers
    from http_server import Server
    from flowdsl import Transform

    with Server(announce=8) as server:
        log = {log!r}
        stage = Transform(Fetch(server.url, delay=30, path=log), concurrency=8)

        try:
            for x in (numbers(100) >> stage).iterate():
                pass
        except KeyboardInterrupt:
            print("interrupted", flush=True)
""")


def test_ctrl_c_cancels_the_calls_in_flight_and_runs_local_term(tmp_path):
    log = tmp_path / "log"
    code = CTRL_C.format(tests=os.path.dirname(__file__), log=str(log))
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            assert proc.stdout.readline().strip() == "running"  # 8 calls in flight
            os.killpg(proc.pid, signal.SIGINT)
            out, _ = proc.communicate(timeout=15)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert "interrupted" in out
    lines = log.read_text().splitlines()
    assert lines[-1] == "local_term"
    assert sum(x.startswith("start") for x in lines) == 8
    assert sum(x.startswith("end") for x in lines) == 8  # each cancelled, and awaited
