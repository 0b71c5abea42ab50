"""The serial executor: the reference semantics, in the calling process.

Items are pushed one at a time through a FIFO work list, sources are pulled in
turn, and everything is deterministic.  It is the oracle the process executor is
tested against, and the mode to debug a flow in (breakpoints work).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from .._plan import DRIVER, Plan
from .._report import StageStats
from .._runner import Runner, StageDone
from ..errors import FlowTimeout, StopFlow
from ._base import Execution, Executor

__all__ = ["SerialExecutor"]

log = logging.getLogger("flowdsl")
_EOS = object()


class SerialExecutor(Executor):
    """Run every stage in the calling process, one item at a time."""

    name = "serial"

    def start(self, plan: Plan, *, timeout: float | None = None) -> Execution:
        return _SerialExecution(plan, timeout)


class _SerialExecution(Execution):
    def __init__(self, plan: Plan, timeout: float | None) -> None:
        super().__init__(plan, "serial")
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.runners = [Runner(n.stage, n.name, n.arity, len(n.outputs),
                               copy_functor=True, envelope=n.envelope, dead_letter=n.dead_letter)
                        for n in plan.nodes]
        self.work: deque[tuple[int, int, Any]] = deque()
        self.pending: list[list[deque[Any]]] = [[deque() for _ in n.inputs] for n in plan.nodes]
        self.ports_open = [len(n.inputs) for n in plan.nodes]
        self.leftovers = [0] * len(plan.nodes)
        self.live = [len(c.producers) for c in plan.channels]
        self.turn = [0] * len(plan.channels)
        self.ended = [False] * len(plan.nodes)
        self.busy = [0.0] * len(plan.nodes)
        self.results: deque[Any] = deque()
        self.closed = False
        self.port_closed = [[False] * len(n.outputs) for n in plan.nodes]
        self.stopped = [False] * len(plan.nodes)  # ended early by a flag or Sentinel
        self.port_ended: list[set[int]] = [set() for _ in plan.nodes]
        self.dropped = [0] * len(plan.nodes)
        self.in_flight = [0] * len(plan.nodes)  # per loop gate
        self.upstream_done = [n.loop is not None and n.loop.upstream is None
                              for n in plan.nodes]

    def __iter__(self) -> Iterator[Any]:
        try:
            for r in self.runners:
                r.open()
            for ch in self.plan.channels:
                for x in ch.seeds:
                    self._deliver(ch.id, x)
                if not ch.producers:  # fed by its seeds alone
                    self.work.extend((n, p, _EOS) for n, p in ch.consumers if n != DRIVER)
            for node in self.plan.nodes:
                if node.loop is not None:
                    self._enter(node.id, node.gate.seed)
            yield from self._drain()
            sources = {n.id: self.runners[n.id].iterate()
                       for n in self.plan.nodes if n.kind == "source"}
            while sources:
                for nid, it in list(sources.items()):
                    if self._flagged(nid) or self._unread(nid) or self.report.stopped:
                        x = _EOS
                    else:
                        t = time.perf_counter()
                        try:
                            x = next(it, _EOS)
                        except StopFlow:
                            x, self.report.stopped = _EOS, True
                        self.busy[nid] += time.perf_counter() - t
                    if x is _EOS:
                        del sources[nid]
                        self._end(nid)
                    else:
                        out: list[list[Any]] = [[] for _ in self.plan.nodes[nid].outputs]
                        self._split(nid, x, out)
                        self._emit(nid, out)
                    yield from self._drain()
            for nid, ended in enumerate(self.ended):  # cycles fed only by seeds
                if not ended:
                    self._end(nid)
            yield from self._drain()
        except StopFlow:
            self.report.stopped = True
        finally:
            self.close()

    def _drain(self) -> Iterator[Any]:
        work, results = self.work, self.results
        while work or results:
            while results:
                yield results.popleft()
            if work:
                self._check_deadline()
                self._step(*work.popleft())

    def _step(self, nid: int, port: int, x: Any) -> None:
        node = self.plan.nodes[nid]
        if node.loop is not None:
            self._gate_step(nid, port, x)
            return
        if x is _EOS:
            self.ports_open[nid] -= 1
            self.port_ended[nid].add(port)
            if not self.ended[nid] and self._zip_exhausted(nid):
                self._end(nid)
            if self.ports_open[nid] == 0:
                if self.leftovers[nid]:
                    _warn_leftovers(node.name, self.leftovers[nid])
                if self.stopped[nid]:
                    log.info("stopped early; %d item(s) left in its inputs were dropped",
                             self.dropped[nid], extra={"stage": node.name, "worker": 0})
            return
        if self.ended[nid]:
            if self.stopped[nid]:
                self.dropped[nid] += 1
            else:
                self.leftovers[nid] += 1
            self._count(node, 0, 1)
            return
        if self._flagged(nid):
            self._stop(nid)
            return
        if len(node.inputs) > 1:
            pending = self.pending[nid]
            pending[port].append(x)
            if not all(pending):
                return
            x = tuple(q.popleft() for q in pending)
        out: list[list[Any]] = [[] for _ in node.outputs]
        t = time.perf_counter()
        try:
            self.runners[nid].process([x], out)
        except (StageDone, StopFlow) as exc:
            if isinstance(exc, StopFlow):  # this stage ends, the sources stop, the rest drains
                self.report.stopped = True
            self._emit(nid, out)
            self._stop(nid)
            return
        finally:
            self.busy[nid] += time.perf_counter() - t
        self._emit(nid, out)
        pairs = zip(out, node.outputs, strict=True)
        produced = sum(len(items) * len(chans) for items, chans in pairs)
        self._count(node, produced, node.arity if len(node.inputs) > 1 else 1)
        if self.port_ended[nid] and self._zip_exhausted(nid):
            self._end(nid)  # an ended input has nothing left to pair
        elif self._unread(nid):
            self._stop(nid)  # nobody reads our outputs any more: stop, and tell upstream

    # -- loops -------------------------------------------------------------------------
    def _gate_step(self, gid: int, port: int, x: Any) -> None:
        if x is _EOS:
            if port == 0:
                self.upstream_done[gid] = True
            else:
                self._end(gid)  # the body has ended: so does the loop
                return
        elif port == 0:
            self._enter(gid, [x])
        else:
            runner = self.runners[gid]
            runner.items_in += 1
            back, out = runner.route([x])
            self._emit(gid, [back, out])
            self.in_flight[gid] += len(back) * len(self.plan.nodes[gid].outputs[0]) - 1
        self._maybe_close_loop(gid)

    def _enter(self, gid: int, items: Any) -> None:
        items = self.plan.nodes[gid].gate.enter(list(items))
        self.in_flight[gid] += len(items) * len(self.plan.nodes[gid].outputs[0])
        self._emit(gid, [items, []])
        self._maybe_close_loop(gid)

    def _count(self, node: Any, produced: int, consumed: int) -> None:
        for gid in node.regions:
            self.in_flight[gid] += produced - consumed
            self._maybe_close_loop(gid)

    def _maybe_close_loop(self, gid: int) -> None:
        if self.upstream_done[gid] and self.in_flight[gid] == 0:
            self._close_port(gid, 0)  # nothing left inside: end the body's input

    def _split(self, nid: int, x: Any, out: list[list[Any]]) -> None:
        if len(out) > 1:
            for _ in self.runners[nid].split(iter([x]), out):
                pass
        elif out:
            out[0].append(x)

    def _emit(self, nid: int, out: list[list[Any]]) -> None:
        node = self.plan.nodes[nid]
        for port, items in enumerate(out):
            for ch in node.outputs[port]:
                for y in items:
                    self._deliver(ch, y)
        dead = node.dead_letter
        self.runners[nid].items_out += sum(len(o) for p, o in enumerate(out) if p != dead)

    def _deliver(self, ch: int, x: Any) -> None:
        consumers = self.plan.channels[ch].consumers
        nid, port = consumers[self.turn[ch] % len(consumers)]
        self.turn[ch] += 1
        if nid == DRIVER:
            self.results.append(x)
        else:
            self.work.append((nid, port, x))

    def _end(self, nid: int) -> None:
        if self.ended[nid]:
            return
        self.ended[nid] = True
        node, runner = self.plan.nodes[nid], self.runners[nid]
        self.leftovers[nid] += sum(map(len, self.pending[nid]))
        if node.kind not in ("source", "loop"):
            out: list[list[Any]] = [[] for _ in node.outputs]
            runner.finish(out)
            self._emit(nid, out)
        runner.close()
        for port in range(len(node.outputs)):
            self._close_port(nid, port)

    def _close_port(self, nid: int, port: int) -> None:
        if self.port_closed[nid][port]:
            return
        self.port_closed[nid][port] = True
        for ch in self.plan.nodes[nid].outputs[port]:
            self.live[ch] -= 1
            if self.live[ch] == 0:
                for cid, cport in self.plan.channels[ch].consumers:
                    if cid != DRIVER:
                        self.work.append((cid, cport, _EOS))

    def _stop(self, nid: int) -> None:
        """End a stage before the end of its input (term flag or Sentinel)."""
        self.stopped[nid] = True
        self.dropped[nid] += sum(map(len, self.pending[nid]))
        for q in self.pending[nid]:
            q.clear()
        self._end(nid)

    def _zip_exhausted(self, nid: int) -> bool:
        """True when an ended input has no buffered item left: nothing more can pair."""
        return any(not self.pending[nid][p] for p in self.port_ended[nid])

    def _unread(self, nid: int) -> bool:
        """True when every consumer of every output of ``nid`` has ended."""
        chans = [ch for port in self.plan.nodes[nid].outputs for ch in port]
        return bool(chans) and all(
            cid != DRIVER and self.ended[cid]
            for ch in chans for cid, _ in self.plan.channels[ch].consumers)

    def _flagged(self, nid: int) -> bool:
        flag = self.plan.nodes[nid].stage.term_flag
        return flag is not None and flag.is_set()

    def stats(self) -> dict[str, StageStats]:
        stages = {}
        for node, r in zip(self.plan.nodes, self.runners, strict=True):
            if not node.hidden:
                stages[node.name] = StageStats(node.name, node.kind, node.workers)
                stages[node.name].add(r.items_in, r.items_out, r.errors, self.busy[node.id])
        return stages

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise FlowTimeout(f"the flow did not finish within {self.timeout} s")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        first: BaseException | None = None
        for r in self.runners:  # local_term runs on success, error and cancel alike
            try:
                r.close()
            except Exception as exc:
                first = first or exc
        self.report.stages = self.stats()
        self._finish_report()
        if first is not None and sys.exc_info()[1] is None:
            raise first


def _warn_leftovers(name: str, count: int) -> None:
    log.warning("zip into %r ended with %d item(s) left over in its other inputs",
                name, count, extra={"stage": name, "worker": 0})
