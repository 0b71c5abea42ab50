"""The ray executor gives the serial executor's results, and fails like the others.

One local Ray instance serves all these tests (starting one takes seconds).
Skipped when Ray is not installed (``pip install flowdsl[ray]``).
"""

import builtins
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from conftest import examples
from helpers import (
    BadStr,
    add,
    closure_of,
    counted,
    double,
    evens,
    exits,
    fail_on,
    fragile,
    identity,
    ignore,
    inc,
    inits,
    interrupts,
    items,
    letters_to,
    listed,
    marked,
    numbers,
    open_closure,
    raises_bad_str,
    scale,
    twice,
)
from hypothesis import given, settings
from strategies import looped_dags

from flowdsl import (
    FlowTimeout,
    GraphError,
    RayExecutor,
    Regulator,
    StageError,
    StageTimeout,
    StopFlow,
    Transform,
    WorkerDied,
    batch,
    loop,
    merge,
    source,
    transform,
)
from flowdsl._plan import DEFAULT_BUFFER
from flowdsl.executors import execute

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(40)


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    """One local Ray instance for these tests (the only ones that use Ray, so it
    starts once per session), shut down before other modules fork workers."""
    printer = builtins.print  # Ray may swap it for its tqdm-aware one: put it back after
    if not ray.is_initialized():  # "local": never join a cluster running on this machine
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield
    ray.shutdown()
    builtins.print = printer


def same(flow, ordered=True):
    """Run ``flow`` on ray and on serial; return the ray results, checked equal."""
    got = flow.collect(executor="ray", timeout=30)
    want = flow.collect(executor="serial")
    if ordered:
        assert got == want
    else:
        assert Counter(got) == Counter(want)
    return got


# -- the same results as the serial executor ------------------------------------------
# (each run starts an actor per worker, which costs about a second: the flows are
# few and each covers several features)
@pytest.mark.parametrize(
    "make, ordered",
    [
        # one-worker stages over many batches: map, filter, flat-map, bound arguments
        (lambda: listed(range(2000)) >> inc >> evens >> twice >> scale(factor=3), True),
        # a diamond (broadcast, then a zip) whose zip has workers; ordered workers
        (lambda: numbers(300) >> [inc.options(workers=3), double] >> add.options(workers=2), True),
        # merge, unordered workers, a broadcast to two open ends
        (
            lambda: (
                merge(numbers(50), numbers(70) >> double)
                >> twice.options(workers=2, ordered=False)
                >> [inc, double]
            ),
            False,
        ),
    ],
    ids=["chain", "diamond-workers", "merge-broadcast"],
)
def test_same_results_as_serial(make, ordered):
    same(make(), ordered)


@pytest.mark.timeout(180)
@settings(max_examples=examples(8))
@given(dag=looped_dags(max_leaves=3))
def test_random_graphs_with_loops_give_the_plain_python_results(dag):
    """The property the machines are proved with (``test_machines.py``), on Ray:
    chains, merges, zips, broadcasts and nested loops, several workers."""
    got = dag.flow().collect(executor="ray", timeout=60)
    if dag.keeps_order:
        assert got == dag.expected()
    else:
        assert Counter(got) == Counter(dag.expected())


def test_lambdas_and_closures_travel():
    offset = 7
    flow = numbers(10) >> (lambda x: x + offset) >> transform(lambda x: x * 2)
    assert same(flow) == [2 * (x + 7) for x in range(10)]


def test_regulator_flushes_at_end_of_stream():
    from flowdsl import Sentinel

    def pairs():
        held = []
        try:
            while True:
                held.append((yield))
                if len(held) == 2:
                    yield tuple(held)
                    held = []
        except Sentinel:
            if held:
                yield tuple(held)

    assert same(numbers(5) >> Regulator(pairs)) == [(0, 1), (2, 3), (4,)]


def test_run_returns_report():
    flow = numbers(200) >> inc.options(workers=2) >> evens >> ignore
    report = flow.run(executor="ray", timeout=30)
    assert report.executor == "ray" and report.seconds > 0
    assert report["numbers"].items_out == 200
    assert (report["inc"].workers, report["inc"].items_in, report["inc"].items_out) == (2, 200, 200)
    assert (report["evens"].items_in, report["evens"].items_out) == (200, 100)
    assert report["ignore"].items_in == 100


@transform(workers=2, ordered=False)
class Where:
    """Emits how often local_init ran in its worker, and the worker's pid."""

    def local_init(self):
        self.opened = getattr(self, "opened", 0) + 1

    def run(self, x):
        time.sleep(0.01)  # a slow stage: batches of one, spread over both workers
        return self.opened, os.getpid()


def test_each_worker_is_an_actor_opened_once():
    got = (numbers(40) >> Where()).collect(executor="ray", timeout=30)
    assert {opened for opened, _ in got} == {1}
    pids = {pid for _, pid in got}
    assert len(pids) == 2 and os.getpid() not in pids


def test_local_term_runs_in_every_worker(tmp_path):
    @transform(workers=2, ordered=False)
    class Marked:
        def __init__(self, folder):
            self.folder = folder

        def run(self, x):
            time.sleep(0.005)
            return x

        def local_term(self):
            open(os.path.join(self.folder, str(os.getpid())), "w").close()

    (numbers(40) >> Marked(str(tmp_path)) >> ignore).run(executor="ray", timeout=30)
    assert len(os.listdir(tmp_path)) == 2


def test_local_term_runs_in_the_workers_still_running_when_a_run_fails(tmp_path):
    """A stage that fails ends the run while the stages in front of it still run:
    teardown asks those actors for their ``local_term`` before it kills them."""

    @transform(workers=2, ordered=False)
    class Upstream:
        def __init__(self, folder):
            self.folder = folder

        def run(self, x):
            return x

        def local_term(self):
            open(os.path.join(self.folder, str(os.getpid())), "w").close()

    flow = numbers(10**9) >> Upstream(str(tmp_path)) >> fail_on(bad=3000)
    with pytest.raises(StageError, match="bad item 3000"):
        flow.run(executor="ray", timeout=60)
    assert len(os.listdir(tmp_path)) == 2


@pytest.mark.parametrize("sizes", [(1000, 10), (10, 1000)])
def test_every_item_an_upstream_of_a_zip_made_is_paired_left_over_or_dropped(tmp_path, sizes):
    paths = [tmp_path / "a", tmp_path / "b"]
    flow = [
        counted(sizes[0], str(paths[0])),
        counted(sizes[1], str(paths[1])) >> identity.options(workers=2),
    ] >> add.options(workers=2)
    report = flow.run(executor="ray", timeout=30)
    made = [int(p.read_text()) for p in paths]  # the generators' own counts
    lost = sum(s.left_over + s.dropped for s in report.stages.values())
    assert sum(made) - 2 * min(sizes) == lost > 0
    if sizes[0] > sizes[1]:
        assert report["add"].left_over == made[0] - min(sizes)


def test_zip_leftovers_are_reported(caplog):
    caplog.set_level(logging.WARNING, logger="flowdsl")
    flow = [numbers(3), numbers(7) >> twice] >> add
    with execute(flow, executor="ray", timeout=30) as run:
        assert list(run) == [0, 1, 3]
    counts = [
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"(\d+) item\(s\) left over", r.getMessage()))
    ]
    assert len(counts) == 1 and 1 <= counts[0] <= 11
    assert run.report["add"].left_over == counts[0]  # in the report too


def test_records_made_in_actors_reach_driver_handlers(caplog):
    @transform
    def chatty(x):
        logging.getLogger("myapp").warning("saw %s", x)
        return x

    caplog.set_level(logging.INFO)
    (numbers(2) >> chatty >> ignore).run(executor="ray", timeout=30)
    mine = [r for r in caplog.records if r.name == "myapp"]
    assert sorted(r.getMessage() for r in mine) == ["saw 0", "saw 1"]
    assert {(r.stage, r.worker) for r in mine} == {("chatty", 0)}
    messages = [(r.getMessage(), getattr(r, "stage", None)) for r in caplog.records]
    assert ("End of stream", "numbers") in messages
    assert ("Local termination", "ignore") in messages


def test_error_policies(tmp_path):
    from test_policies import Flaky, Letters

    skip = Transform(fail_on.func, "skip", ignore_exceptions=[ValueError])
    report = (numbers(6) >> skip >> ignore).run(executor="ray", timeout=30)
    assert (report["skip"].items_out, report["skip"].errors) == (5, 1)
    assert same(numbers(10) >> Flaky()) == list(range(10))
    path = tmp_path / "letters"
    stage = fail_on(bad=3).options(on_error=Letters(str(path)), workers=2)
    report = (numbers(8) >> stage >> ignore).run(executor="ray", timeout=30)
    assert path.read_text().splitlines() == ["fail_on|3|ValueError: bad item 3|ValueError"]
    assert (report["fail_on"].items_out, report["fail_on"].errors) == (7, 1)


def test_stop_flow_ends_cleanly():
    @transform
    def until_five(x):
        if x == 5:
            raise StopFlow
        return x

    report = (numbers(10**9) >> until_five >> ignore).run(executor="ray", timeout=30)
    assert report.stopped and report["ignore"].items_in == 5


def test_term_flag_set_in_the_driver_stops_the_stage():
    import threading

    flag = threading.Event()
    stage = inc.options()
    stage.set_term_flag(flag)
    got = []
    for x in (numbers(10**9) >> stage).iterate(executor="ray", timeout=30):
        got.append(x)
        if len(got) == 10:
            flag.set()
    assert got[:10] == list(range(1, 11))  # the stage stopped, so the run ended


# -- streaming and backpressure ----------------------------------------------------------
def test_iteration_streams_and_leaving_early_stops_the_run():
    seen = []
    for x in (numbers(10**9) >> inc).iterate(executor="ray", timeout=30):
        seen.append(x)
        if len(seen) == 3:
            break
    assert seen == [1, 2, 3]  # the fixture checks that no actor process is left


def test_a_slow_stage_holds_a_fast_source_back():
    @transform
    def slow(x):
        time.sleep(0.002)
        return x

    with execute(numbers(10**9) >> slow, executor="ray", timeout=30) as run:
        it = iter(run)
        for _ in range(200):
            next(it)
        made = run.stats()["numbers"].items_out
        fill = run.queue_fill()
    # the source is held to the queue in front of `slow` and a few small calls
    assert 200 <= made < 200 + DEFAULT_BUFFER + 100
    assert set(fill) == {"slow"} and 0.0 <= fill["slow"] <= 1.0


def test_a_slow_reader_holds_the_flow_back():
    from flowdsl.executors.ray import MAX_BATCH

    with execute(numbers(10**9) >> inc >> double, executor="ray", timeout=30) as run:
        it = iter(run)
        for _ in range(3000):
            next(it)
        made = run.stats()["numbers"].items_out
    # bounded by queues and a few calls per actor, however long the stream
    assert 3000 <= made < 3000 + 12 * MAX_BATCH


# -- failures ------------------------------------------------------------------------------
def test_stage_error_names_stage_item_and_cause():
    start = time.monotonic()
    with pytest.raises(StageError) as info:
        (numbers(10**9) >> fail_on(bad=4) >> inc >> ignore).run(executor="ray", timeout=30)
    err = info.value
    assert err.stage == "fail_on" and err.item == "4" and err.worker == 0
    assert isinstance(err.__cause__, ValueError) and "bad item 4" in str(err.__cause__)
    assert "ValueError: bad item 4" in err.remote_traceback
    assert time.monotonic() - start < 5


def test_error_in_source_and_in_local_init():
    @source
    def broken():
        yield 1
        raise KeyError("gone")

    with pytest.raises(StageError, match="KeyError") as info:
        (broken >> inc).collect(executor="ray", timeout=30)
    assert info.value.stage == "broken"

    @transform
    class BadInit:
        def local_init(self):
            raise RuntimeError("no init")

        def run(self, x):
            return x

    with pytest.raises(StageError, match="local_init") as info:
        (numbers(3) >> BadInit()).collect(executor="ray", timeout=30)
    assert info.value.stage == "BadInit"


@transform
def exit_at_five(x):
    if x == 5:
        os._exit(3)
    return x


def test_vanished_actor_raises_worker_died():
    with pytest.raises(WorkerDied) as info:
        (numbers(10**6) >> exit_at_five >> inc >> ignore).run(executor="ray", timeout=30)
    assert info.value.stage == "exit_at_five"


def dies_once(marker):
    """A stateless transform whose actor is killed at item 5, the first time only
    (``marker`` then holds the pid that died)."""

    @transform
    def once(x):
        if x == 5 and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return 2 * x

    return once


def test_a_restarted_stateless_stage_redoes_the_dead_actors_batches(tmp_path):
    ray_executor = RayExecutor(restarts={"once": 1})
    flow = numbers(40) >> dies_once(str(tmp_path / "died"))
    with execute(flow, executor=ray_executor, timeout=60) as execution:
        got = list(execution)
        # the new life told the driver its process, which teardown then waits for
        names = [node.name for node in execution.plan.nodes]
        ((_, pid),) = [p for (nid, _), p in execution.pids.items() if names[nid] == "once"]
    assert got == [2 * x for x in range(40)]  # none lost, none twice, in order
    assert pid != int((tmp_path / "died").read_text())
    assert not psutil.pid_exists(pid)
    assert execution.report["once"].items_out == 40


def test_an_actor_restarted_after_its_last_reply_is_waited_for_too():
    """Its stage has ended when its process dies and Ray starts it again: the
    driver has had no reply from the new life, and asks for one at teardown."""
    executor = RayExecutor(restarts={"inc": 1})
    with execute(numbers(5) >> inc, executor=executor, timeout=60) as execution:
        assert list(execution) == [1, 2, 3, 4, 5]
        names = [node.name for node in execution.plan.nodes]
        ((_, dead),) = [p for (nid, _), p in execution.pids.items() if names[nid] == "inc"]
        known = {p.pid for p in psutil.Process().children(recursive=True)}
        os.kill(dead, signal.SIGKILL)
        (actor,) = execution.actors[names.index("inc")]
        deadline = time.monotonic() + 30
        while True:  # until Ray has started it again (a call may still reach the dead one)
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=30)
                break
            except ray.exceptions.ActorUnavailableError:
                assert time.monotonic() < deadline, "Ray did not restart the actor"
        (new,) = [
            p.pid
            for p in psutil.Process().children(recursive=True)
            if p.pid not in known and p.name().startswith("ray::StageActor")
        ]
    assert (socket.gethostname(), new) in execution.pids.values()
    assert not psutil.pid_exists(new)


def test_teardown_waits_until_an_exited_actor_process_is_reaped():
    """A process that has exited stays in the process table until its parent (for
    an actor, Ray's raylet) reaps it; the wait for an actor's process lasts until
    then, as a process table that still lists it has not let it go."""
    from flowdsl.executors.ray import _reaped, _wait_exit

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    fd = os.pidfd_open(child.pid)
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        assert _reaped(fd) is False
        start = time.monotonic()
        _wait_exit(child.pid, start + 0.2)
        assert time.monotonic() - start >= 0.2  # it waited for the reaping, to the end
        child.wait()
        assert _reaped(fd) is True
        start = time.monotonic()
        _wait_exit(child.pid, start + 30)
        assert time.monotonic() - start < 5
    finally:
        os.close(fd)


def test_without_restarts_the_same_death_is_worker_died(tmp_path):
    with pytest.raises(WorkerDied, match="once"):
        (numbers(40) >> dies_once(str(tmp_path / "died"))).collect(executor="ray", timeout=60)


def test_restarts_are_refused_for_stateful_stages_and_sources():
    @transform
    class Counter_:
        def run(self, x):
            return x

    with pytest.raises(GraphError, match="'Counter_' is an object, whose state"):
        (numbers(3) >> Counter_()).collect(executor=RayExecutor(restarts={"Counter_": 1}))
    with pytest.raises(GraphError, match="'numbers' is a source"):
        (numbers(3) >> inc).collect(executor=RayExecutor(restarts={"numbers": 1}))
    with pytest.raises(ValueError, match="no stage named 'nope'"):
        (numbers(3) >> inc).collect(executor=RayExecutor(restarts={"nope": 1}))


def test_timeout():
    @transform
    def slow(x):
        time.sleep(0.05)
        return x

    start = time.monotonic()
    with pytest.raises(FlowTimeout):
        (numbers(10**6) >> slow >> ignore).run(executor="ray", timeout=1)
    assert time.monotonic() - start < 5


def test_stream_cycles_are_rejected_before_anything_starts():
    import flowdsl as mp

    s = mp.Stream()
    s.q.put(3)
    stage = mp.Transform(lambda x: x - 1 if x else None, "down", upstreams=[s], downstreams=[s])
    psys = mp.PipeSystem([stage])
    psys.build()
    with pytest.raises(NotImplementedError, match="'down' feeds itself"):
        psys.run(executor="ray")


def test_a_stage_that_cannot_be_sent_is_a_graph_error():
    stage = scale(factor=(i for i in range(3))).options(name="gen_arg")  # no pickler
    with pytest.raises(GraphError, match="'gen_arg'"):
        (numbers(3) >> stage).collect(executor=RayExecutor())


def test_unpicklable_output_is_an_error_of_the_producing_stage():
    from helpers import Unpicklable

    @transform
    def make_bad(x):
        return Unpicklable()

    with pytest.raises(StageError, match="cannot be serialised") as info:
        (numbers(3) >> make_bad >> inc).collect(executor="ray", timeout=30)
    assert info.value.stage == "make_bad" and info.value.item == "<Unpicklable>"


def test_an_output_that_cannot_be_read_is_the_producing_stages_error():
    with pytest.raises(StageError, match="could not be deserialised in stage 'ignore'") as info:
        (numbers(3) >> fragile >> ignore).run(executor="ray", timeout=30)
    assert info.value.stage == "fragile"
    with pytest.raises(StageError, match="could not be deserialised in the driver"):
        (numbers(3) >> fragile).collect(executor="ray", timeout=30)


def test_odd_exceptions_follow_the_same_rule_as_elsewhere():
    with pytest.raises(StageError, match="SystemExit: 3") as info:
        (numbers(3) >> exits).collect(executor="ray", timeout=30)
    assert info.value.stage == "exits"
    with pytest.raises(StageError, match="unprintable BadStr") as info:
        (numbers(3) >> raises_bad_str).collect(executor="ray", timeout=30)
    assert isinstance(info.value.__cause__, BadStr)
    with pytest.raises(KeyboardInterrupt):
        (numbers(3) >> interrupts).collect(executor="ray", timeout=30)


def test_items_only_dill_can_serialise_cross_every_hop():
    got = (numbers(5) >> closure_of >> open_closure).collect(executor="ray", timeout=30)
    assert [(f(), local.value) for f, local in got] == [(i, i) for i in range(5)]


def test_an_upstream_named_twice_counts_once_per_mention():
    p = listed([1, 2, 3]) >> inc
    assert sorted((merge(merge(p, p), p) >> inc).collect(executor="ray", timeout=30)) == [
        3,
        3,
        3,
        4,
        4,
        4,
        5,
        5,
        5,
    ]


def test_executor_by_object():
    assert (numbers(3) >> inc).collect(executor=RayExecutor(), timeout=30) == [1, 2, 3]


# -- loops -------------------------------------------------------------------------------
@transform
def halve(x):
    return x // 2


@transform
def dec(x):
    return x - 1


@transform
def countdown(pair):
    label, n = pair
    return label, n - 1


@transform
def drop_at_zero(x):
    return x - 1 if x > 0 else None


@transform
def split(x):
    """Two copies of x - 1: 2**x items leave a loop that ends at 0."""
    if x > 0:
        yield x - 1
        yield x - 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: merge(
            # until, then more stages; max_iterations; a body that filters everything out
            numbers(20)
            >> [
                loop(halve, until=lambda x: x < 2) >> inc,
                loop(halve, max_iterations=2),
                loop(drop_at_zero),
            ],
            # the seed and upstream both enter a body with two workers
            listed([(i, i % 7) for i in range(30)])
            >> loop(countdown.options(workers=2), seed=[(-1, 3)], until=lambda x: x[1] <= 0),
        ),
        lambda: merge(
            # a broadcast and a zip with workers inside the body: every copy is counted
            numbers(40)
            >> loop(halve >> [inc, dec] >> add.options(workers=2) >> halve, until=lambda x: x < 4),
            # thousands of items inside at once, far more than the queues hold
            listed([11, 10, 11]) >> loop(split, until=lambda x: x == 0),
            # a loop inside a loop's body
            numbers(20)
            >> loop(loop(halve, until=lambda x: x % 3 == 0) >> dec, until=lambda x: x <= 0),
        ),
    ],
    ids=["until-max-iterations-seed", "broadcast-zip-many-nested"],
)
def test_loops_give_the_serial_results(make):
    same(make(), ordered=False)


def test_stop_flow_in_a_loop_ends_the_flow(caplog):
    """The spec's example: a loop fed by its seed alone, ended by StopFlow."""

    @transform
    def fib(a, b):
        logging.getLogger("fib").warning("%d", a)
        if b >= 1000:
            raise StopFlow
        return b, a + b

    caplog.set_level(logging.WARNING, logger="fib")
    report = loop(fib, seed=[(0, 1)]).run(executor="ray", timeout=30)
    assert report.stopped
    assert [int(r.getMessage()) for r in caplog.records if r.name == "fib"] == [
        0,
        1,
        1,
        2,
        3,
        5,
        8,
        13,
        21,
        34,
        55,
        89,
        144,
        233,
        377,
        610,
        987,
    ]


def test_stop_flow_in_a_loop_stops_an_endless_upstream():
    @transform
    def halve_until_500(x):
        if x == 500:
            raise StopFlow
        return x // 2

    flow = numbers(10**9) >> loop(halve_until_500, until=lambda x: x < 2) >> ignore
    report = flow.run(executor="ray", timeout=30)
    assert report.stopped and 0 < report["ignore"].items_in < 1000


def test_error_in_until_names_the_loop():
    def until(x):
        raise ValueError("no")

    with pytest.raises(StageError, match="until") as info:
        (numbers(3) >> loop(halve, until=until, name="halver")).collect(executor="ray", timeout=30)
    assert info.value.stage == "halver" and isinstance(info.value.__cause__, ValueError)


# -- Ctrl-C ------------------------------------------------------------------------------
CTRL_C = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import ray
    from helpers import numbers
    from flowdsl import transform

    @transform(workers=2, ordered=False)
    def slow(x):
        time.sleep(0.01)
        return os.getpid()

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    seen = set()
    try:
        for pid in (numbers(10 ** 9) >> slow).iterate(executor="ray"):
            if pid not in seen:
                seen.add(pid)
                print(pid, flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        raise
""")


@pytest.mark.timeout(60)
def test_ctrl_c_ends_a_ray_run_with_keyboard_interrupt():
    """A script with its own Ray instance, interrupted as a terminal does: the run
    ends within 2 s, its actors are gone by then, and the script exits with
    KeyboardInterrupt leaving nothing of its Ray instance behind."""
    import psutil

    code = CTRL_C.format(tests=os.path.dirname(__file__))
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        started: list[psutil.Process] = []
        try:
            actors = [psutil.Process(int(proc.stdout.readline())) for _ in range(2)]
            started = psutil.Process(proc.pid).children(recursive=True)  # its Ray instance
            assert all(a in started and a.name().startswith("ray::StageActor") for a in actors)
            start = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            assert proc.stdout.readline().strip() == "interrupted"
            ended = time.monotonic() - start
            left_in_run = [a for a in actors if _alive(a)]
            _, err = proc.communicate(timeout=20)
            exited = time.monotonic() - start
            deadline = time.monotonic() + 5  # Ray's own shutdown may still be reaping
            while any(map(_alive, started)) and time.monotonic() < deadline:
                time.sleep(0.05)
            left = [p for p in started if _alive(p)]
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            for p in started:  # only what this script started
                with contextlib.suppress(psutil.Error):
                    p.kill()
    assert ended < 2 and not left_in_run
    assert proc.returncode != 0 and err.rstrip().endswith("KeyboardInterrupt")
    assert exited < 10 and not left


def _alive(p):
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- two nodes -----------------------------------------------------------------------------
@dataclass
class SecondNode:
    id: str = ""
    left: list = field(default_factory=list)  # its processes that outlived its stop


@contextlib.contextmanager
def second_node(resources):
    """A second Ray node on this machine, joined to this module's Ray instance,
    with no CPU (so no actor lands on it unless asked) and ``resources``.

    Since Ray 2.59 a local instance requires its auth token from joining nodes:
    it travels in RAY_AUTH_TOKEN (read with ``ray get-auth-token``), along with
    the instance's RAY_AUTH_MODE.  ``ray start --block`` stays in the foreground,
    and SIGTERM makes it drain the node and stop what it started; only those
    processes are stopped here (``ray stop`` would stop every Ray on the machine).
    """
    import json

    import psutil

    cli = [sys.executable, "-m", "ray.scripts.scripts"]
    env = dict(os.environ)
    if ray._raylet.get_authentication_mode() == ray._raylet.AuthenticationMode.TOKEN:
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = subprocess.run(
            [*cli, "get-auth-token"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
    before = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    cmd = [
        *cli,
        "start",
        "--address",
        ray.get_runtime_context().gcs_address,
        "--num-cpus",
        "0",
        "--resources",
        json.dumps(resources),
        "--block",
        "--disable-usage-stats",
        "--dashboard-agent-listen-port",
        str(_free_port()),
    ]
    # `ray start` records the cluster it joined, where a later ray.init() without
    # an address would try to join it: put the record back as it was afterwards
    record = Path(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "ray_current_cluster")
    recorded = record.read_text() if record.exists() else None
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    node = SecondNode()
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 30
        while not (new := {n["NodeID"] for n in ray.nodes() if n["Alive"]} - before):
            assert proc.poll() is None, f"ray start failed: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the second node did not join"
            time.sleep(0.2)
        (node.id,) = new
        yield node
    finally:
        with contextlib.suppress(psutil.Error):
            started = psutil.Process(proc.pid).children(recursive=True)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        node.left = [p for p in started if _alive(p)]
        for p in node.left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        if recorded is None:
            record.unlink(missing_ok=True)
        else:
            record.write_text(recorded)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@transform
def node_of(x):
    return x, ray.get_runtime_context().get_node_id()


@transform
def node_too(pair):
    x, first = pair
    return x, first, ray.get_runtime_context().get_node_id()


@pytest.mark.timeout(60)
def test_stages_run_on_the_nodes_their_options_ask_for():
    head = ray.get_runtime_context().get_node_id()
    with second_node({"second": 4}) as second:
        executor = RayExecutor(
            stage_options={"node_too": {"num_cpus": 0, "resources": {"second": 1}}}
        )
        got = (numbers(500) >> node_of >> node_too.options(workers=2)).collect(
            executor=executor, timeout=30
        )
    assert [x for x, _, _ in got] == list(range(500))
    assert {(a, b) for _, a, b in got} == {(head, second.id)}
    assert not second.left


def test_stage_options_must_name_a_stage():
    with pytest.raises(ValueError, match="no stage named 'nope'"):
        (numbers(3) >> inc).collect(executor=RayExecutor(stage_options={"nope": {}}))


def test_batches_on_ray():
    @transform(batch=4, workers=2)
    def sums(xs):
        return [sum(xs)] * len(xs)

    flow = numbers(10) >> sums
    assert flow.collect(executor="ray", timeout=30) == [6] * 4 + [22] * 4 + [17] * 2
    assert (numbers(5) >> batch(2)).collect(executor="ray", timeout=30) == [[0, 1], [2, 3], [4]]


def test_io_bound_stages_keep_calls_in_flight_on_ray():
    from helpers import Fetch, Get
    from http_server import Server

    with Server() as server:
        for client in (Fetch, Get):
            server.reset()
            stage = Transform(client(server.url, delay=0.05), concurrency=8)
            report = (numbers(32) >> stage).run(executor="ray", timeout=30)
            assert report[client.__name__].items_out == 32
            assert 1 < server.peak <= 8
        stage = Transform(Fetch(server.url), concurrency=4)
        assert (numbers(20) >> stage).collect(executor="ray", timeout=30) == list(range(20))


# -- resilience: the stage options mean what they mean on the process executor -----------


def test_a_timed_out_item_goes_to_the_dead_letters_and_its_actor_is_replaced(tmp_path):
    letters = tmp_path / "letters"
    stage = marked(tmp_path, hang={5}, timeout=0.5, on_error=letters_to(str(letters)))
    start = time.monotonic()
    report = (numbers(12) >> stage >> ignore).run(executor="ray", timeout=30)
    assert time.monotonic() - start < 0.5 + 10  # actor start-ups included
    assert items(tmp_path) == [x for x in range(12) if x != 5]
    assert letters.read_text().splitlines() == ["5 CallTimedOut"]
    assert len(inits(tmp_path)) == 2  # a fresh actor after the timeout, local_init again
    stats = report["Marked"]
    assert (stats.timeouts, stats.restarts, stats.errors) == (1, 0, 1)
    assert stats.items_in == 12 and stats.items_out == 11
    assert stats.busy_seconds >= 0.5  # the call cut short was busy until then


def test_a_timeout_raises_stage_timeout_by_default(tmp_path):
    with pytest.raises(StageTimeout) as info:
        (numbers(10) >> marked(tmp_path, hang={5}, timeout=0.5)).collect(executor="ray", timeout=30)
    assert (info.value.stage, info.value.item) == ("Marked", "5")


@pytest.mark.parametrize("workers, ordered", [(1, True), (2, True), (2, False)])
def test_an_actor_that_dies_is_replaced_and_only_its_item_fails(tmp_path, workers, ordered):
    stage = marked(
        tmp_path, die={5, 13}, restarts=3, on_error="skip", workers=workers, ordered=ordered
    )
    with execute(numbers(20) >> stage, executor="ray", timeout=60) as run:
        got = list(run)
    expected = [x for x in range(20) if x not in (5, 13)]
    assert got == expected if ordered else sorted(got) == expected
    assert sorted(items(tmp_path)) == expected  # each processed exactly once
    assert len(inits(tmp_path)) == workers + 2  # the two replacements ran local_init
    assert run.report["Marked"].restarts == 2 and run.report["Marked"].errors == 2


def test_dead_letters_get_the_item_that_killed_its_actor(tmp_path):
    letters = tmp_path / "letters"
    stage = marked(tmp_path, die={3}, restarts=1, on_error=letters_to(str(letters)))
    (numbers(8) >> stage >> ignore).run(executor="ray", timeout=60)
    assert items(tmp_path) == [0, 1, 2, 4, 5, 6, 7]
    assert letters.read_text().splitlines() == ["3 ItemKilledWorker"]


def test_a_death_that_happens_once_loses_nothing_with_a_retry(tmp_path):
    stage = marked(tmp_path, die={4}, once=True, restarts=1, retries=1)
    assert (numbers(12) >> stage).collect(executor="ray", timeout=60) == list(range(12))
    assert len(inits(tmp_path)) == 2


def test_when_restarts_run_out_the_ray_run_fails_with_worker_died(tmp_path):
    with pytest.raises(WorkerDied, match=r"'Marked'.*its 1 restart was spent") as info:
        (numbers(10) >> marked(tmp_path, die={1, 2}, restarts=1, on_error="skip")).collect(
            executor="ray", timeout=60
        )
    assert info.value.restarts == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_an_actor_is_replaced_after_max_items_without_loss_or_reordering(tmp_path, workers):
    stage = marked(tmp_path, max_items_per_worker=10, workers=workers)
    with execute(numbers(30) >> stage, executor="ray", timeout=60) as run:
        assert list(run) == list(range(30))
    assert run.report["Marked"].replaced >= 30 // 10 - workers
    pids = {line.split()[1] for line in (tmp_path / "items").read_text().splitlines()}
    assert len(pids) >= 3
    assert len(inits(tmp_path)) == workers + run.report["Marked"].replaced


def test_stage_restarts_and_executor_restarts_do_not_mix():
    with pytest.raises(GraphError, match="'inc' has timeout, restarts or max_items"):
        (numbers(3) >> inc.options(restarts=1)).collect(executor=RayExecutor(restarts={"inc": 1}))
