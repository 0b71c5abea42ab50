"""The ray executor: every stage worker is a Ray actor.

The driver schedules everything.  It pulls batches from the source actors and
hands each batch to an actor of the next stage as an object reference, so items
move from actor to actor through Ray's object store; the driver reads only each
call's small meta reply (status, figures, log records).  Calls into one actor run
in the order they were made, which keeps a stage with one worker in order; for
several workers the driver releases outputs in the order the inputs went in.

Backpressure is the driver's too: an actor has at most :data:`IN_FLIGHT` calls
outstanding, and a stage gets no new input while one of its output channels holds
``buffer`` items waiting for their consumers.  Batches are sized by each stage's
measured per-item cost, like the process executor's.

Loops follow the in-flight protocol of :mod:`flowdsl._loop`: the gate is an
actor like any stage (its ``enter``/``route`` are the other executors'), and since
every call goes through the driver, the driver does the counting: when a call of
a stage inside a loop is released, the loop's count grows by what the call
produced and shrinks by what it was given.  Once the loop's upstream has ended,
no item is entering and the count is zero, the body's input ends.  The gate's
feedback input is never held back, so a loop cannot block itself.

Ray is an optional dependency (``pip install flowdsl[ray]``), imported only when a
run starts.  Cycles made with explicit streams are not supported and are rejected
before anything starts.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import dill

from .._core.codec import decode, encode
from .._plan import DEFAULT_BUFFER, DRIVER, Plan
from .._report import StageStats
from ..errors import FlowTimeout, GraphError, StageError, WorkerDied
from ._base import Execution, Executor

__all__ = ["RayExecutor"]

log = logging.getLogger("flowdsl")

IN_FLIGHT = 2  # calls outstanding per actor: one running, one queued behind it
MAX_BATCH = 8192  # items per call, at most: a call costs about a millisecond
MESSAGE_BYTES = 1 << 20  # batches aim below this size
FIRST_BATCH = 16  # items per call until a stage's cost is measured
BATCH_WORK = 0.02  # seconds of a stage's work one call should hold: ~20x a call's cost
_POLL = 0.05  # seconds between looks at term flags, when a stage has one


class RayExecutor(Executor):
    """Run each stage in ``workers`` Ray actors.

    ``address`` is passed to ``ray.init`` when Ray is not initialised yet: ``None``
    starts a local Ray instance (kept for the rest of the process, as starting one
    takes seconds), ``"auto"`` or ``"ray://host:port"`` joins a cluster.
    ``init_options`` are further ``ray.init`` keyword arguments and
    ``actor_options`` are given to every actor (``num_cpus``, ``resources``, ...);
    ``stage_options`` maps a stage's name to options for its actors only, over
    ``actor_options`` (a GPU for one stage, a custom resource to pin a stage to
    some nodes).  ``grace`` is how long a cancelled actor may spend in
    ``local_term`` before it is killed.

    ``restarts`` maps a stage's name to how many times each of its actors may be
    restarted after it dies (its node lost, out of memory); the batches it was
    working on are given again to the new actor.  Only stateless stages qualify:
    transforms and sinks made from plain functions, which a fresh copy runs the
    same way (a class keeps state and a source's position would be lost).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, grace: float = 1.0,
                 init_options: dict[str, Any] | None = None,
                 actor_options: dict[str, Any] | None = None,
                 stage_options: dict[str, dict[str, Any]] | None = None,
                 restarts: dict[str, int] | None = None) -> None:
        self.address = address
        self.restarts = dict(restarts or {})
        for stage, n in self.restarts.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError(f"RayExecutor(restarts=...): the restarts of {stage!r} "
                                 f"must be an integer >= 0, got {n!r}")
        self.grace = grace
        self.init_options = dict(init_options or {})
        self.actor_options = dict(actor_options or {})
        self.stage_options = {k: dict(v) for k, v in (stage_options or {}).items()}

    def options_for(self, stage: str) -> dict[str, Any]:
        """The Ray actor options of the actors of ``stage``."""
        return {**self.actor_options, **self.stage_options.get(stage, {}),
                "max_restarts": self.restarts.get(stage, 0), "max_task_retries": 0}

    def start(self, plan: Plan, *, timeout: float | None = None) -> Execution:
        check_supported(plan)
        for option, names in (("stage_options", self.stage_options),
                              ("restarts", self.restarts)):
            unknown = set(names) - {n.name for n in plan.nodes}
            if unknown:
                raise ValueError(f"RayExecutor({option}=...): no stage named "
                                 f"{sorted(unknown)[0]!r} in this flow; its stages are "
                                 f"{[n.name for n in plan.nodes if not n.hidden]}")
        for node in plan.nodes:
            if self.restarts.get(node.name):
                _check_restartable(node)
        code = _ship(plan)  # before Ray starts: an unpicklable stage fails at once
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_options)
        return _RayExecution(plan, self, timeout, code)

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r})"


def _check_restartable(node: Any) -> None:
    """Restarts are for stages a fresh actor runs the same way: plain functions."""
    import inspect

    stage = node.stage
    if stage.kind not in ("transform", "sink") or not inspect.isfunction(stage.callable):
        what = {"source": "a source (a restarted one would start its stream again)",
                "loop": "a loop gate"}.get(stage.kind, "an object, whose state a restart "
                                                        "would lose")
        raise GraphError(f"RayExecutor(restarts=...): stage {node.name!r} is {what}; "
                         f"restarts are for stateless stages, transforms and sinks made "
                         f"from plain functions")


def check_supported(plan: Plan) -> None:
    """Raise ``NotImplementedError`` for a cycle not made with ``loop()`` (a loop's
    feedback into its gate is the one back edge the driver knows how to end)."""
    succ = {n.id: {c for port in n.outputs for ch in port
                   for c, p in plan.channels[ch].consumers
                   if c != DRIVER and not _feedback(plan, c, p)} for n in plan.nodes}
    state: dict[int, int] = {}

    def visit(n: int) -> None:
        state[n] = 1
        for m in succ[n]:
            if state.get(m) == 1:
                raise NotImplementedError(
                    f"the ray executor does not support cycles made with streams yet "
                    f"(stage {plan.nodes[m].name!r} feeds itself); use the 'process' "
                    f"or 'serial' executor for this flow")
            if m not in state:
                visit(m)
        state[n] = 2

    for node in plan.nodes:
        if node.id not in state:
            visit(node.id)


def _feedback(plan: Plan, nid: int, port: int) -> bool:
    """True for the input of a loop gate that its body feeds back into."""
    return nid != DRIVER and plan.nodes[nid].loop is not None and port == 1


_remote: Any = None


def _actor_class(ray: Any) -> Any:
    """The actor class, made once per process."""
    global _remote
    if _remote is None:
        from ._actor import StageActor

        _remote = ray.remote(StageActor)
    return _remote


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the ray executor needs Ray: pip install 'flowdsl[ray]'") from exc
    return ray


def _ship(plan: Plan) -> dict[int, bytes]:
    """Each node as dill bytes, stage code included (``recurse`` takes along the
    globals a function uses, so notebook and script functions work)."""
    code = {}
    for node in plan.nodes:
        stage = copy.copy(node.stage)
        stage.upstreams, stage.downstreams = [], []  # the graph stays in the driver
        stage.term_flag = None  # the driver watches the flag
        try:
            code[node.id] = dill.dumps(replace(node, stage=stage), recurse=True)
        except Exception as exc:
            raise GraphError(
                f"stage {node.name!r} cannot be sent to a Ray actor: "
                f"{type(exc).__name__}: {exc}. Make the stage's function and arguments "
                f"picklable") from exc
    return code


@dataclass
class _Call:
    """One outstanding actor call."""

    node: int
    worker: int
    kind: str  # "open", "pull", "process", "finish" or "terminate"
    meta: Any  # the reference of the meta reply
    ports: list[Any] = field(default_factory=list)  # references of the output lists
    reply: dict[str, Any] | None = None  # the meta, once it came back
    port: int = 0  # the input port of a "process" call
    items: int = 0  # how many items it was given
    args: tuple[Any, ...] = ()  # what it was called with, to call again after a restart


class _RayExecution(Execution):
    def __init__(self, plan: Plan, executor: RayExecutor, timeout: float | None,
                 code: dict[int, bytes]) -> None:
        super().__init__(plan, "ray")
        import ray

        self.ray = ray
        self.grace = executor.grace
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.closed = False
        nodes, channels = plan.nodes, plan.channels
        self.calls: dict[Any, _Call] = {}  # meta reference -> call
        self.busy_calls = [[0] * n.workers for n in nodes]  # outstanding, per actor
        self.turn = [0] * len(nodes)  # round robin over a stage's actors
        # a stage's finished calls wait here to release their outputs in order: in
        # call order over the whole stage when it keeps order, per actor otherwise
        self.order: dict[tuple[int, int], deque[_Call]] = {}
        self.ended = [False] * len(nodes)  # no more input: finish was sent
        self.finishing = [set(range(n.workers)) for n in nodes]
        self.done = [False] * len(nodes)  # every actor finished: outputs closed
        self.figures: dict[tuple[int, int], tuple[float, ...]] = {}
        # restarts: how many calls may still be given again, per actor, and the
        # figures of the actors' earlier lives
        self.retries = {(n.id, w): executor.restarts.get(n.name, 0) * IN_FLIGHT
                        for n in nodes for w in range(n.workers)}
        self.past: dict[tuple[int, int], tuple[float, ...]] = {}
        self.cost = [0.0] * len(nodes)
        self.item_bytes = [0.0] * len(nodes)  # serialised size of an output item
        self.leftover = [0] * len(nodes)  # zip items never paired, dropped inputs
        self.stopped = [False] * len(nodes)
        self.pids: dict[tuple[int, int], tuple[str, int]] = {}  # (host, pid) per actor
        self.backlog: list[deque[tuple[Any, int]]] = [deque() for _ in channels]
        self.waiting = [0] * len(channels)  # items in the backlog
        self.live = [len(c.producers) for c in channels]  # producer ports not done
        self.ended_ports: set[tuple[int, int]] = set()  # zip inputs told of their end
        self.results: deque[tuple[Any, int]] = deque()
        self.port_closed: set[tuple[int, int]] = set()  # (node, output port) ended
        # loops, per gate: items inside the loop, calls entering items into it
        # (the seed, upstream batches), and whether its upstream has ended
        self.in_flight = [0] * len(nodes)
        self.entering = [0] * len(nodes)
        self.upstream_done = [n.loop is not None and n.loop.upstream is None for n in nodes]
        self.flagged = any(n.stage.term_flag is not None for n in nodes)
        levels = {"": logging.getLogger().getEffectiveLevel(),
                  "flowdsl": log.getEffectiveLevel()}
        paths = [p for p in sys.path if p]
        remote = _actor_class(ray)
        self.actors: list[list[Any]] = []
        try:
            for node in nodes:
                # a zip's hidden pairing stage goes with the stage it pairs for
                options = executor.options_for(node.name.removesuffix(":zip"))
                handles = [remote.options(**options).remote(code[node.id], w, paths, levels)
                           for w in range(node.workers)]
                self.actors.append(handles)
                for w, actor in enumerate(handles):
                    self._submit(node.id, w, "open", actor.open, ())
            for c in channels:
                if c.seeds:
                    self._put(c.id, ray.put(encode(list(c.seeds))), len(c.seeds))
            for node in nodes:
                if node.loop is not None and node.gate.seed:  # enters like upstream items
                    seed = list(node.gate.seed)
                    self._submit(node.id, 0, "process", self.actors[node.id][0].process,
                                 (0, False, encode(seed)), len(node.outputs), 0, len(seed))
        except BaseException:
            self.close()  # the actors made so far go too
            raise

    # -- the run ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        ray = self.ray
        while True:
            self._check_deadline()
            self._pump()
            if self.results:
                refs = [ref for ref, _ in self.results]
                self.results.clear()
                for data in ray.get(refs):
                    yield from decode(data)
                continue
            if not self.calls:
                if all(self.done):
                    return
                raise RuntimeError("the ray executor stalled: no call outstanding "
                                   "but stages not done")  # a bug of ours
            ready, _ = ray.wait(list(self.calls), num_returns=1, timeout=self._wait())
            if not ready:
                continue
            ready, _ = ray.wait(list(self.calls), num_returns=len(self.calls), timeout=0)
            for ref in ready:
                self._complete(self.calls.pop(ref))

    def _wait(self) -> float | None:
        wait = _POLL if self.flagged else None
        if self.deadline is not None:
            left = max(0.0, self.deadline - time.monotonic())
            wait = left if wait is None else min(wait, left)
        return wait

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise FlowTimeout(f"the flow did not finish within {self.timeout} s")

    def _pump(self) -> None:
        """Start every call that can start now."""
        plan = self.plan
        for node in plan.nodes:
            if self.ended[node.id]:
                continue
            flag = node.stage.term_flag
            if (flag is not None and flag.is_set()) or self._unread(node.id):
                self._end(node.id, stopped=True)
        for node in plan.nodes:
            if node.kind == "source" and not self.ended[node.id] and not self._full(node.id):
                while self.busy_calls[node.id][0] < IN_FLIGHT:
                    n = self._batch(node.id)
                    self._submit(node.id, 0, "pull", self.actors[node.id][0].pull, (n,),
                                 len(node.outputs))
        for ch in plan.channels:
            self._dispatch(ch.id)

    def _dispatch(self, cid: int) -> None:
        """Hand what waits in channel ``cid`` to its consumers."""
        channel, backlog = self.plan.channels[cid], self.backlog[cid]
        consumers = [(n, p) for n, p in channel.consumers if n == DRIVER or not self.ended[n]]
        if not consumers:
            backlog.clear()
            n, p = channel.consumers[0]
            if n != DRIVER:  # dropped items are no longer inside any loop
                self._count(self._loops_of(n, p), 0, self.waiting[cid])
            for n, _ in channel.consumers:
                if n != DRIVER:
                    self.leftover[n] += self.waiting[cid]
                    self._report_leftovers(n)
            self.waiting[cid] = 0
        elif consumers[0][0] == DRIVER:
            self.results.extend(backlog)
            backlog.clear()
            self.waiting[cid] = 0
        while backlog:
            target = self._choose(consumers)
            if target is None:
                break
            (nid, port), w = target
            refs: list[Any] = []
            count = 0
            limit = self._batch(nid)
            while backlog and (not refs or count + backlog[0][1] <= limit):
                ref, k = backlog.popleft()
                refs.append(ref)
                count += k
            self.waiting[cid] -= count
            last = not backlog and self.live[cid] == 0
            if last and len(self.plan.nodes[nid].inputs) > 1:
                self.ended_ports.add((nid, port))
            self._submit(nid, w, "process", self.actors[nid][w].process,
                         (port, last, *refs), len(self.plan.nodes[nid].outputs), port, count)
        if self.live[cid] == 0 and not backlog:
            for nid, port in channel.consumers:
                if nid != DRIVER and not self.ended[nid]:
                    self._input_ended(nid, port)

    def _choose(self, consumers: list[tuple[int, int]]) -> Any:
        """A consumer actor with room for a call, round robin; None if none has."""
        for nid, port in consumers:
            if self._full(nid) and not _feedback(self.plan, nid, port):
                continue  # (what comes back into a loop is always taken)
            k = self.plan.nodes[nid].workers
            for i in range(k):
                w = (self.turn[nid] + i) % k
                if self.busy_calls[nid][w] < IN_FLIGHT:
                    self.turn[nid] = w + 1
                    return (nid, port), w
        return None

    def _input_ended(self, nid: int, port: int) -> None:
        node = self.plan.nodes[nid]
        if node.loop is not None and port == 0:  # a loop's upstream: it may end now
            if not self.upstream_done[nid]:
                self.upstream_done[nid] = True
                self._maybe_close_loop(nid)
        elif len(node.inputs) == 1 or node.loop is not None:
            self._end(nid)
        elif (nid, port) not in self.ended_ports:  # a zip: the actor decides
            self.ended_ports.add((nid, port))
            self._submit(nid, 0, "process", self.actors[nid][0].process, (port, True),
                         len(self.plan.nodes[nid].outputs))

    def _batch(self, nid: int) -> int:
        """How many items a call to ``nid`` should get: about BATCH_WORK seconds of
        its work and of its consumers' (a cheap stage feeding a slow one gets small
        batches, so the slow one's workers share the work), at most MESSAGE_BYTES of
        output, and no more than a ``buffer`` the user chose."""
        costs = [self.cost[nid]]
        limit = max(1, min(MAX_BATCH, int(MESSAGE_BYTES / max(1.0, self.item_bytes[nid]))))
        for port in self.plan.nodes[nid].outputs:
            for ch in port:
                buffer = self.plan.channels[ch].buffer
                if buffer != DEFAULT_BUFFER:  # a buffer chosen by the user bounds batches too
                    limit = min(limit, buffer)
                costs += [self.cost[c] for c, _ in self.plan.channels[ch].consumers
                          if c != DRIVER]
        if not all(costs[1:]) or (not costs[0] and self.plan.nodes[nid].kind != "source"):
            return min(limit, FIRST_BATCH)
        return max(1, min(limit, int(BATCH_WORK / max(costs))))

    def _full(self, nid: int) -> bool:
        """True when an output channel of ``nid`` holds its ``buffer`` of items."""
        return any(self.waiting[ch] >= self.plan.channels[ch].buffer
                   for port in self.plan.nodes[nid].outputs for ch in port)

    def _unread(self, nid: int) -> bool:
        """True when every consumer of every output of ``nid`` has ended."""
        chans = [ch for port in self.plan.nodes[nid].outputs for ch in port]
        return bool(chans) and all(c != DRIVER and self.ended[c] for ch in chans
                                   for c, _ in self.plan.channels[ch].consumers)

    # -- calls -------------------------------------------------------------------------
    def _submit(self, nid: int, w: int, kind: str, method: Any, args: tuple[Any, ...],
                ports: int = -1, port: int = 0, items: int = 0) -> None:
        if ports >= 0:  # the meta, then one list per output port
            refs = method.options(num_returns=1 + ports).remote(*args)
            refs = refs if isinstance(refs, list) else [refs]
            call = _Call(nid, w, kind, refs[0], refs[1:], port=port, items=items, args=args)
        else:
            call = _Call(nid, w, kind, method.remote(*args))
        node = self.plan.nodes[nid]
        if node.loop is not None and kind == "process" and port == 0:
            self.entering[nid] += 1
        self.calls[call.meta] = call
        self.busy_calls[nid][w] += 1
        key = (nid, -1) if node.workers > 1 and node.stage.ordered else (nid, w)
        self.order.setdefault(key, deque()).append(call)

    def _complete(self, call: _Call) -> None:
        node = self.plan.nodes[call.node]
        try:
            reply = self.ray.get(call.meta)
        except self.ray.exceptions.RayActorError as exc:
            if call.kind == "process" and self.retries[call.node, call.worker] > 0:
                self._call_again(call)
                return
            raise WorkerDied(node.name, call.worker, None) from exc
        except self.ray.exceptions.RayError as exc:
            raise StageError(node.name, None, call.worker, str(exc),
                             f"internal error: {type(exc).__name__}") from exc
        self.busy_calls[call.node][call.worker] -= 1
        for record in reply["logs"]:
            logging.getLogger(record.name).handle(record)
        if reply["restarted"] and (call.node, call.worker) in self.figures:
            # a new life: keep what the dead actor had counted
            self.past[call.node, call.worker] = tuple(
                a + b for a, b in zip(self.past.get((call.node, call.worker), ()) or
                                      (0.0,) * len(reply["figures"]),
                                      self.figures[call.node, call.worker], strict=True))
        self.figures[call.node, call.worker] = reply["figures"]
        self.leftover[call.node] += reply["leftover"]
        if reply.get("pid"):
            self.pids[call.node, call.worker] = reply["pid"]
        if reply["cost"]:
            self.cost[call.node] = reply["cost"]
        if reply["item_bytes"]:
            self.item_bytes[call.node] = reply["item_bytes"]
        if reply["status"] == "error":
            error, cause = reply["error"]
            error.__cause__ = cause
            raise error
        call.reply = reply
        key = (call.node, -1) if node.workers > 1 and node.stage.ordered else \
            (call.node, call.worker)
        queue = self.order[key]
        while queue and queue[0].reply is not None:
            self._release(queue.popleft())

    def _call_again(self, call: _Call) -> None:
        """Give a dead actor's call to its restarted self (Ray restarts it)."""
        key = (call.node, call.worker)
        self.retries[key] -= 1
        log.warning("actor %d of stage %r died; calling its restarted actor again",
                    call.worker, self.plan.nodes[call.node].name,
                    extra={"stage": self.plan.nodes[call.node].name, "worker": call.worker})
        method = self.actors[call.node][call.worker].process
        refs = method.options(num_returns=1 + len(call.ports)).remote(*call.args)
        refs = refs if isinstance(refs, list) else [refs]
        call.meta, call.ports = refs[0], refs[1:]
        self.calls[call.meta] = call

    def _release(self, call: _Call) -> None:
        """A call's outputs go downstream, its status takes effect."""
        nid, reply = call.node, call.reply
        assert reply is not None
        node = self.plan.nodes[nid]
        counts = reply.get("counts", ())
        for port, (ref, count) in enumerate(zip(call.ports, counts, strict=True)):
            if count:
                for ch in node.outputs[port]:
                    self._put(ch, ref, count)
        if call.kind == "process":
            self._counted(call, counts)
        status = reply["status"]
        if status == "flowstop":
            self.report.stopped = True
            for source in self.plan.nodes:
                if source.kind == "source":
                    self._end(source.id)
        if status in ("stop", "flowstop"):
            self._end(nid, stopped=True)
        elif status == "ended":
            self._end(nid)
        if call.kind == "finish":
            self.finishing[nid].discard(call.worker)
            if not self.finishing[nid]:
                self._done(nid)

    # -- loops -------------------------------------------------------------------------
    def _counted(self, call: _Call, counts: list[int]) -> None:
        """What a released call changed inside the loops its stage is in.  A copy
        sent to several channels counts once per channel, as in every executor;
        a gate counts for its own loop only: what it takes in from upstream or
        the seed enters, what it sends back stays, what it lets out leaves."""
        node = self.plan.nodes[call.node]
        produced = sum(k * len(chans) for k, chans in zip(counts, node.outputs, strict=True))
        if node.loop is None:
            self._count(node.regions, produced, call.items)
        elif call.port == 0:
            self.entering[node.id] -= 1
            self._count((node.id,), counts[0] * len(node.outputs[0]), 0)
        else:
            self._count((node.id,), counts[0] * len(node.outputs[0]), call.items)

    def _loops_of(self, nid: int, port: int) -> tuple[int, ...]:
        """The loops whose count holds an item waiting for input ``port`` of ``nid``."""
        return (nid,) if _feedback(self.plan, nid, port) else self.plan.nodes[nid].regions

    def _count(self, gates: tuple[int, ...], produced: int, consumed: int) -> None:
        for g in gates:
            self.in_flight[g] += produced - consumed
            self._maybe_close_loop(g)

    def _maybe_close_loop(self, g: int) -> None:
        if self.upstream_done[g] and not self.entering[g] and self.in_flight[g] == 0:
            self._close_port(g, 0)  # nothing left inside: end the body's input

    def _close_port(self, nid: int, port: int) -> None:
        if (nid, port) not in self.port_closed:
            self.port_closed.add((nid, port))
            for ch in self.plan.nodes[nid].outputs[port]:
                self.live[ch] -= 1

    def _put(self, cid: int, ref: Any, count: int) -> None:
        self.backlog[cid].append((ref, count))
        self.waiting[cid] += count

    def _end(self, nid: int, stopped: bool = False) -> None:
        """No more input for ``nid``: each actor flushes and runs ``local_term``."""
        if self.ended[nid]:
            return
        self.ended[nid] = True
        self.stopped[nid] = stopped
        node = self.plan.nodes[nid]
        for w, actor in enumerate(self.actors[nid]):
            self._submit(nid, w, "finish", actor.finish, (), len(node.outputs))

    def _done(self, nid: int) -> None:
        """Every actor of ``nid`` has finished: its outputs end."""
        self.done[nid] = True
        for port in range(len(self.plan.nodes[nid].outputs)):
            self._close_port(nid, port)
        self._report_leftovers(nid)

    def _report_leftovers(self, nid: int) -> None:
        """Once a stage is done and its inputs have ended, say what it dropped."""
        node = self.plan.nodes[nid]
        if not self.done[nid] or any(self.live[c] or self.backlog[c] for c in node.inputs):
            return
        if self.leftover[nid]:
            if len(node.inputs) > 1:
                log.warning("zip into %r ended with %d item(s) left over in its other inputs",
                            node.name, self.leftover[nid], extra={"stage": node.name,
                                                                  "worker": 0})
            elif self.stopped[nid]:
                log.info("stopped early; %d item(s) were dropped", self.leftover[nid],
                         extra={"stage": node.name, "worker": 0})
            self.leftover[nid] = 0

    # -- figures -----------------------------------------------------------------------
    def stats(self) -> dict[str, StageStats]:
        stages = {n.name: StageStats(n.name, n.kind, n.workers)
                  for n in self.plan.nodes if not n.hidden}
        for (nid, w), figures in list(self.figures.items()):
            node = self.plan.nodes[nid]
            if not node.hidden:
                stages[node.name].add(*figures)
                stages[node.name].add(*self.past.get((nid, w), ()))
        return stages

    def queue_fill(self) -> dict[str, float]:
        fill: dict[str, float] = {}
        for node in self.plan.nodes:
            if node.inputs and not node.hidden:
                fill[node.name] = min(1.0, max(self.waiting[c] / self.plan.channels[c].buffer
                                               for c in node.inputs))
        return fill

    # -- teardown ----------------------------------------------------------------------
    def close(self) -> None:
        """Give unfinished actors ``grace`` seconds to run ``local_term``, then kill
        every actor of the run and wait until their processes are gone."""
        if self.closed:
            return
        self.closed = True
        ray = self.ray
        try:
            pending = []
            for nid, handles in enumerate(self.actors):
                for w in sorted(self.finishing[nid]):
                    pending.append(handles[w].terminate.remote())
            opens = [c.meta for c in self.calls.values() if c.kind == "open"]
            if pending or opens:
                ready, _ = ray.wait(pending + opens, num_returns=len(pending) + len(opens),
                                    timeout=self.grace)
                for ref in ready:
                    self._absorb(ref)
        finally:
            for handles in self.actors:
                for actor in handles:
                    ray.kill(actor, no_restart=True)
            self._wait_gone()
            self.report.stages = self.stats()
            self._finish_report()

    def _absorb(self, ref: Any) -> None:
        """Take the logs, figures and pid of a reply that came in during teardown."""
        try:
            reply = self.ray.get(ref)
        except self.ray.exceptions.RayError:
            return
        if isinstance(reply, list):
            reply = reply[0]
        for record in reply.get("logs", ()):
            logging.getLogger(record.name).handle(record)
        call = self.calls.get(ref)
        if call is not None and reply.get("pid"):
            self.pids[call.node, call.worker] = reply["pid"]

    def _wait_gone(self, limit: float = 5.0) -> None:
        """Wait until the actor processes on this machine have exited (ray.kill
        does not wait), so a closed run leaves no process behind."""
        here = socket.gethostname()
        end = time.monotonic() + limit
        for host, pid in self.pids.values():
            while host == here and time.monotonic() < end and _alive(pid):
                time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
