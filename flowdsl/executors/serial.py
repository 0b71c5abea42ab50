"""The serial executor: the stage machines driven in the calling process.

It is the reference semantics by construction: the rules of the flow live in the
machines (:mod:`flowdsl._core.machine`), and this module only moves items between
them through in-memory queues, in an order a *schedule* decides.  The default
schedule is deterministic: sources are pulled in turn, one item at a time, and
everything an item causes runs before the next one is pulled; each stage has one
worker.  Tests pass other schedules (:class:`Schedule`) to drive the same
machines in any order, with several workers per stage and batches of any size.

It is the oracle the process executor is tested against, and the mode to debug a
flow in (breakpoints work).
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from .._core.machine import RUNNING, Machine, loop_weights
from .._core.order import Reorder
from .._plan import DRIVER, Plan
from .._report import StageStats, stage_figures
from ..errors import FlowTimeout
from ._base import Execution, Executor

__all__ = ["Schedule", "SerialExecutor"]

_EOS = None  # the end of a queue: no batch is None


class Schedule:
    """The order in which the serial executor runs things.

    The default: one worker per stage, one item per batch, consumers of a
    channel served in turn, events handled in the order they happened.
    Subclasses (the property tests') may choose otherwise at every step.
    """

    parallel = False  # run a stage's ``workers`` machines, not one

    def split(self, items: list[Any], consumers: int) -> list[tuple[int, list[Any]]]:
        """Cut ``items`` into batches, each for one of ``consumers`` competing
        consumers: ``(consumer index, batch)``.  By default one item each, in turn."""
        return [(-1, [x]) for x in items]  # -1: the next in turn

    def pick(self, ready: deque[Any]) -> Any:
        """Take the next input queue to step from ``ready``: the keys of the
        queues with a batch or an end in them, once per entry, in the order they
        came.  Each queue is first in, first out whichever is picked."""
        return ready.popleft()

    def pull_size(self) -> int:
        """How many items a source is asked for at a time."""
        return 1


class SerialExecutor(Executor):
    """Run every stage in the calling process, one item at a time.

    The reference semantics, and the mode to debug in: deterministic, no
    processes, breakpoints and ``print`` work in every stage. Options that need
    processes (``workers``, ``timeout``, ``restarts``) keep their meaning where
    one process can give it: one worker runs, and a timed-out item fails once
    its call returns.

    Args:
        schedule: The order in which things run (the property tests vary it;
            the default serves consumers in turn, one item at a time).

    Examples:
        >>> from flowdsl import SerialExecutor, source, transform
        >>> @source
        ... def numbers(n):
        ...     yield from range(n)
        >>> (numbers(3) >> transform(lambda x: f"#{x}")).collect(executor=SerialExecutor())
        ['#0', '#1', '#2']
    """

    name = "serial"

    def __init__(self, schedule: Schedule | None = None) -> None:
        self.schedule = schedule or Schedule()

    def start(self, plan: Plan, *, timeout: float | None = None) -> Execution:
        """Prepare ``plan`` to run here; the execution runs it as it is iterated."""
        return _SerialExecution(plan, timeout, self.schedule)


class _SerialExecution(Execution):
    def __init__(self, plan: Plan, timeout: float | None, schedule: Schedule) -> None:
        super().__init__(plan, "serial")
        self.schedule = schedule
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        workers = [n.workers if schedule.parallel else 1 for n in plan.nodes]
        self.machines = [
            [
                Machine(n, w, loops=loop_weights(plan, n), copy_functor=True)
                for w in range(workers[n.id])
            ]
            for n in plan.nodes
        ]
        self.busy = [[0.0] * k for k in workers]
        # one queue per (node, worker, input index): batches, then _EOS
        self.queues: dict[tuple[int, int, int], deque[Any]] = {}
        self.ready: deque[Any] = deque()  # queue keys with something in, and sources
        self.results: deque[Any] = deque()
        self.live = [sum(workers[n] for n, _ in c.producers) for c in plan.channels]
        self.turn = [0] * len(plan.channels)
        self.in_flight = [0] * len(plan.nodes)  # per loop gate
        self.closed = False
        self.stopping = False  # a stage raised StopFlow: the sources stop
        # a stage whose several workers keep order: its batches' tickets, per queue
        self.order = {
            n.id: Reorder()
            for n in plan.nodes
            if workers[n.id] > 1 and n.stage.ordered and n.kind != "sink"
        }
        self.tickets: dict[tuple[int, int, int], deque[int]] = {}
        self.retired: list[tuple[int, tuple[float, ...]]] = []  # replaced machines' figures
        self.replaced = [0] * len(plan.nodes)

    # -- the run ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._run()
        finally:
            self.close()

    def _run(self) -> Iterator[Any]:
        plan = self.plan
        for ms in self.machines:
            for m in ms:
                self._event(m, m.open)
        for ch in plan.channels:
            if ch.seeds:
                self._deliver(ch.id, list(ch.seeds))
            if not ch.producers:  # fed by its seeds alone
                self._end_channel(ch.id)
        sources = deque(m for n in plan.nodes if n.kind == "source" for m in self.machines[n.id])
        while True:
            yield from self._drain()
            if sources:
                self._check_deadline()
                m = sources.popleft()
                self._pull(m)
                if m.status is RUNNING:
                    sources.append(m)
                continue
            rest = [m for ms in self.machines for m in ms if m.status is RUNNING]
            if not rest:
                break
            self._event(rest[0], rest[0].end_all)  # a cycle of streams, fed only by seeds
        yield from self._drain()

    def _drain(self) -> Iterator[Any]:
        ready, results = self.ready, self.results
        while ready or results:
            while results:
                yield results.popleft()
            if ready:
                self._check_deadline()
                self._step(self.schedule.pick(ready))

    def _pull(self, m: Machine) -> None:
        if self.stopping or self._unread(m.node.id):
            self._event(m, m.stop)
        else:
            self._event(m, m.pull, self.schedule.pull_size())

    def _step(self, key: tuple[int, int, int]) -> None:
        nid, w, port = key
        m = self.machines[nid][w]
        batch = self.queues[key].popleft()
        if batch is _EOS:
            self._event(m, m.end, port)
            return
        if nid in self.order:
            self._event(m, m.feed, port, batch, ticket=self.tickets[key].popleft())
        else:
            self._event(m, m.feed, port, batch)
        if m.status is RUNNING and self._unread(nid):
            self._event(m, m.stop)  # nobody reads our outputs any more: stop

    def _event(self, m: Machine, method: Any, *args: Any, ticket: int | None = None) -> None:
        """Run one event of machine ``m``, then move what it made: the in-flight
        change first, then the items, then the ends of its outputs."""
        nid = m.node.id
        t = time.perf_counter()
        try:
            method(*args)
        finally:
            self.busy[nid][m.worker] += time.perf_counter() - t
        changed = []
        for gate, delta in m.take_delta():
            self.in_flight[gate] += delta
            changed.append(gate)
        out = [list(items) for items in m.out]
        for items in m.out:
            items.clear()
        for ready in [out] if ticket is None else self.order[nid].done(ticket, out):
            self._send(nid, ready)
        for port in m.take_closed():
            self._end_port(nid, port)
        if m.stop_flow and not self.stopping:
            self.stopping = self.report.stopped = True
        if m.status is not RUNNING:
            m.close()  # local_term as soon as the stage has ended
        elif method == m.feed:
            self._maybe_replace(m)
        if m.gate:
            changed.append(nid)
        for gate in changed:
            g = self.machines[gate][0]
            if g is not m or method != g.idle:
                self._event(g, g.idle, self.in_flight[gate])

    def _maybe_replace(self, m: Machine) -> None:
        """A stage with ``max_items_per_worker`` gets a fresh machine (local_term,
        then local_init again) once its machine has taken that many items."""
        if not m.spent:
            return
        nid = m.node.id
        m.close()
        self.retired.append(
            (nid, (*m.figures, m.busy(self.busy[nid][m.worker]), 0.0, 0.0, *m.tail))
        )
        self.busy[nid][m.worker] = 0.0
        fresh = Machine(m.node, m.worker, loops=m.loops, copy_functor=True)
        self.machines[nid][m.worker] = fresh
        self.replaced[nid] += 1
        self._event(fresh, fresh.open)

    # -- transport ---------------------------------------------------------------------
    def _send(self, nid: int, out: list[list[Any]]) -> None:
        for port, items in enumerate(out):
            if items:
                for ch in self.plan.nodes[nid].outputs[port]:
                    self._deliver(ch, items)

    def _deliver(self, ch: int, items: list[Any]) -> None:
        consumers = self._consumer_workers(ch)
        for k, batch in self.schedule.split(items, len(consumers)):
            if k < 0:
                k = self.turn[ch] % len(consumers)
                self.turn[ch] += 1
            nid, w, port = consumers[k]
            if nid == DRIVER:
                self.results.extend(batch)
            else:
                self._put((nid, w, port), batch)

    def _put(self, key: tuple[int, int, int], batch: Any) -> None:
        q = self.queues.setdefault(key, deque())
        if batch is not _EOS and key[0] in self.order:
            self.tickets.setdefault(key, deque()).append(self.order[key[0]].ticket())
        q.append(batch)
        self.ready.append(key)

    def _consumer_workers(self, ch: int) -> list[tuple[int, int, int]]:
        """Every (node, worker, input index) that competes for channel ``ch``."""
        if self.plan.channels[ch].consumers[0][0] == DRIVER:
            return [(DRIVER, 0, 0)]
        return [
            (nid, w, index)
            for nid, index in self.plan.readers(ch)
            for w in range(len(self.machines[nid]))
        ]

    def _end_port(self, nid: int, port: int) -> None:
        for ch in self.plan.nodes[nid].outputs[port]:
            self.live[ch] -= 1
            if self.live[ch] == 0:
                self._end_channel(ch)

    def _end_channel(self, ch: int) -> None:
        for key in self._consumer_workers(ch):
            if key[0] != DRIVER:
                self._put(key, _EOS)

    def _unread(self, nid: int) -> bool:
        """True when every stage that reads an output of ``nid`` has ended."""
        readers = self.plan.downstream(nid)
        return readers is not None and all(
            m.status is not RUNNING for r in readers for m in self.machines[r]
        )

    # -- figures and teardown ------------------------------------------------------------
    def stats(self) -> dict[str, StageStats]:
        stages = stage_figures(
            self.plan,
            [
                *self.retired,
                *(
                    (node.id, (*m.figures, m.busy(self.busy[node.id][m.worker]), 0.0, 0.0, *m.tail))
                    for node, ms in zip(self.plan.nodes, self.machines, strict=True)
                    for m in ms
                ),
            ],
        )
        for node in self.plan.nodes:
            if self.replaced[node.id] and not node.hidden:
                stages[node.name].replaced = self.replaced[node.id]
        return stages

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise FlowTimeout(f"the flow did not finish within {self.timeout} s")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        first: BaseException | None = None
        for ms in self.machines:  # local_term runs on success, error and cancel alike
            for m in ms:
                try:
                    m.close()
                except Exception as exc:
                    first = first or exc
        self.report.stages = self.stats()
        self._finish_report()
        if first is not None and sys.exc_info()[1] is None:
            raise first
