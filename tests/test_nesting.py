"""A stage may start processes of its own: run a flow, use a Pool.  That works on
every start method, and what a stage started never outlives it."""

import concurrent.futures
import contextlib
import os
import signal
import time

import multiprocess
import psutil
import pytest
from conftest import start_method
from helpers import fail_on, ignore, inc, numbers, pid_of

from flowdsl import FlowError, StageError, WorkerDied, sink, transform

GRACE = 5  # seconds a process may take to notice that its parent died


@transform
def inner_sum(n):
    """Runs a flow of its own, on the process executor."""
    return sum((numbers(n) >> inc).collect(timeout=30))


@transform
def pooled_sum(n):
    with multiprocess.Pool(2) as pool:
        return sum(pool.map(abs, range(-n, 0)))


@transform
def futures_sum(n):
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        return sum(pool.map(abs, range(-n, 0)))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("stage", [inner_sum, pooled_sum, futures_sum], ids=lambda s: s.name)
def test_a_stage_can_start_processes_of_its_own(executor, stage, capfd):
    got = (numbers(4) >> stage.options(workers=2)).collect(executor=executor, timeout=60)
    assert got == [n * (n + 1) // 2 for n in range(4)]
    assert "Traceback" not in capfd.readouterr().err  # pools stop their workers quietly


def test_an_error_in_a_nested_flow_names_both_stages():
    @transform
    def runs_failing_flow(n):
        return (numbers(n) >> fail_on(bad=2)).collect(timeout=30)

    with pytest.raises(StageError) as info:
        (numbers(5) >> runs_failing_flow >> ignore).run(timeout=60)
    assert info.value.stage == "runs_failing_flow"
    assert isinstance(info.value.__cause__, StageError)
    assert info.value.__cause__.stage == "fail_on"


def _pause(x):
    time.sleep(60)  # the scenario: a pool task still running when the flow stops
    return x


@sink
def pool_then_wait(x, busy, path):
    with multiprocess.Pool(2) as pool:
        result = pool.map_async(_pause, range(4))
        with open(path, "w") as f:
            f.write(" ".join(str(p.pid) for p in pool._pool))
        busy.set()
        result.get(timeout=60)


@sink
def fail_once_busy(x, busy):
    busy.wait(timeout=30)
    raise RuntimeError("boom")


@pytest.mark.timeout(90)
def test_a_failure_elsewhere_stops_a_busy_pool_promptly(mp_context, tmp_path):
    """The stage waiting on its pool cannot be interrupted: it is killed after the
    grace period, and its pool's processes with it (spawned or forked alike)."""
    busy, path = mp_context.Event(), tmp_path / "pool"
    flow = numbers(1) >> [pool_then_wait(busy=busy, path=str(path)), fail_once_busy(busy=busy)]
    start = time.monotonic()
    with pytest.raises(StageError, match="boom"):
        flow.run(timeout=60)
    assert busy.is_set()
    assert time.monotonic() - start < 3 + (0 if start_method() == "fork" else 5)
    pool = []
    for pid in map(int, path.read_text().split()):
        with contextlib.suppress(psutil.NoSuchProcess):
            pool.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(pool, timeout=5)
    assert not alive


def _descendants_then_die(what, path):
    """Start processes, write the pids of everything below this worker, die."""
    if what == "pool":
        keep = multiprocess.Pool(2)
        keep.map(abs, range(4))
    elif what == "futures":
        keep = concurrent.futures.ProcessPoolExecutor(2)
        list(keep.map(abs, range(4)))
    else:  # a nested flow, still streaming
        keep = (numbers(10**9) >> pid_of).iterate(timeout=60)
        next(keep)
    with open(path, "w") as f:
        f.write(" ".join(str(p.pid) for p in psutil.Process().children(recursive=True)))
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("what", ["pool", "futures", "flow"])
def test_what_a_killed_worker_started_dies_with_it(what, tmp_path):
    path = tmp_path / "pids"

    @sink
    def starts_then_dies(x):
        _descendants_then_die(what, str(path))

    with pytest.raises(WorkerDied):
        (numbers(1) >> starts_then_dies).run(timeout=60)
    pids = [int(p) for p in path.read_text().split()]
    assert pids, "the stage started nothing"
    started = [psutil.Process(p) for p in pids if psutil.pid_exists(p)]
    _, alive = psutil.wait_procs(started, timeout=GRACE)
    assert not alive, f"outlived the worker that started them: {alive}"


def run_a_flow(n):
    return (numbers(n) >> inc).collect(timeout=30)


def run_a_flow_serially(n):
    return (numbers(n) >> inc).collect(executor="serial")


def test_a_flow_inside_a_pool_worker_says_to_run_serially(mp_context):
    with mp_context.Pool(1) as pool:
        assert pool.apply(run_a_flow_serially, (3,)) == [1, 2, 3]
        with pytest.raises(FlowError, match=r"daemonic.*executor='serial'"):
            pool.apply(run_a_flow, (3,))
