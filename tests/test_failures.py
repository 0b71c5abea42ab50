"""Failures end the run promptly, raise in the driver, and leave nothing behind."""

import asyncio
import contextlib
import itertools
import logging
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types

import multiprocess
import psutil
import pytest
from helpers import fail_on, fragile, ignore, inc, numbers

from flowdsl import ProcessExecutor, StageError, WorkerDied, merge, source, transform
from flowdsl._waits import readable


@transform
def exit_at_five(x):
    if x == 5:
        os._exit(3)
    return x


@transform
def kill_self_at_five(x):
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


@pytest.mark.parametrize("stage, code", [(exit_at_five, 3), (kill_self_at_five, -9)])
def test_vanished_worker_raises_worker_died(stage, code):
    start = time.monotonic()
    with pytest.raises(WorkerDied) as info:
        (numbers(10**6) >> stage >> inc >> ignore).run()
    assert info.value.stage == stage.name and info.value.exitcode == code
    assert time.monotonic() - start < 2


def test_error_in_one_worker_stops_a_long_flow_promptly():
    @transform(workers=2)
    def fail_late(x):
        if x == 5000:
            raise ValueError("late")
        return x

    start = time.monotonic()
    with pytest.raises(StageError):
        (numbers(10**9) >> fail_late >> inc >> ignore).run()
    assert time.monotonic() - start < 2


def test_local_term_runs_on_every_worker_on_error(tmp_path, mp_context):
    both_started = mp_context.Barrier(2)

    @transform(workers=2)
    class Marked:
        def __init__(self, folder):
            self.folder = folder

        def local_init(self):
            both_started.wait(timeout=10)  # the failure comes after both have started

        def run(self, x):
            if x == 100:
                raise RuntimeError("boom")
            return x

        def local_term(self):
            open(os.path.join(self.folder, str(os.getpid())), "w").close()

    with pytest.raises(StageError):
        (numbers(10**9) >> Marked(str(tmp_path)) >> ignore).run()
    assert len(os.listdir(tmp_path)) == 2


CTRL_C = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from helpers import numbers, ignore
    from flowdsl import transform

    @transform(workers=2)
    class Slow:
        def local_init(self):
            os.write(1, b"running\\n")  # one write: the test waits for both workers

        def run(self, x):
            time.sleep(0.01)
            return x

    try:
        (numbers(10 ** 9) >> Slow() >> ignore).run()
    except KeyboardInterrupt:
        print("interrupted", flush=True)
""")


def test_ctrl_c_to_process_group_ends_run_with_keyboard_interrupt():
    with _driver(CTRL_C) as proc:
        assert [proc.stdout.readline().strip() for _ in range(2)] == ["running"] * 2
        helpers = _helpers_in_group(proc.pid)
        start = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole group
        out, _ = proc.communicate(timeout=10)
        elapsed = time.monotonic() - start
    assert "interrupted" in out
    assert elapsed < 2
    assert _group_members(proc.pid) <= helpers


def _kill_group(proc):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def _driver(script, **fields):
    """Run ``script`` as a driver in a process group of its own (its stdout
    piped), and kill the group afterwards, whatever the test did."""
    code = script.format(tests=os.path.dirname(__file__), **fields)
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            yield proc
        finally:
            _kill_group(proc)


def _group_members(pgid):
    import psutil

    members = set()
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                members.add(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _helpers_in_group(pgid):
    """The resource tracker of spawn and forkserver: it is no worker, and it exits
    by itself once the driver has gone."""
    import psutil

    helpers = set()
    for pid in _group_members(pgid):
        try:
            if "resource_tracker" in " ".join(psutil.Process(pid).cmdline()):
                helpers.add(pid)
        except psutil.Error:
            continue
    return helpers


def test_a_stuck_local_term_cannot_hang_shutdown():
    @transform
    class Stuck:
        def run(self, x):
            return x

        def local_term(self):
            time.sleep(60)  # the scenario: a hook that never returns in time

    start = time.monotonic()
    with pytest.raises(StageError):
        (numbers(10**9) >> Stuck() >> fail_at_100 >> ignore).run()
    assert time.monotonic() - start < 3


@transform
def fail_at_100(x):
    if x == 100:
        raise RuntimeError("boom")
    return x


@transform
def pid_of_worker(x):
    return os.getpid()


def test_sigterm_to_one_worker_is_worker_died():
    """The driver never stops workers by a signal, so a SIGTERM from outside (a
    user's kill, a container runtime) is that worker's death, not a cancel."""
    items = (numbers(10**9) >> pid_of_worker).iterate(timeout=20)
    os.kill(next(items), signal.SIGTERM)
    start = time.monotonic()
    with pytest.raises(WorkerDied) as info:
        for _ in items:
            pass
    assert time.monotonic() - start < 2
    assert (info.value.stage, info.value.worker) == ("pid_of_worker", 0)


@transform
class Careful:
    """Each call takes a while and notes when it ends; the call on item 1 says
    when it has begun; local_term notes when it runs."""

    def __init__(self, path, begun):
        self.path, self.begun = path, begun

    def run(self, x):
        if x == 1:
            self.begun.set()
        time.sleep(0.2)  # work in progress, not synchronisation
        with open(self.path, "a") as f:
            f.write(f"done {x}\n")
        return x

    def local_term(self):
        with open(self.path, "a") as f:
            f.write("local_term\n")


def test_cancelling_a_run_lets_the_call_in_progress_finish(tmp_path, mp_context):
    """Leaving a run early cancels it cooperatively: no exception is thrown into
    the user's call, which ends as it would, then local_term runs."""
    path, begun = tmp_path / "log", mp_context.Event()
    items = (numbers(100) >> Careful(str(path), begun)).iterate(timeout=20)
    assert next(items) == 0
    assert begun.wait(timeout=10)  # the worker is inside the call on item 1
    items.close()
    lines = path.read_text().splitlines()
    assert lines[-1] == "local_term"
    assert lines[:-1] == [f"done {i}" for i in range(len(lines) - 1)]
    assert "done 1" in lines  # (and not cut short)


@pytest.mark.parametrize("shared_memory", [True, False], ids=["shm", "pipe-only"])
@pytest.mark.parametrize("downstream, where", [(False, "the driver"), (True, "stage 'ignore'")])
def test_an_output_that_cannot_be_read_is_the_producing_stages_error(
    downstream, where, shared_memory
):
    flow = numbers(3) >> fragile
    executor = ProcessExecutor(shared_memory=shared_memory)
    with pytest.raises(StageError) as info:
        if downstream:
            (flow >> ignore).run(executor=executor, timeout=20)
        else:
            flow.collect(executor=executor, timeout=20)
    assert info.value.stage == "fragile"
    assert f"could not be deserialised in {where}: ValueError: not here" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_a_child_forked_by_the_driver_leaves_the_run_alone():
    """A library forking a helper while a flow runs: the child's exit cleanup must
    not tear down the parent's run (its workers, channels and shared memory)."""
    items = (numbers(3000) >> inc).iterate(timeout=20)
    first = next(items)
    pid = os.fork()
    if pid == 0:  # the child ends normally: its exit handlers run
        try:
            import atexit

            atexit._run_exitfuncs()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert [first, *items] == list(range(1, 3001))


@transform
class StartsAThread:
    """Like a client library that starts a background thread and never stops it."""

    def local_init(self):
        self.forever = threading.Event()
        threading.Thread(target=self.forever.wait, name="client-poller").start()

    def run(self, x):
        return x


def test_a_thread_a_stage_leaves_running_does_not_keep_its_worker(caplog):
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="flowdsl"):
        assert (numbers(5) >> StartsAThread()).collect(timeout=20) == list(range(5))
    assert time.monotonic() - start < 5
    warned = [r for r in caplog.records if "client-poller" in r.getMessage()]
    assert warned and warned[0].stage == "StartsAThread"


def test_a_run_outlives_the_thread_that_started_it():
    """Start iterating in a worker thread of an application, consume elsewhere:
    the workers must not die with that thread (Linux's parent-death signal is
    tied to the thread that forks)."""
    items = (numbers(2000) >> inc).iterate(timeout=20)
    first = []
    thread = threading.Thread(target=lambda: first.append(next(items)))  # starts the run
    thread.start()
    thread.join()
    assert [*first, *items] == list(range(1, 2001))


DRIVER = textwrap.dedent("""
import os, sys
sys.path.insert(0, {tests!r})
from helpers import numbers, inc, ignore
from flowdsl import transform

@transform(workers=2)
def announce(x):
    if x < 2:
        os.write(1, b"running\\n")  # one write: both workers may announce at once
    return x

(numbers(10 ** 9) >> announce >> inc >> ignore).run()
""")


def test_workers_die_with_a_driver_killed_outright():
    with _driver(DRIVER) as proc:
        assert proc.stdout.readline().strip() == "running"
        # items flow before the driver has started every worker: wait for all
        # five (numbers, two of announce, inc, ignore)
        end = time.monotonic() + 10
        while len(workers := psutil.Process(proc.pid).children(recursive=True)) < 5:
            assert time.monotonic() < end, f"{len(workers)} workers started"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive


GIL_DRIVER = textwrap.dedent("""
import os, sys
sys.path.insert(0, {tests!r})
from helpers import numbers, ignore
from flowdsl import transform

@transform
def hold_the_gil(x):
    os.write(1, f"{{os.getpid()}}\\n".encode())
    return sum(range(10 ** 13))  # C code that keeps the GIL for hours

(numbers(1) >> hold_the_gil >> ignore).run()
""")


def test_a_worker_in_a_call_that_holds_the_gil_dies_with_the_driver():
    # No thread of the worker can run while the call holds the GIL: the kernel
    # must end it, not the worker's own code.
    with _driver(GIL_DRIVER) as proc:
        worker = psutil.Process(int(proc.stdout.readline()))
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone
        proc.wait(timeout=10)
        _, alive = psutil.wait_procs([worker], timeout=5)
    assert not alive


@transform(concurrency=4)
async def nap(x):
    await asyncio.sleep(0.001)
    return x


@pytest.fixture
def many_files():
    """Room for 4096 open files (the soft limit is often 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_descriptor_past_1024_can_be_waited_on(many_files):
    r, w = os.pipe()
    high = os.dup2(r, 2000)
    try:
        assert not readable(high, 0.01)
        os.write(w, b"x")
        assert readable(high, None)
    finally:
        for fd in (r, w, high):
            os.close(fd)


def test_a_driver_with_many_open_files_runs_its_flow(many_files):
    # workers inherit the driver's files, so theirs are numbered past 1024 too
    # (where select() cannot go): the lifeline's and an IO-bound stage's waits
    files = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert sorted((numbers(100) >> inc >> nap).collect()) == list(range(1, 101))
    finally:
        for fd in files:
            os.close(fd)


def _watched(lifeline, writer, ready, go, fallback):
    from flowdsl.executors import _worker

    if fallback:  # as where the kernel cannot signal: a thread waits instead
        _worker._signal_on_hangup = lambda fd: False
    writer.close()  # as a worker does: only the driver keeps the writing end
    go.recv_bytes()
    _worker._watch_driver(types.SimpleNamespace(lifeline=lifeline, lifeline_writer=None))
    threads = {t.name for t in threading.enumerate()}
    ready.send_bytes(b"thread" if "flowdsl-lifeline" in threads else b"signal")
    time.sleep(60)


@pytest.mark.parametrize("fallback", [False, True], ids=["signal", "thread"])
@pytest.mark.parametrize("late", [False, True], ids=["while-watching", "before-watching"])
def test_a_worker_dies_once_the_lifeline_has_no_writer(fallback, late):
    ctx = multiprocess.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    ready, watching = ctx.Pipe(duplex=False)
    wait, go = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_watched, args=(reader, writer, watching, wait, fallback))
    child.start()
    try:
        if late:  # the driver died before the worker set its watch up
            writer.close()
            go.send_bytes(b"go")
        else:
            go.send_bytes(b"go")
            assert ready.poll(10)
            assert ready.recv_bytes() == (b"thread" if fallback else b"signal")
            writer.close()
        child.join(5)
        assert child.exitcode == -signal.SIGKILL
    finally:
        child.kill()
        child.join()


SLOW_TERM = textwrap.dedent("""
import os, sys, time
sys.path.insert(0, {tests!r})
from helpers import numbers, ignore
from flowdsl import transform

@transform(workers=2)
class SlowTerm:
    def __init__(self, path):
        self.path = path

    def local_init(self):
        os.write(1, b"running\\n")  # one write: the test waits for both workers

    def run(self, x):
        return x

    def local_term(self):
        time.sleep(0.5)  # a slow flush: a Ctrl-C to the group must not cut it short
        with open(self.path, "a") as f:
            f.write(f"{{os.getpid()}}\\n")

try:
    (numbers(10 ** 9) >> SlowTerm({path!r}) >> ignore).run()
except KeyboardInterrupt:
    print("interrupted", flush=True)
""")


def test_ctrl_c_to_the_group_lets_every_local_term_finish(tmp_path):
    """Workers ignore SIGINT, so a terminal's Ctrl-C (to the whole group) reaches
    only the driver, whose cancel lets every local_term run to its end."""
    path = tmp_path / "terms"
    with _driver(SLOW_TERM, path=str(path)) as proc:
        assert [proc.stdout.readline().strip() for _ in range(2)] == ["running"] * 2
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
    assert "interrupted" in out
    assert len(path.read_text().split()) == 2  # both workers' local_term ran to the end


@source
class Endless:
    """An endless source that notes when its local_term runs."""

    def __init__(self, path):
        self.path = path

    def run(self):
        yield from itertools.count()

    def local_term(self):
        with open(self.path, "w") as f:
            f.write("local_term")


def test_a_worker_waiting_for_room_downstream_sees_the_cancel(tmp_path):
    """The source is blocked on a full channel when the stage behind it fails:
    the wait itself must notice the cancel (a long grace period would hide it)."""
    marker = tmp_path / "source"
    start = time.monotonic()
    with pytest.raises(StageError):
        (Endless(str(marker)) >> fail_on(bad=1000) >> ignore).run(
            executor=ProcessExecutor(grace=10), timeout=20
        )
    assert time.monotonic() - start < 2
    assert marker.read_text() == "local_term"


class Slow:
    """20 ms per item; sets ``begun`` once item 3 is done, and notes each item
    and local_term in a file."""

    def __init__(self, path, begun):
        self.path, self.begun = path, begun

    def run(self, x):
        time.sleep(0.02)
        with open(self.path, "a") as f:
            f.write(f"done {x}\n")
        if x == 3:
            self.begun.set()  # and it sends nothing: no send notices the cancel for it

    def local_term(self):
        with open(self.path, "a") as f:
            f.write("local_term\n")


class FailWhenSet:
    def __init__(self, begun):
        self.begun = begun

    def run(self, x):
        if not self.begun.wait(timeout=10):
            return x
        raise ValueError("the other branch has begun")


def test_a_stage_that_sends_nothing_sees_the_cancel_while_it_works(tmp_path, mp_context):
    """No send of its own notices the cancel for a filter or a sink: reading its
    input does, or the check between two chunks of a batch (a long grace period
    would hide a miss)."""
    path, begun = tmp_path / "log", mp_context.Event()
    flow = merge(numbers(300) >> Slow(str(path), begun), numbers(1) >> FailWhenSet(begun)) >> ignore
    start = time.monotonic()
    with pytest.raises(StageError, match="the other branch has begun"):
        flow.run(executor=ProcessExecutor(grace=10), timeout=20)
    assert time.monotonic() - start < 2.5
    lines = path.read_text().splitlines()
    assert lines[-1] == "local_term" and len(lines) < 60
