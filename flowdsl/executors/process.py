"""The process executor: every stage in its own worker process(es).

The driver starts the workers, then only supervises: it waits on the control pipe
(errors, logs, completion), the result channel and the process sentinels at once,
so it notices a failure, a dead worker or a timeout as soon as it happens.  One
teardown path serves success, error, timeout, early exit and Ctrl-C: the run's
:class:`~._channel.Cancel` is set (each worker finishes the call it is in, runs
``local_term`` and exits; no signal interrupts user code), SIGKILL after a grace
period, then join and close everything, and remove what is left of the run's
shared-memory segments (see :mod:`flowdsl._core.shm`).  Any signal that ends a
worker is its death, reported as :class:`~flowdsl.WorkerDied`.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import dill
import multiprocess
from multiprocess.connection import wait
from multiprocess.reduction import ForkingPickler

from .._core import shm as _shm
from .._core.codec import EOS, Codec, encode
from .._core.machine import loop_weights
from .._core.records import restored_error
from .._core.runner import describe
from .._plan import Plan
from .._report import BUSY, FIGURES, StageStats, stage_figures
from ..errors import FlowError, FlowTimeout, GraphError, WorkerDied
from ._base import Execution, Executor
from ._channel import Cancel, Channel, ControlPipe, Notice
from ._worker import MAX_BATCH, Job, Ordering, read_journal, worker_main

__all__ = ["ProcessExecutor"]

log = logging.getLogger("flowdsl")
START_METHODS = ("fork", "spawn", "forkserver")
TIMEOUT_TICK = 0.05  # seconds between looks at the calls of stages with a timeout


class ProcessExecutor(Executor):
    """Run each stage in ``workers`` processes of package ``multiprocess``.

    The default executor. Stages travel to the workers serialised with
    ``dill``, so lambdas, closures and functions defined in a notebook work;
    items travel in batches through pipes, and big buffers through shared
    memory. A failure anywhere stops every worker before the error is raised,
    and no process, pipe or shared memory segment outlives the run.

    Args:
        start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"`` (default: the
            ``FLOWDSL_START_METHOD`` environment variable, else the platform's).
        grace: Seconds a stopped worker has to finish its current call and run
            ``local_term`` before it is killed (then ``local_term`` does not
            run: keep flushing sinks' calls short).
        shared_memory: Let big buffers (numpy arrays, ``bytes``, ``memoryview``
            objects of 64 KiB or more) travel through shared memory instead of
            the pipes, where ``/dev/shm`` is usable.

    Raises:
        ValueError: ``start_method`` is not one of the three.

    Examples:
        >>> from flowdsl import ProcessExecutor, source, transform
        >>> @source
        ... def numbers(n):
        ...     yield from range(n)
        >>> flow = numbers(4) >> transform(lambda x: x * 10, workers=2)
        >>> flow.collect(executor=ProcessExecutor("spawn", grace=5.0))
        [0, 10, 20, 30]
    """

    name = "process"

    def __init__(
        self, start_method: str | None = None, *, grace: float = 1.0, shared_memory: bool = True
    ) -> None:
        start_method = start_method or os.environ.get("FLOWDSL_START_METHOD") or None
        if start_method is not None and start_method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS}, got {start_method!r}")
        self.start_method = start_method
        self.grace = grace
        self.shared_memory = shared_memory

    def start(self, plan: Plan, *, timeout: float | None = None) -> Execution:
        """Start the workers of ``plan``; the execution streams its results."""
        if multiprocess.current_process().daemon:
            raise FlowError(
                "the process executor cannot start workers here: this is a daemonic "
                "process (a worker of a multiprocess Pool, or a Process made with "
                "daemon=True), and daemonic processes may not have children. Run this "
                "flow with executor='serial' here, or run it outside the pool (a flow "
                "may run inside a stage of another flow)"
            )
        return _ProcessExecution(plan, self, timeout)

    def __repr__(self) -> str:
        off = "" if self.shared_memory else ", shared_memory=False"
        return f"ProcessExecutor(start_method={self.start_method!r}{off})"


class _ProcessExecution(Execution):
    def __init__(self, plan: Plan, executor: ProcessExecutor, timeout: float | None) -> None:
        super().__init__(plan, "process")
        self.ctx = multiprocess.get_context(executor.start_method)
        self.grace = executor.grace
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.closed = False
        self.owner = os.getpid()  # only this process may stop the run and free what it holds
        self.finished = False  # the report's figures are final
        self.error: BaseException | None = None
        self.done: set[tuple[int, int]] = set()
        self.procs: dict[Any, tuple[int, int, Any]] = {}  # sentinel -> (node, worker, proc)
        self.alive: dict[Any, tuple[int, int, Any]] = {}  # those not reaped yet
        self.shared: list[Any] = []
        # segments are named after the run, so teardown can sweep what is left
        self.shm_prefix = _shm.new_prefix() if executor.shared_memory and _shm.available() else None
        if self.shm_prefix is not None:
            _sweep_orphans_once()
        self.codec = Codec(None, names=[n.name for n in plan.nodes])  # the driver only decodes
        # Under spawn and forkserver, each stage travels as dill bytes; check now
        # that it can, so an unpicklable stage is a GraphError before anything starts.
        self.inherit = self.ctx.get_start_method() == "fork"
        if not self.inherit:
            _check_shippable(plan, self.ctx.get_start_method())
        self.control = ControlPipe(self.ctx)
        self.cancel = Cancel(self.ctx)
        self.lifeline = self.ctx.Pipe(duplex=False)  # workers die when the driver does
        # every worker's live figures, one slot each (the report and progress read them)
        self.slots = {
            (n.id, w): i
            for i, (n, w) in enumerate((n, w) for n in plan.nodes for w in range(n.workers))
        }
        self.figures = self.ctx.RawArray("d", len(self.slots) * len(FIGURES))
        self.stop = self.ctx.Event()  # set on StopFlow: sources end, the flow drains
        # supervised stages: the start time of each worker's call in progress, the
        # directory of their journals, and what was replaced
        self.calls = self.ctx.RawArray("d", len(self.slots))
        self.journals = (
            tempfile.mkdtemp(
                prefix=f"flowdsl_journal_{os.getpid()}_",
                dir="/dev/shm" if os.path.isdir("/dev/shm") else None,
            )
            if any(n.stage.supervised for n in plan.nodes)
            else None
        )
        self.restarted = [0] * len(plan.nodes)  # workers replaced after dying
        self.replaced = [0] * len(plan.nodes)  # workers replaced after max items
        self.timed_out: set[tuple[int, int]] = set()
        self.retired: set[tuple[int, int]] = set()
        self.channels = [
            Channel(
                self.ctx,
                c.name,
                c.buffer,
                plan.producer_workers(c.id),
                plan.consumer_workers(c.id),
                1 if plan.one_at_a_time(c.id) else MAX_BATCH,
                self.cancel,
                min_batch=plan.calls_per_batch(c.id),
            )
            for c in plan.channels
        ]
        if plan.result is not None:  # the driver only unpickles: a cheap consumer
            self.channels[plan.result].cost.value = 0.0
        for c in plan.channels:
            if c.seeds:
                self.channels[c.id].put(encode(list(c.seeds)))
            if not c.producers:  # fed by its seeds alone
                self.channels[c.id].end()
        # Ctrl-C must not land between a fork and our record of the child: hold
        # SIGINT until every worker is started (the workers inherit the mask and
        # ignore it), then let a pending one through to the normal teardown.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        _live.add(self)
        _guard_signals()
        try:
            self._start_workers()
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending Ctrl-C lands here
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self.close()
            raise

    def _start_workers(self) -> None:
        self.levels = {
            "": logging.getLogger().getEffectiveLevel(),
            "flowdsl": log.getEffectiveLevel(),
        }
        self.counters = {n.id: self.ctx.Value("q", 0) for n in self.plan.nodes if n.loop}
        self.loops = {n.id: loop_weights(self.plan, n) for n in self.plan.nodes}
        self.orderings: dict[int, Ordering | None] = {}
        self.shared.append(self.counters)
        for node in self.plan.nodes:
            ordering = None
            if node.workers > 1 and node.stage.ordered and node.kind != "sink":
                ordering = Ordering(
                    self.ctx.Lock(),
                    self.ctx.Value("q", 0, lock=False),
                    self.ctx.Condition(),
                    self.ctx.Value("q", 0, lock=False),
                )
                # keep it alive: a spawned child opens its semaphores after start()
                self.shared.append(ordering)
            self.orderings[node.id] = ordering
            for w in range(node.workers):
                self._start_worker(node, w)

    def _start_worker(self, node: Any, w: int, recover: str | None = None) -> None:
        """Start worker ``w`` of ``node``; ``recover`` says why it replaces one."""
        slot = self.slots[node.id, w]
        job = Job(
            node,
            w,
            [self.channels[c] for c in node.inputs],
            [[self.channels[c] for c in port] for port in node.outputs],
            self.control,
            self.cancel,
            self.orderings[node.id],
            self.levels,
            self.loops[node.id],
            {
                g: (
                    self.counters[g],
                    None if g == node.id else self.channels[_feedback(self.plan, g)],
                )
                for g, _, _ in self.loops[node.id]
            },
            self.stop,
            self.shm_prefix,
            self.figures,
            slot,
            tuple(n.name for n in self.plan.nodes),
            self.lifeline[0],
            self.lifeline[1] if self.inherit else None,
            journal=self._journal(node, w),
            calls=self.calls,
            recover=recover,
        )
        proc = self.ctx.Process(target=worker_main, args=(job,), name=f"flowdsl:{node.name}:{w}")
        with _recursive_pickling(not self.inherit):
            proc.start()
        self.procs[proc.sentinel] = (node.id, w, proc)
        self.alive[proc.sentinel] = (node.id, w, proc)

    def _journal(self, node: Any, w: int) -> str | None:
        """Where worker ``w`` of a supervised stage notes the item in its hands."""
        if not node.stage.supervised or self.journals is None:
            return None
        return os.path.join(self.journals, f"{self.slots[node.id, w]}")

    # -- supervision -----------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        result = None if self.plan.result is None else self.channels[self.plan.result]
        alive = self.alive
        while alive or result is not None:
            waitables = [self.control.reader, *alive]
            if result is not None:
                waitables.append(result.reader)
            remaining = self._remaining()
            ready = wait(waitables, _sooner(remaining, self._watch()))
            if not ready:
                if remaining is not None and self._remaining() == 0:
                    raise FlowTimeout(f"the flow did not finish within {self.timeout} s")
                continue
            if self.control.reader in ready:
                self._read_control()
            if result is not None and result.reader in ready:
                data = result.get()
                if data == EOS:
                    result = None
                else:
                    yield from self.codec.decode(data)
            for sentinel in ready:
                if sentinel in alive:
                    del alive[sentinel]
                    self._reap(sentinel)

    def _watch(self) -> float | None:
        """Stop the workers whose call has run past their stage's timeout (the
        replacement fails the item); seconds until the next may, or None."""
        soonest = None
        now = time.monotonic()
        for _, (node_id, w, proc) in list(self.alive.items()):
            limit = self.plan.nodes[node_id].stage.timeout
            started = self.calls[self.slots[node_id, w]] if limit is not None else 0.0
            if limit is None or not started or (node_id, w) in self.timed_out:
                continue
            left = started + limit - now
            if left <= 0 and self.calls[self.slots[node_id, w]] == started:  # still that call
                self.timed_out.add((node_id, w))
                for pid in [proc.pid, *_descendants(proc.pid)]:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            else:
                soonest = left if soonest is None else min(soonest, left)
        if any(self.plan.nodes[n].stage.timeout is not None for n, _, _ in self.alive.values()):
            soonest = min(soonest or TIMEOUT_TICK, TIMEOUT_TICK)  # a call may start meanwhile
        return soonest

    def _remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def _read_control(self, raising: bool = True) -> None:
        for notice, node_id, worker, payload in self.control.received():
            if notice is Notice.LOG:
                logging.getLogger(payload.name).handle(payload)
            elif notice is Notice.DONE:
                self.done.add((node_id, worker))
            elif notice is Notice.RETIRED:
                self.retired.add((node_id, worker))
            elif notice is Notice.STOP:
                self.report.stopped = True
                self.stop.set()
            elif notice is Notice.ERROR and raising and self.error is None:
                self.error = restored_error(payload)
                raise self.error
            elif notice is Notice.INTERRUPT and raising:
                raise KeyboardInterrupt

    def _reap(self, sentinel: Any) -> None:
        node_id, worker, proc = self.procs[sentinel]
        proc.join()
        self._read_control()  # a worker reports before it exits
        key = (node_id, worker)
        node = self.plan.nodes[node_id]
        if key in self.retired:  # max_items_per_worker: a fresh one takes over
            self.retired.discard(key)
            self.replaced[node_id] += 1
            self._replace(sentinel, node, worker, "retired")
            return
        if key in self.done:
            return
        timed_out = key in self.timed_out
        self.timed_out.discard(key)
        in_call = self.calls[self.slots[key]] > 0
        # A worker that died inside its stage's code had one item in hand, which
        # its journal holds; one that died elsewhere (moving items) may have
        # left a channel half written: that is no death to recover from.
        if node.stage.supervised and (
            timed_out or (in_call and self.restarted[node_id] < node.stage.restarts)
        ):
            if not timed_out:
                self.restarted[node_id] += 1
            slot = self.slots[key]
            if in_call:  # the call that ended with the worker was busy until then:
                # its replacement goes on from these figures
                self.figures[slot * len(FIGURES) + BUSY] += time.monotonic() - self.calls[slot]
            self.calls[slot] = 0.0
            self.control.release_for(proc.pid)
            self._replace(
                sentinel, node, worker, "timeout" if timed_out else f"exit code {proc.exitcode}"
            )
            return
        if node.stage.supervised and in_call:  # no restarts, or all spent: its journal
            # names the item in hand
            held = read_journal(self._journal(node, worker))
            raise WorkerDied(
                node.name,
                worker,
                proc.exitcode,
                item=None if held is None else describe(held[1]),
                restarts=node.stage.restarts,
            )
        raise WorkerDied(node.name, worker, proc.exitcode)

    def _replace(self, sentinel: Any, node: Any, worker: int, reason: str) -> None:
        _, _, proc = self.procs.pop(sentinel)
        proc.close()
        log.info(
            "worker %d replaced (%s)", worker, reason, extra={"stage": node.name, "worker": worker}
        )
        self._start_worker(node, worker, recover=reason)

    def stats(self) -> dict[str, StageStats]:
        if self.finished:  # the report holds them: no need for the shared array
            return self.report.stages
        figures, k = self.figures[:], len(FIGURES)
        stages = stage_figures(
            self.plan,
            (
                (node_id, figures[slot * k : (slot + 1) * k])
                for (node_id, _), slot in self.slots.items()
            ),
        )
        for node in self.plan.nodes:
            if not node.hidden:
                s = stages[node.name]
                s.restarts, s.replaced = self.restarted[node.id], self.replaced[node.id]
        return stages

    def queue_fill(self) -> dict[str, float]:
        fill: dict[str, float] = {}
        if self.finished:  # the queues are gone
            return fill
        for node in self.plan.nodes:
            if node.inputs and not node.hidden:
                shares = [self.channels[c].fill() for c in node.inputs]
                fill[node.name] = max(shares)
        return fill

    # -- teardown ----------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if os.getpid() != self.owner:
            return  # a child forked by the driver: the run, its workers and memory are not its own
        try:
            self._stop_workers()
        except KeyboardInterrupt:  # a second Ctrl-C: no more grace
            self._kill_all()
            raise
        finally:
            for ch in self.channels:
                ch.close()
            self.control.close()
            self.cancel.close()
            for end in self.lifeline:
                end.close()
            with contextlib.suppress(OSError):
                self.codec.close()
            if self.shm_prefix is not None:  # unread messages, killed workers
                _shm.sweep(self.shm_prefix)
            if self.journals is not None:
                shutil.rmtree(self.journals, ignore_errors=True)
            self.report.stages = self.stats()
            self.finished = True
            self._finish_report()
            _live.discard(self)
            _unguard_signals()

    def _stop_workers(self) -> None:
        procs = [p for _, _, p in self.procs.values()]
        live = [p for p in procs if p.exitcode is None]
        self.cancel.set()  # each worker finishes what it runs, then local_term
        end = time.monotonic() + self.grace
        while live and time.monotonic() < end:
            wait([self.control.reader, *(p.sentinel for p in live)], end - time.monotonic())
            self._read_control(raising=False)  # keep workers from blocking on the pipe
            live = [p for p in live if p.is_alive()]
        self._kill_all()

    def _kill_all(self) -> None:
        for _, _, p in self.procs.values():
            if p.exitcode is None:
                # what a stuck worker started (a pool it waits on, spawned or forked)
                # goes with it: it will not get to stop them itself
                below = _descendants(p.pid)
                _signal(p, signal.SIGKILL)
                for pid in below:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
        for _, _, p in self.procs.values():
            p.join()
            p.close()  # its sentinel pipe now, not at garbage collection


_live: weakref.WeakSet[_ProcessExecution] = weakref.WeakSet()


@atexit.register
def _close_abandoned() -> None:
    """At interpreter exit, stop runs nobody closed (registered after the
    multiprocess exit hook, so it runs before that joins the workers)."""
    for execution in list(_live):
        execution.close()


# SIGTERM and SIGHUP end the driver like Ctrl-C does: every live run is torn down
# (no worker, no shared-memory segment outlives it), then the process ends by the
# signal, so its exit status stays honest.  Only while a run is live, only from the
# main thread, and only where the application has not set a handler of its own.
_TERMINATING = (signal.SIGTERM, signal.SIGHUP)
_guarded: dict[int, Any] = {}


def _guard_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _TERMINATING:
        if sig not in _guarded and signal.getsignal(sig) == signal.SIG_DFL:
            _guarded[sig] = signal.signal(sig, _terminate)


def _unguard_signals() -> None:
    if _live or threading.current_thread() is not threading.main_thread():
        return
    for sig in list(_guarded):
        if signal.getsignal(sig) == _terminate:
            signal.signal(sig, _guarded[sig])
        del _guarded[sig]


def _terminate(signum: int, frame: Any) -> None:
    for execution in list(_live):
        with contextlib.suppress(Exception):
            execution.close()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_swept = False


def _sweep_orphans_once() -> None:
    global _swept
    if not _swept:
        _swept = True
        _shm.sweep_orphans()


def _sooner(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _feedback(plan: Plan, gate: int) -> int:
    loop = plan.nodes[gate].loop
    assert loop is not None
    return loop.feedback


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux's /proc; none where there is none)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError), open(f"/proc/{parent}/task/{task}/children") as f:
                kids = [int(k) for k in f.read().split()]
                found += kids
                todo += kids
    return found


def _signal(proc: Any, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, TypeError):
        os.kill(proc.pid, sig)


@contextlib.contextmanager
def _recursive_pickling(on: bool) -> Iterator[None]:
    """Have dill take along the globals a function uses (``recurse``) while a
    worker is spawned, so functions defined in a notebook or script work in a
    fresh interpreter.  The worker's job is pickled with the reducers of
    ``multiprocess`` during the spawn, so the synchronisation objects and shared
    memory of ``multiprocess`` that a stage holds (an ``Event`` used as a term
    flag, a ``Barrier``) travel too."""
    if not on:
        yield
        return
    before = dill.settings["recurse"]
    dill.settings["recurse"] = True
    try:
        yield
    finally:
        dill.settings["recurse"] = before


class _Probe:
    """Stands in for the spawning ``Popen`` while :func:`_check_shippable` pickles
    the stages, so that synchronisation objects are checked as a spawn would;
    what it produces is thrown away."""

    def duplicate_for_child(self, fd: int) -> int:
        return fd

    def DupFd(self, fd: int) -> int:  # the name multiprocess calls
        return fd


def _check_shippable(plan: Plan, method: str) -> None:
    """Raise :class:`GraphError` naming the first stage that cannot be sent to a
    worker under ``method``."""
    from multiprocess.context import set_spawning_popen

    for node in plan.nodes:
        set_spawning_popen(_Probe())
        try:
            ForkingPickler(io.BytesIO(), recurse=True).dump(node.stage)
        except Exception as exc:
            raise GraphError(
                f"stage {node.name!r} cannot be sent to a worker process under the "
                f"{method!r} start method: {type(exc).__name__}: {str(exc).rstrip('.')}. "
                f"{_ship_hint(exc, method)}"
            ) from exc
        finally:
            set_spawning_popen(None)


def _ship_hint(exc: Exception, method: str) -> str:
    """What to do about a stage that cannot be sent, by what went wrong."""
    text = str(exc)
    if "'generator' object" in text:
        return (
            "A generator object cannot be sent: pass the generator function "
            "instead (Source(gen) rather than Source(gen())), or use 'fork'."
        )
    if "through inheritance" in text or "SemLock" in text:
        return (
            "A lock, event, barrier or queue shared with workers must come from "
            f"multiprocess.get_context({method!r}) (objects of the standard "
            "multiprocessing package, or of another start method, travel only by "
            "fork), or use 'fork'."
        )
    return "Use the 'fork' start method, or make the stage's function and arguments picklable."
