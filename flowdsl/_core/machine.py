"""Stage machines: one worker of one stage, as events in and items out.

A machine is fed events (a batch of items on input ``port``, the end of input
``port``, stop) and leaves what they make in :attr:`Machine.out`, one list of
items per output port.  It has no I/O, no process and no clock: an executor
reads its inputs, feeds the machine, and moves what is in ``out``.  Every rule of
the flow that concerns one worker is decided here, once, for every executor:

- **end of stream**: a stage ends when its input ends (a zip: when an ended input
  has nothing left to pair), and then its output ports end (:meth:`take_closed`);
- **stops**: a term flag, a returned :class:`~flowdsl.Sentinel`, ``StopFlow``
  (:attr:`stop_flow` asks the executor to stop the sources) or nobody reading
  (:meth:`stop`) end a stage early; what still arrives is dropped and counted;
- **zip pairing**, with the items left over counted exactly;
- **loops**: the change a batch makes to the items in flight inside each loop
  the stage is in, and a gate's decision to end its body's input (:meth:`idle`).

The in-flight rule.  A copy of an item put into a channel inside a loop counts
one; an item taken out of such a channel, once it is processed or dropped,
counts minus one.  A machine adds both up per loop as it goes; the executor
takes the sum (:meth:`take_delta`) and applies it to the loop's count *before*
any of those outputs can leave the worker.  The count is therefore never lower
than what is really in flight, and it is zero only when the loop is empty: then,
once its upstream has ended, the gate ends the body's input and the ordinary end
of stream takes over.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Any

from .._plan import DRIVER, NodeSpec, Plan
from ..errors import ItemKilledWorker, StopFlow
from .runner import Runner, StageDone

__all__ = ["Machine", "Status", "loop_weights"]

log = logging.getLogger("flowdsl")
ZIP_WARN = 100_000  # items one zip input may run ahead before a warning


class Status(enum.Enum):
    """Where a machine stands."""

    RUNNING = "running"
    ENDED = "ended"  # its input ended (a zip: an input ran out): its outputs ended
    STOPPED = "stopped"  # ended before its input did: what still arrives is dropped


RUNNING, ENDED, STOPPED = Status.RUNNING, Status.ENDED, Status.STOPPED


Weights = tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...]


class Machine:
    """Worker ``worker`` of the stage of ``node``.

    ``loops`` are the node's :func:`loop_weights` (computed once per plan, by
    the driver).  ``copy_functor`` gives the worker its own copy of a stateful
    stage object (where workers share the driver's memory: the serial executor).
    """

    def __init__(
        self,
        node: NodeSpec,
        worker: int = 0,
        *,
        loops: Weights = (),
        copy_functor: bool = False,
        streaming: bool = False,
        check: Any = None,
    ) -> None:
        self.node = node
        self.worker = worker
        self.runner = Runner(
            node.stage,
            node.name,
            node.arity,
            len(node.outputs),
            worker,
            copy_functor=copy_functor,
            envelope=node.envelope,
            dead_letter=node.dead_letter,
            check=check,
            fused_batch=node.fused_batch,
        )
        # A concurrent stage (concurrency=N, async): calls stay in flight between
        # events where the executor can wait for them (``streaming``: it calls
        # collect() when wakeup is readable); elsewhere each event waits for them.
        self.concurrent = self.runner.concurrent
        self.streaming = streaming and self.concurrent
        self.out: list[list[Any]] = [[] for _ in node.outputs]
        self.status = RUNNING
        self.stop_flow = False  # a stage raised StopFlow: the executor stops the sources
        self.items_out = 0  # items made for the regular outputs (not dead letters)
        self.leftover = 0  # a zip's items that will never be paired
        self.leftover_by_input = [0] * len(node.inputs)
        self.dropped = 0  # items that arrived after a stop
        self.ended_inputs: set[int] = set()
        self.gate = node.loop is not None
        self.zip = len(node.inputs) > 1 and not self.gate
        self.pending: list[deque[Any]] = [deque() for _ in node.inputs] if self.zip else []
        self.upstream_done = self.gate and node.loop.upstream is None  # type: ignore[union-attr]
        self.loops = loops
        self._warned = False  # zip inputs far apart
        self._delta = [0] * len(self.loops)
        self._closed: list[int] = []  # output ports ended, not yet taken
        self._ended_ports = [False] * len(node.outputs)
        self._flag = node.stage.term_flag
        self._items: Any = None  # a source's iterator (split among ports where it has several)
        self._source: Any = None  # the iterator of its items, closed at the end
        # one input, one output port, no flag, no loop, no dead letters: feed()
        # takes a short way (the same rules, less to look at)
        self._plain = (
            len(node.inputs) == 1
            and len(node.outputs) == 1
            and not self.gate
            and self._flag is None
            and not loops
            and node.dead_letter is None
            and not self.concurrent
        )
        self._call_ports = tuple(range(len(node.inputs)))  # what a finished call consumed

    # -- events ----------------------------------------------------------------------
    def open(self) -> None:
        """Run ``local_init``; a gate lets its seed in."""
        try:
            self.runner.open()  # a Regulator's coroutine starts here: it may stop
        except (StageDone, StopFlow) as exc:
            self._stopped_by(exc)
            return
        if self.node.kind == "source":
            items = self._source = self.runner.iterate()
            self._items = self.runner.split(items, self.out) if self.runner.n_outputs > 1 else items
        elif self.gate:
            self._enter(self.node.gate.seed)

    def pull(self, n: int) -> int:
        """A source puts up to ``n`` more items in ``out``; returns how many it took
        from its iterable (fewer than ``n``: it has ended or stopped)."""
        if self.status is not RUNNING:
            return 0
        if self._flagged():
            self._stop()
            return 0
        before = self._lengths()
        # one C loop takes the items (what came before an error stays); a split
        # routes them to the ports itself, and a source without outputs drops them
        into = self.out[0] if self.out and self.runner.n_outputs == 1 else []
        start = len(into)
        try:
            into.extend(islice(self._items, n))
        except (StageDone, StopFlow) as exc:
            self._stopped_by(exc)
            return len(into) - start
        finally:
            self._made(before)
        taken = len(into) - start
        if taken < n:
            self._end(ENDED)
        return taken

    def feed(self, port: int, items: list[Any]) -> None:
        """Items arrive on input ``port``."""
        if self._plain and self.status is RUNNING:  # the hot path: one in, one out
            out = self.out[0]
            before = len(out)
            try:
                self.runner.process(items, self.out)
            except (StageDone, StopFlow) as exc:
                self._stopped_by(exc)
            finally:
                self.items_out += len(out) - before
            return
        if self.status is not RUNNING:
            self._discard(port, len(items))
            return
        if self._flagged():
            self._stop()
            self._discard(port, len(items))
            return
        if self.gate:
            self._gate(port, items)
            return
        if not self.zip:
            self._process(items, (port,))
            return
        pending = self.pending
        pending[port].extend(items)
        n = min(map(len, pending))
        if not self._warned and len(pending[port]) - n > ZIP_WARN:
            self._warned = True
            log.warning(
                "zip inputs run far apart: %d items wait to be paired",
                len(pending[port]) - n,
                extra={"stage": self.node.name, "worker": self.worker},
            )
        if n:
            self._process(
                [tuple(q.popleft() for q in pending) for _ in range(n)], range(len(pending))
            )
        if self.status is RUNNING and any(not pending[p] for p in self.ended_inputs):
            self._run_out()

    def end(self, port: int) -> None:
        """Input ``port`` has ended: no more items will arrive on it."""
        if port in self.ended_inputs:
            return
        self.ended_inputs.add(port)
        if self.gate:
            if self._feedback(port):
                self._end(ENDED)  # the body has ended: so does the loop
            else:
                self.upstream_done = True
        elif self.status is RUNNING and (not self.zip or not self.pending[port]):
            self._run_out()
        if len(self.ended_inputs) == len(self.node.inputs):
            self._log_losses()

    def end_all(self) -> None:
        """End every input (a cycle of explicit streams, which no end of stream
        can leave, once nothing else is left to run)."""
        for port in range(len(self.node.inputs)):
            self.end(port)
        if self.status is RUNNING:
            self._end(ENDED)

    def stop(self) -> None:
        """End before the end of input: nobody reads the outputs any more, or the
        flow is stopping (``StopFlow``)."""
        self._stop()

    def idle(self, count: int) -> None:
        """A gate is told the number of items in flight in its loop: when its
        upstream has ended and none is left, the body's input ends."""
        if self.upstream_done and count == 0 and not self._ended_ports[0]:
            self._end_port(0)

    @property
    def holding(self) -> int:
        """Items a batch stage holds for its next list: the executor times the
        first of them, and calls :meth:`flush` after the batch's ``wait``."""
        return self.runner.holding

    def flush(self) -> None:
        """A batch stage sends its partial list."""
        if self.status is not RUNNING:
            return
        before = self._lengths()
        try:
            self.runner.flush(self.out)
        except (StageDone, StopFlow) as exc:
            self._stopped_by(exc)
        finally:
            self._made(before)

    def collect(self) -> None:
        """A concurrent stage: deal with the calls that have finished (their
        results go to ``out``), without waiting for the others."""
        if self.status is not RUNNING or not self.runner.calls:
            return
        self._calls_event(self.runner.settle)

    @property
    def in_flight(self) -> int:
        """Calls in flight (a concurrent stage's)."""
        calls = self.runner.calls
        return len(calls) if calls is not None else 0

    @property
    def wakeup(self) -> Any:
        """Readable when a call has finished (a concurrent stage's), else None."""
        return self.runner.calls

    def close(self) -> None:
        """Close a source's iterator (its ``finally`` blocks run, also after an
        early stop), then run ``local_term`` (once, if ``local_init`` ran)."""
        source, self._source = self._source, None
        try:
            if source is not None:
                source.close()
        finally:
            self.runner.close()

    # -- what the executor takes -----------------------------------------------------
    def take_delta(self) -> list[tuple[int, int]]:
        """``(gate, change)`` of the in-flight count of every loop this stage is in,
        since the last call: apply it before sending what ``out`` holds."""
        delta = self._delta
        if not any(delta):
            return []
        self._delta = [0] * len(delta)
        return [(gate, d) for (gate, _, _), d in zip(self.loops, delta, strict=True) if d]

    def take_closed(self) -> list[int]:
        """The output ports that have ended since the last call (each once)."""
        closed, self._closed = self._closed, []
        return closed

    @property
    def figures(self) -> tuple[int, int, int]:
        """Items in, items out, errors."""
        r = self.runner
        return r.items_in, self.items_out, r.errors

    @property
    def losses(self) -> tuple[int, int]:
        """Items left over (a zip's, never paired) and dropped (after a stop)."""
        return self.leftover, self.dropped

    def fail(self, port: int, item: Any, exc: BaseException) -> None:
        """``item`` of input ``port`` failed outside a call: its worker died while
        running it, or ran past the stage's timeout (a replacement worker is told)."""
        if self.status is not RUNNING:
            self._discard(port, 1)
            return
        before = self._lengths()
        try:
            self.runner.fail(item, exc, self.out)
        except (StageDone, StopFlow) as exc2:
            self._stopped_by(exc2)
        finally:
            self._made(before, (port,), 1)

    def recover(self, port: int, item: Any, attempts: int, reason: str) -> bool:
        """The item a replaced worker had in hand (``attempts`` made of it) when
        it died or ran past the stage's timeout (``reason`` "timeout"): True when
        retries are left, and the executor runs it again in the new worker;
        otherwise it fails here, through the error policy."""
        exc: BaseException = (
            self.runner.timed_out()
            if reason == "timeout"
            else ItemKilledWorker(f"its worker died while running it ({reason})")
        )
        if attempts < self.node.stage.retries:
            return True
        self.fail(port, item, exc)
        return False

    @property
    def spent(self) -> bool:
        """True when a stage with ``max_items_per_worker`` has taken that many
        items in this worker, which is then replaced (``local_term``, and a fresh
        worker's ``local_init``)."""
        limit = self.node.stage.max_items_per_worker
        return limit is not None and self.status is RUNNING and self.runner.items_in >= limit

    @property
    def tail(self) -> tuple[int, int, int, int, int]:
        """The figures after the executor's timings, in FIGURES order: left over,
        dropped, calls in flight, most calls in flight, timeouts."""
        return (*self.losses, *self.call_figures, self.runner.timeouts)

    @property
    def call_figures(self) -> tuple[int, int]:
        """Calls running now, and at most (a concurrent stage's)."""
        calls = self.runner.calls
        return (calls.running, calls.max_in_flight) if calls is not None else (0, 0)

    def busy(self, own: float) -> float:
        """Busy seconds: ``own`` (the executor's measure of time in events), or
        for a concurrent stage its calls' seconds over its concurrency, if
        longer."""
        calls = self.runner.calls
        return max(own, calls.busy()) if calls is not None else own

    # -- inside ------------------------------------------------------------------------
    def _process(self, items: list[Any], ports: Iterable[int]) -> None:
        if self.concurrent:
            self._calls_event(self.runner.process, items)
            return
        before = self._lengths()
        try:
            self.runner.process(items, self.out)
        except (StageDone, StopFlow) as exc:
            self._stopped_by(exc)
        finally:
            self._made(before, ports, len(items))

    def _calls_event(self, method: Any, *items: Any) -> None:
        """Start calls or deal with finished ones; an item counts as consumed
        once its call has finished (the loop rule: it is in flight until then)."""
        before = self._lengths()
        runner = self.runner
        try:
            method(*items, self.out)
            if not self.streaming:
                runner.settle_all(self.out)
        except (StageDone, StopFlow) as exc:
            self._stopped_by(exc)
        finally:
            self._made(before, self._call_ports, runner.take_settled())

    def _gate(self, port: int, items: list[Any]) -> None:
        before = self._lengths()
        try:
            if self._feedback(port):
                self.runner.items_in += len(items)
                back, leaving = self.runner.route(items)
                self.out[0].extend(back)
                self.out[1].extend(leaving)
            else:
                self.out[0].extend(self.node.gate.enter(list(items)))
        except StopFlow as exc:
            self._stopped_by(exc)
        finally:
            self._made(before, (port,), len(items))

    def _enter(self, items: Iterable[Any]) -> None:
        before = self._lengths()
        self.out[0].extend(self.node.gate.enter(list(items)))
        self._made(before)

    def _feedback(self, port: int) -> bool:
        return self.node.inputs[port] == self.node.loop.feedback  # type: ignore[union-attr]

    def _run_out(self) -> None:
        """The input has ended (a zip: an ended input has nothing left to pair):
        what waits unpaired is left over, a Regulator flushes, the outputs end."""
        self._drop_pending("leftover")
        if self.runner.calls:  # the calls still in flight finish first
            self._calls_event(self.runner.settle_all)
            if self.status is not RUNNING:
                return
        before = self._lengths()
        try:
            self.runner.finish(self.out)
        finally:
            self._made(before)
        self._end(ENDED)

    def _stop(self) -> None:
        if self.status is RUNNING:
            self._drop_pending("dropped")
            if self.concurrent:  # cancel and await the calls in flight
                n = self.runner.cancel_calls()
                for port in self._call_ports:
                    self._count_lost("dropped", port, n)
            self._end(STOPPED)

    def _stopped_by(self, exc: BaseException) -> None:
        if isinstance(exc, StopFlow):
            self.stop_flow = True
        self._stop()

    def _drop_pending(self, kind: str) -> None:
        for port, q in enumerate(self.pending):
            if q:
                n = len(q)
                q.clear()
                self._count_lost(kind, port, n)

    def _discard(self, port: int, n: int) -> None:
        self._count_lost("leftover" if self.status is ENDED else "dropped", port, n)

    def _count_lost(self, kind: str, port: int, n: int) -> None:
        setattr(self, kind, getattr(self, kind) + n)
        if kind == "leftover":
            self.leftover_by_input[port] += n
        for i, (_, weights, _) in enumerate(self.loops):
            self._delta[i] -= n * weights[port]

    def _end(self, status: Status) -> None:
        if self.status is RUNNING:
            self.status = status
        for port in range(len(self.out)):
            self._end_port(port)

    def _end_port(self, port: int) -> None:
        if not self._ended_ports[port]:
            self._ended_ports[port] = True
            self._closed.append(port)

    def _lengths(self) -> list[int]:
        return [len(o) for o in self.out]

    def _made(self, before: list[int], ports: Iterable[int] = (), consumed: int = 0) -> None:
        """Count what was added to ``out`` since ``before``, and ``consumed`` items
        taken from each of ``ports``."""
        made = [len(o) - b for o, b in zip(self.out, before, strict=True)]
        dead = self.node.dead_letter
        self.items_out += sum(made) - (made[dead] if dead is not None else 0)
        if self.loops:
            ports = tuple(ports)
            for i, (_, weights, copies) in enumerate(self.loops):
                self._delta[i] += sum(
                    m * c for m, c in zip(made, copies, strict=True)
                ) - consumed * sum(weights[p] for p in ports)

    def _flagged(self) -> bool:
        flag = self._flag
        return flag is not None and flag.is_set()

    def _log_losses(self) -> None:
        extra = {"stage": self.node.name, "worker": self.worker}
        if self.leftover:
            log.warning(
                "zip into %r ended with %d item(s) left over in its other inputs "
                "(per input, in list order: %s)",
                self.node.name,
                self.leftover,
                self.leftover_by_input,
                extra=extra,
            )
        if self.status is STOPPED:
            log.info("stopped early; %d item(s) were dropped", self.dropped, extra=extra)


def loop_weights(plan: Plan, node: NodeSpec) -> Weights:
    """For each loop ``node`` counts in (the loops it is inside, and a gate's own):
    ``(gate, inside per input port, channels inside per output port)``.  A channel
    is inside a loop when it feeds a stage of the loop's body or its gate's
    feedback input."""
    gates = node.regions + ((node.id,) if node.loop is not None else ())
    weights = []
    for g in gates:
        feedback = plan.nodes[g].loop.feedback  # type: ignore[union-attr]

        def inside(ch: int, g: int = g, feedback: int = feedback) -> int:
            return int(
                ch == feedback
                or any(
                    c != DRIVER and g in plan.nodes[c].regions
                    for c, _ in plan.channels[ch].consumers
                )
            )

        weights.append(
            (
                g,
                tuple(inside(c) for c in node.inputs),
                tuple(sum(inside(c) for c in port) for port in node.outputs),
            )
        )
    return tuple(weights)
