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

Each actor is transport for one stage machine (:mod:`flowdsl._core.machine`),
which decides every rule of the flow; the driver only moves references and
counts.  Loops: every call's reply carries the in-flight change its machine made,
and the driver applies it when the call is released, before its outputs are
handed on.  When a loop's count is zero, its upstream has ended and no call of
the gate's is outstanding, the driver tells the gate, whose machine ends the
body's input.  The gate's feedback input is never held back, so a loop cannot
block itself.

Supervised stages (``timeout``, ``restarts``, ``max_items_per_worker``) take
one item per call, and each of their actors has one call at a time, so the
driver knows which item an actor runs and since when.  Their actors are made
restartable, and Ray restarts one that dies (on another node if its node is
lost); the driver kills one whose call runs past the timeout or that took its
``max_items_per_worker``, for Ray to restart too.  The driver decides whether
a death is within the stage's ``restarts``; once the new life has run
``local_init``, its first call is the item in hand, which the stage's machine
fails through the error policy or runs again, as in a process worker.

Ray is an optional dependency (``pip install flowdsl[ray]``), imported only when a
run starts.  Cycles made with explicit streams are not supported and are rejected
before anything starts.
"""

from __future__ import annotations

import copy
import enum
import logging
import os
import signal
import socket
import sys
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import dill

from .._core.codec import Codec, encode_beside, split
from .._core.machine import loop_weights
from .._core.order import Reorder
from .._core.records import restored_error
from .._plan import DEFAULT_BUFFER, DRIVER, Plan
from .._report import BUSY, FIGURES, StageStats, stage_figures
from .._waits import readable
from ..errors import FlowTimeout, GraphError, StageError, WorkerDied
from ._base import Execution, Executor

__all__ = ["RayExecutor"]

log = logging.getLogger("flowdsl")

IN_FLIGHT = 2  # calls outstanding per actor: one running, one queued behind it
MAX_BATCH = 8192  # items per call, at most: a call costs about a millisecond
MESSAGE_BYTES = 1 << 20  # batches aim below this size
# a channel is full at its ``buffer`` of items or this many bytes waiting (and at
# most a quarter of the smallest object store), so big items (arrays) do not pile
# up in the object stores and spill them to disk
CHANNEL_BYTES = 64 << 20
FIRST_BATCH = 16  # items per call until a stage's cost is measured
BATCH_WORK = 0.02  # seconds of a stage's work one call should hold: ~20x a call's cost
_POLL = 0.05  # seconds between looks at term flags, when a stage has one
UNAVAILABLE_RETRIES = 20  # calls made again to a restartable actor between two lives


class RayExecutor(Executor):
    """Run each stage in ``workers`` Ray actors, on one machine or a cluster.

    Needs ``pip install flowdsl[ray]``. The driver schedules; items travel
    between actors through Ray's object store. A stage's own ``timeout``,
    ``restarts`` and ``max_items_per_worker`` mean what they mean on the process
    executor: the item in hand fails, and Ray restarts the actor (elsewhere when
    its node was lost).

    Args:
        address: Passed to ``ray.init`` when Ray is not initialised yet:
            ``None`` starts a local Ray instance (kept for the rest of the
            process, as starting one takes seconds); ``"auto"`` or
            ``"ray://host:port"`` joins a cluster.
        grace: Seconds a cancelled actor may spend in ``local_term`` before it
            is killed.
        init_options: Further ``ray.init`` keyword arguments.
        actor_options: Options given to every actor (``num_cpus``,
            ``resources``, ...).
        stage_options: A stage's name mapped to options for its actors only,
            over ``actor_options`` (a GPU for one stage, a custom resource to
            pin a stage to some nodes).
        restarts: A stage's name mapped to how many times each of its actors may
            be restarted after it dies (its node lost, out of memory), the
            batches it was working on given again to the new actor. Only
            stateless stages qualify: transforms and sinks made from plain
            functions, which a fresh copy runs the same way.
        autoscaling: The cluster adds nodes on demand, so a stage may ask for
            resources no node has yet. Without it, such a stage is an error
            when the run starts (it would wait for ever).

    Two kinds of restart exist, and a stage takes one or the other: the stage's
    own ``restarts=`` fails the item in hand, while this executor's
    ``restarts`` gives a stateless stage's batches again to the restarted actor.

    Raises:
        ValueError: A ``restarts`` count is not an integer >= 0; when a run
            starts, ``stage_options`` or ``restarts`` names no stage of the flow.
        GraphError: When a run starts: a stage asks for resources no node of
            the cluster has (unless ``autoscaling``); ``restarts`` names a
            source or a class stage, or a stage with its own ``timeout``,
            ``restarts`` or ``max_items_per_worker``.
        ImportError: Ray is not installed.

    Examples:
        >>> from flowdsl import RayExecutor, source, transform
        >>> @source
        ... def numbers(n):
        ...     yield from range(n)
        >>> ray_executor = RayExecutor(
        ...     init_options={"num_cpus": 2, "include_dashboard": False},
        ...     stage_options={"square": {"num_cpus": 0.5}},
        ... )
        >>> (numbers(4) >> transform(lambda x: x * x, name="square")).collect(
        ...     executor=ray_executor
        ... )
        [0, 1, 4, 9]
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        grace: float = 1.0,
        init_options: dict[str, Any] | None = None,
        actor_options: dict[str, Any] | None = None,
        stage_options: dict[str, dict[str, Any]] | None = None,
        restarts: dict[str, int] | None = None,
        autoscaling: bool = False,
    ) -> None:
        self.address = address
        self.autoscaling = autoscaling
        self.restarts = dict(restarts or {})
        for stage, n in self.restarts.items():
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError(
                    f"RayExecutor(restarts=...): the restarts of {stage!r} "
                    f"must be an integer >= 0, got {n!r}"
                )
        self.grace = grace
        self.init_options = dict(init_options or {})
        self.actor_options = dict(actor_options or {})
        self.stage_options = {k: dict(v) for k, v in (stage_options or {}).items()}

    def options_for(self, stage: str) -> dict[str, Any]:
        """The Ray actor options of the actors of ``stage``."""
        return {
            **self.actor_options,
            **self.stage_options.get(stage, {}),
            "max_restarts": self.restarts.get(stage, 0),
            "max_task_retries": 0,
        }

    def start(self, plan: Plan, *, timeout: float | None = None) -> Execution:
        """Start Ray if needed and the actors of ``plan``; the execution streams
        its results."""
        check_supported(plan)
        for option, names in (("stage_options", self.stage_options), ("restarts", self.restarts)):
            unknown = set(names) - {n.name for n in plan.nodes}
            if unknown:
                raise ValueError(
                    f"RayExecutor({option}=...): no stage named "
                    f"{sorted(unknown)[0]!r} in this flow; its stages are "
                    f"{[n.name for n in plan.nodes if not n.hidden]}"
                )
        for node in plan.nodes:
            if self.restarts.get(node.name):
                _check_restartable(node)
                if node.stage.supervised:
                    raise GraphError(
                        f"stage {node.name!r} has timeout, restarts or max_items_per_worker "
                        f"and RayExecutor(restarts=...): choose one; the stage's own options "
                        f"replace a dead actor and fail the item it ran, the executor's "
                        f"restart it and run its batches again"
                    )
        code = _ship(plan)  # before Ray starts: an unpicklable stage fails at once
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, **self.init_options)
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        if not self.autoscaling:
            _check_placement(nodes, plan, self.options_for)
        return _RayExecution(plan, self, timeout, code, _channel_bytes(nodes))

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r})"


def _channel_bytes(nodes: list[dict[str, float]]) -> float:
    """The bytes a channel may hold waiting: CHANNEL_BYTES, or a quarter of the
    smallest object store of the live ``nodes`` (their resources) if that is less."""
    stores = [r.get("object_store_memory", 0) for r in nodes]
    return float(min([CHANNEL_BYTES, *(s / 4 for s in stores if s)]))


def _check_placement(nodes: list[dict[str, float]], plan: Plan, options_for: Any) -> None:
    """A stage whose actors none of the live ``nodes`` (their resources) can host
    is an error now, not a run that waits for a node that will not come."""
    for node in plan.nodes:
        options = options_for(node.name)
        if node.serves is not None or {"scheduling_strategy", "placement_group"} & set(options):
            continue  # a hidden stage goes with the one it serves; Ray places the others
        need = {
            "CPU": options.get("num_cpus") or 0,
            "GPU": options.get("num_gpus") or 0,
            "memory": options.get("memory") or 0,
            **(options.get("resources") or {}),
        }
        need = {k: v for k, v in need.items() if v}
        if need and not any(all(r.get(k, 0) >= v for k, v in need.items()) for r in nodes):
            have = sorted({k for r in nodes for k in r if not k.startswith("node:")})
            raise GraphError(
                f"stage {node.name!r} asks Ray for {need} per actor, and no node of the "
                f"cluster has that (its {len(nodes)} node(s) have {have}); add such a node, "
                f"change the stage's options, or pass RayExecutor(autoscaling=True) if the "
                f"cluster adds nodes on demand"
            )


def _check_restartable(node: Any) -> None:
    """Restarts are for stages a fresh actor runs the same way: plain functions."""
    import inspect

    stage = node.stage
    if stage.kind not in ("transform", "sink") or not inspect.isfunction(stage.callable):
        what = {
            "source": "a source (a restarted one would start its stream again)",
            "loop": "a loop gate",
        }.get(stage.kind, "an object, whose state a restart would lose")
        raise GraphError(
            f"RayExecutor(restarts=...): stage {node.name!r} is {what}; "
            f"restarts are for stateless stages, transforms and sinks made "
            f"from plain functions"
        )


def check_supported(plan: Plan) -> None:
    """Raise ``NotImplementedError`` for a cycle not made with ``loop()`` (a loop's
    feedback into its gate is the one back edge the driver knows how to end)."""
    succ = {
        n.id: {
            c
            for port in n.outputs
            for ch in port
            for c, p in plan.channels[ch].consumers
            if c != DRIVER and not _feedback(plan, c, p)
        }
        for n in plan.nodes
    }
    state: dict[int, int] = {}

    def visit(n: int) -> None:
        state[n] = 1
        for m in succ[n]:
            if state.get(m) == 1:
                raise NotImplementedError(
                    f"the ray executor does not support cycles made with streams yet "
                    f"(stage {plan.nodes[m].name!r} feeds itself); use the 'process' "
                    f"or 'serial' executor for this flow"
                )
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
    """Each node and its loop weights as dill bytes, stage code included
    (``recurse`` takes along the globals a function uses, so notebook and script
    functions work)."""
    code = {}
    for node in plan.nodes:
        stage = copy.copy(node.stage)
        stage.upstreams, stage.downstreams = [], []  # the graph stays in the driver
        stage.term_flag = None  # the driver watches the flag
        try:
            code[node.id] = dill.dumps(
                (
                    replace(node, stage=stage),
                    loop_weights(plan, node),
                    [n.name for n in plan.nodes],
                ),
                recurse=True,
            )
        except Exception as exc:
            raise GraphError(
                f"stage {node.name!r} cannot be sent to a Ray actor: "
                f"{type(exc).__name__}: {exc}. Make the stage's function and arguments "
                f"picklable"
            ) from exc
    return code


class Event(enum.Enum):
    """The events of an actor's machine, by the actor's method that takes them."""

    OPEN = "open"  # local_init (a gate lets its seed in)
    RECOVER = "recover"  # a replacement's first item: its predecessor's in hand
    PULL = "pull"  # a source's next items
    PROCESS = "process"  # a batch on an input port
    END = "end"  # the end of an input port
    STOP = "stop"  # stop early
    IDLE = "idle"  # a gate: the count of its loop


@dataclass
class _Call:
    """One outstanding actor call: one event of the actor's machine."""

    node: int
    worker: int
    kind: Event
    meta: Any  # the reference of the meta reply
    ports: list[Any] = field(default_factory=list)  # references of the output lists
    reply: dict[str, Any] | None = None  # the meta, once it came back
    args: tuple[Any, ...] = ()  # what it was called with, to call again after a restart
    number: int = 0  # calls are numbered in the order they were made
    ticket: int = 0  # its place in the order its outputs are released in (-1: none)


@dataclass
class _Held:
    """The call in progress on a supervised actor: its one item."""

    call: _Call
    started: float  # when it was made (it is the actor's only call: it starts then)
    attempts: int  # made of this item before this call


class _RayExecution(Execution):
    def __init__(
        self,
        plan: Plan,
        executor: RayExecutor,
        timeout: float | None,
        code: dict[int, bytes],
        channel_bytes: float,
    ) -> None:
        super().__init__(plan, "ray")
        import ray

        self.ray = ray
        self.codec = Codec(None, names=[n.name for n in plan.nodes])  # reads the results
        self.grace = executor.grace
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.closed = False
        nodes, channels = plan.nodes, plan.channels
        self.calls: dict[Any, _Call] = {}  # meta reference -> call
        self.busy_calls = [[0] * n.workers for n in nodes]  # outstanding, per actor
        self.turn = [0] * len(channels)  # round robin over a channel's consumer actors
        # a stage's finished calls wait to release their outputs in order: in call
        # order over the whole stage when it keeps order, per actor otherwise
        self.order: dict[tuple[int, int], Reorder] = {}
        self.running = [[True] * n.workers for n in nodes]  # as the last reply said
        self.stopping = [False] * len(nodes)  # told to stop
        self.told_end: set[tuple[int, int, int]] = set()  # (node, worker, input) ended
        self.figures: dict[tuple[int, int], tuple[float, ...]] = {}
        # restarts: how many times each actor may still be restarted, and the
        # figures of the actors' earlier lives
        self.restarts_left = {
            (n.id, w): executor.restarts.get(n.name, 0) for n in nodes for w in range(n.workers)
        }
        self.unavailable = {key: 0 for key, n in self.restarts_left.items() if n}
        self.submitted = 0  # calls made so far: a call's number orders them
        self.past: dict[tuple[int, int], tuple[float, ...]] = {}
        self.cost = [0.0] * len(nodes)
        self.item_bytes = [0.0] * len(nodes)  # serialised size of an output item
        self.pids: dict[tuple[int, int], tuple[str, int]] = {}  # (host, pid) per actor
        self.where: dict[tuple[int, int], tuple[str, str]] = {}  # (node id, address)
        self.channel_bytes = channel_bytes
        self.backlog: list[deque[tuple[Any, int]]] = [deque() for _ in channels]
        self.waiting = [0] * len(channels)  # items in the backlog
        self.live = [plan.producer_workers(c.id) for c in channels]  # producer ports open
        self.results: deque[Any] = deque()
        self.flow_stopping = False  # a stage raised StopFlow: the sources stop
        # loops, per gate: items in flight inside the loop (as released calls tell),
        # and the gate's calls outstanding (they may let items in unseen)
        self.in_flight = [0] * len(nodes)
        self.gate_calls = [0] * len(nodes)
        self.body_ended = [n.loop is None for n in nodes]  # the gate ended its body's input
        self.flagged = any(n.stage.term_flag is not None for n in nodes)
        # supervised stages: each actor's call in progress, the replaced actors
        # waiting for their local_init (with the item and the calls to make
        # again), the replaced actors' processes, and counts for the report
        self.held: dict[tuple[int, int], _Held] = {}
        self.replacing: dict[tuple[int, int], tuple[_Held | None, str, list[_Call]]] = {}
        self.lives: dict[tuple[int, int], str] = {}  # each actor's life, as it last said
        self.ended_life: dict[tuple[int, int], str | None] = {}  # of the actors replaced
        self.probes: dict[tuple[int, int], int] = {}  # calls made to find the new life
        # a supervised actor takes one call at a time, of any kind: a call queued
        # behind one that dies would reach the next life unopened, and unseen
        self.queued: dict[tuple[int, int], deque[_Call]] = defaultdict(deque)
        self.gone: list[tuple[str, int]] = []
        self.restarted = [0] * len(nodes)  # actors replaced after dying
        self.replaced = [0] * len(nodes)  # actors replaced after max items
        self.timeouts = any(n.stage.timeout is not None for n in nodes)
        self.code = code
        levels = {"": logging.getLogger().getEffectiveLevel(), "flowdsl": log.getEffectiveLevel()}
        self.paths = [p for p in sys.path if p]
        self.levels = levels
        self.options = executor.options_for
        self.actors: list[list[Any]] = []
        try:
            for node in nodes:
                self.actors.append([self._new_actor(node.id, w) for w in range(node.workers)])
                for w in range(node.workers):
                    self._submit(node.id, w, Event.OPEN)
            for c in channels:
                if c.seeds:
                    self._put(c.id, ray.put(encode_beside(list(c.seeds))), len(c.seeds))
        except BaseException:
            self.close()  # the actors made so far go too
            raise

    def _new_actor(self, nid: int, w: int) -> Any:
        node = self.plan.nodes[nid]
        # a hidden stage of the planner's goes with the stage it serves
        served = node if node.serves is None else self.plan.nodes[node.serves]
        options = self.options(served.name)
        if served.stage.supervised:  # Ray restarts it; the driver counts the restarts
            options["max_restarts"] = -1
        return (
            _actor_class(self.ray)
            .options(**options)
            .remote(self.code[nid], w, self.paths, self.levels)
        )

    # -- the run ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        ray = self.ray
        while True:
            self._check_deadline()
            self._pump()
            if self.results:
                refs = list(self.results)
                self.results.clear()
                for data in ray.get(refs):
                    yield from self.codec.decode(data)
                continue
            if not self.calls:
                if not any(map(any, self.running)) and not any(self.live):
                    return
                raise RuntimeError(
                    "the ray executor stalled: no call outstanding but stages not done"
                )  # a bug of ours
            ready, _ = ray.wait(list(self.calls), num_returns=1, timeout=self._wait())
            if self.held:
                self._watch()
            if not ready:
                continue
            ready, _ = ray.wait(list(self.calls), num_returns=len(self.calls), timeout=0)
            for ref in ready:
                call = self.calls.pop(ref, None)
                if call is not None:  # (None: called again after a restart)
                    self._complete(call)

    def _wait(self) -> float | None:
        wait = _POLL if self.flagged else None
        if self.held and self.timeouts:
            now = time.monotonic()
            for key, held in self.held.items():
                limit = self.plan.nodes[key[0]].stage.timeout
                if limit is not None:
                    left = max(0.0, held.started + limit - now)
                    wait = left if wait is None else min(wait, left)
        if self.deadline is not None:
            left = max(0.0, self.deadline - time.monotonic())
            wait = left if wait is None else min(wait, left)
        return wait

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise FlowTimeout(f"the flow did not finish within {self.timeout} s")

    def _pump(self) -> None:
        """Start every call that can start now."""
        for node in self.plan.nodes:
            nid = node.id
            if self.stopping[nid] or not any(self.running[nid]):
                continue
            flag = node.stage.term_flag
            if (
                (flag is not None and flag.is_set())
                or self._unread(nid)
                or (node.kind == "source" and self.flow_stopping)
            ):
                self.stopping[nid] = True
                for w in range(node.workers):
                    self._submit(nid, w, Event.STOP)
            elif node.kind == "source" and not self._full(nid):
                while self.running[nid][0] and self.busy_calls[nid][0] < IN_FLIGHT:
                    self._submit(nid, 0, Event.PULL, self._batch(nid))
        for ch in self.plan.channels:
            self._dispatch(ch.id)

    def _dispatch(self, cid: int) -> None:
        """Hand what waits in channel ``cid`` to its consumers; once it has ended
        and nothing waits, tell each of them."""
        channel, backlog = self.plan.channels[cid], self.backlog[cid]
        if channel.consumers[0][0] == DRIVER:
            self.results.extend(ref for ref, _ in backlog)
            backlog.clear()
            self.waiting[cid] = 0
        while backlog:
            target = self._choose(cid)
            if target is None:
                break
            nid, w, port = target
            if self.plan.nodes[nid].stage.supervised and backlog[0][1] > 1:
                self._split(backlog)
            refs: list[Any] = []
            count = 0
            limit = 1 if self.plan.nodes[nid].stage.supervised else self._batch(nid)
            while backlog and (not refs or count + backlog[0][1] <= limit):
                ref, k = backlog.popleft()
                refs.append(ref)
                count += k
            self.waiting[cid] -= count
            self._submit(nid, w, Event.PROCESS, port, *refs)
        if self.live[cid] == 0 and not backlog:
            for nid, w, port in self._consumer_workers(cid):
                if (nid, w, port) not in self.told_end:
                    self.told_end.add((nid, w, port))
                    self._submit(nid, w, Event.END, port)

    def _split(self, backlog: deque[tuple[Any, int]]) -> None:
        """The first batch of ``backlog`` as one batch per item, for a supervised
        stage (which must know the one item each call runs)."""
        ref, _ = backlog.popleft()
        for data in reversed(split(self.ray.get(ref))):
            backlog.appendleft((self.ray.put(data), 1))

    def _consumer_workers(self, cid: int) -> list[tuple[int, int, int]]:
        """Every (node, worker, input index) that competes for channel ``cid``."""
        return [
            (nid, w, index)
            for nid, index in self.plan.readers(cid)
            for w in range(self.plan.nodes[nid].workers)
        ]

    def _choose(self, cid: int) -> tuple[int, int, int] | None:
        """A consumer actor with room for a call, in turn, running ones first (an
        ended one still takes what arrives, to count it); None if none has."""
        consumers = self._consumer_workers(cid)
        candidates = [c for c in consumers if self.running[c[0]][c[1]]] or consumers
        for i in range(len(candidates)):
            nid, w, port = candidates[(self.turn[cid] + i) % len(candidates)]
            loop = self.plan.nodes[nid].loop
            if self._full(nid) and not (loop is not None and loop.feedback == cid):
                continue  # (what comes back into a loop is always taken)
            limit = 1 if self.plan.nodes[nid].stage.supervised else IN_FLIGHT
            if self.busy_calls[nid][w] < limit:
                self.turn[cid] += i + 1
                return nid, w, port
        return None

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
                costs += [self.cost[c] for c, _ in self.plan.channels[ch].consumers if c != DRIVER]
        if (
            not all(costs[1:])
            or not max(costs)
            or (not costs[0] and self.plan.nodes[nid].kind != "source")
        ):
            return min(limit, FIRST_BATCH)  # not measured yet
        return max(1, min(limit, int(BATCH_WORK / max(costs))))

    def _full(self, nid: int) -> bool:
        """True when an output channel of ``nid`` holds its ``buffer`` of items, or
        CHANNEL_BYTES of them (as big as ``nid``'s items were, last measured)."""
        most = max(1, int(self.channel_bytes / max(1.0, self.item_bytes[nid])))
        return any(
            self.waiting[ch] >= min(self.plan.channels[ch].buffer, most)
            for port in self.plan.nodes[nid].outputs
            for ch in port
        )

    def _unread(self, nid: int) -> bool:
        """True when every stage that reads an output of ``nid`` has ended."""
        readers = self.plan.downstream(nid)
        return readers is not None and not any(any(self.running[r]) for r in readers)

    # -- calls -------------------------------------------------------------------------
    def _submit(self, nid: int, w: int, kind: Event, *args: Any, ordered: bool = True) -> None:
        call = _Call(nid, w, kind, None, args=args, number=self.submitted)
        self.submitted += 1
        if self.plan.nodes[nid].loop is not None:
            self.gate_calls[nid] += 1
        call.ticket = (
            self.order.setdefault(self._order_key(call), Reorder()).ticket() if ordered else -1
        )
        self._make(call)

    def _make(self, call: _Call, attempts: int = 0) -> None:
        """Make ``call`` on its actor (again, after the actor was replaced); a
        replacement takes no call before its predecessor's are made again."""
        nid, w = call.node, call.worker
        if (nid, w) in self.replacing and call.kind is not Event.OPEN:
            self.replacing[nid, w][2].append(call)
            return
        if self.plan.nodes[nid].stage.supervised and self.busy_calls[nid][w]:
            self.queued[nid, w].append(call)
            return
        method = getattr(self.actors[nid][w], call.kind.value)
        refs = method.options(num_returns=1 + len(self.plan.nodes[nid].outputs)).remote(*call.args)
        refs = refs if isinstance(refs, list) else [refs]
        call.meta, call.ports = refs[0], refs[1:]
        self.calls[call.meta] = call
        self.busy_calls[nid][w] += 1
        if call.kind in (Event.PROCESS, Event.RECOVER) and self.plan.nodes[nid].stage.supervised:
            self.held[nid, w] = _Held(call, time.monotonic(), attempts)

    def _complete(self, call: _Call) -> None:
        node = self.plan.nodes[call.node]
        key = (call.node, call.worker)
        try:
            reply = self.ray.get(call.meta)
        except self.ray.exceptions.RayActorError as exc:
            if self._may_call_again(call, exc):
                self._call_again(call, exc)
                return
            if key in self.replacing:  # the probe found no new life yet
                self.busy_calls[call.node][call.worker] -= 1
                self._probe(key)
                return
            if self._may_replace(call):
                self._replace(key, "died")
                return
            spent = node.stage.restarts if key in self.held else 0  # died in a call
            raise self._died(key, restarts=spent) from exc
        except self.ray.exceptions.RayError as exc:
            raise StageError(
                node.name, None, call.worker, str(exc), f"internal error: {type(exc).__name__}"
            ) from exc
        self.busy_calls[call.node][call.worker] -= 1
        if key in self.replacing and reply["life"] == self.ended_life[key]:
            self._probe(key)  # the probe reached the old life before it went
            return
        self.lives[key] = reply["life"]
        held = self.held.get(key)
        if held is not None and held.call is call:
            del self.held[key]
        for record in reply["logs"]:
            logging.getLogger(record.name).handle(record)
        if reply["restarted"]:
            self._keep_figures(key)  # a new life: what the dead one counted stays
        self.figures[key] = reply["figures"]
        if reply.get("pid"):
            self.pids[key] = reply["pid"]
        if reply.get("node"):
            self.where[key] = reply["node"]
        if reply["cost"]:
            self.cost[call.node] = reply["cost"]
        if reply["item_bytes"]:
            self.item_bytes[call.node] = reply["item_bytes"]
        if reply["error"] == "interrupt":
            raise KeyboardInterrupt
        if reply["error"] is not None:
            raise restored_error(reply["error"])
        call.reply = reply
        if key in self.replacing and call.kind is Event.OPEN:
            self._resume(key)  # a replacement is ready: it takes what its predecessor had
        if call.ticket >= 0:
            for ready in self.order[self._order_key(call)].done(call.ticket, call):
                self._release(ready)
        if reply.get("spent") and not self.busy_calls[call.node][call.worker]:
            self.replaced[call.node] += 1
            self._replace(key, "retired")
        elif self.queued.get(key) and not self.busy_calls[call.node][call.worker]:
            self._make(self.queued[key].popleft())

    def _order_key(self, call: _Call) -> tuple[int, int]:
        node = self.plan.nodes[call.node]
        return (
            (call.node, -1) if node.workers > 1 and node.stage.ordered else (call.node, call.worker)
        )

    def _may_call_again(self, call: _Call, exc: Exception) -> bool:
        """Whether a call that found its actor gone is made again: when the stage
        may be restarted, and it has restarts left or the actor is only between
        two lives (a call sent just as it died)."""
        key = (call.node, call.worker)
        if key not in self.unavailable:  # not a stage that may be restarted
            return False
        if isinstance(exc, self.ray.exceptions.ActorUnavailableError):
            return self.unavailable[key] < UNAVAILABLE_RETRIES
        return self.restarts_left[key] > 0

    def _call_again(self, failed: _Call, exc: Exception) -> None:
        """An actor died: Ray restarts it, and every call it had not answered is
        made again on its new self, in the order they were first made."""
        key = (failed.node, failed.worker)
        if isinstance(exc, self.ray.exceptions.ActorUnavailableError):
            # between two lives: give Ray time to start the new one (backing off)
            time.sleep(min(0.5, 0.01 * 2 ** self.unavailable[key]))
            self.unavailable[key] += 1
        else:
            self.restarts_left[key] -= 1
            name = self.plan.nodes[failed.node].name
            log.warning(
                "actor %d of stage %r died; calling its restarted actor again",
                failed.worker,
                name,
                extra={"stage": name, "worker": failed.worker},
            )
        lost = [c for c in self.calls.values() if (c.node, c.worker) == key] + [failed]
        actor = self.actors[failed.node][failed.worker]
        for call in sorted(lost, key=lambda c: c.number):
            self.calls.pop(call.meta, None)
            method = getattr(actor, call.kind.value)
            refs = method.options(num_returns=1 + len(call.ports)).remote(*call.args)
            refs = refs if isinstance(refs, list) else [refs]
            call.meta, call.ports = refs[0], refs[1:]
            self.calls[call.meta] = call

    # -- supervised stages ---------------------------------------------------------------
    def _watch(self) -> None:
        """Replace the actors whose call has run past their stage's timeout."""
        now = time.monotonic()
        for key, held in list(self.held.items()):
            limit = self.plan.nodes[key[0]].stage.timeout
            if limit is not None and now - held.started > limit:
                self._replace(key, "timeout")

    def _may_replace(self, call: _Call) -> bool:
        """Whether an actor that died is replaced: it died in a call of its
        supervised stage, which has restarts left (counted)."""
        key = (call.node, call.worker)
        node = self.plan.nodes[call.node]
        if key not in self.held or self.restarted[call.node] >= node.stage.restarts:
            return False
        self.restarted[call.node] += 1
        return True

    def _replace(self, key: tuple[int, int], reason: str) -> None:
        """A new life for the actor of ``key`` (Ray restarts it; the driver kills
        it first when it ran too long, or retires after ``local_term``); its
        calls are made again once the new life has run ``local_init``, the item
        in hand first."""
        nid, w = key
        ray, actor = self.ray, self.actors[nid][w]
        held = self.held.pop(key, None)
        lost = sorted(
            (c for c in self.calls.values() if (c.node, c.worker) == key), key=lambda c: c.number
        )
        for c in lost:
            del self.calls[c.meta]
        lost += self.queued.pop(key, ())
        if reason == "retired":  # local_term in the old life first
            ref = actor.terminate.remote()
            ready, _ = ray.wait([ref], timeout=self.grace)
            if ready:
                self._absorb(ref, key)
        if reason != "died":
            ray.kill(actor, no_restart=False)
        self.ended_life[key] = self.lives.get(key)
        if key in self.pids:
            self.gone.append(self.pids.pop(key))
        self._keep_figures(key)
        if held is not None:  # its call was busy until now
            past = list(self.past.get(key) or (0.0,) * len(FIGURES))
            past[BUSY] += time.monotonic() - held.started
            self.past[key] = tuple(past)
        self.busy_calls[nid][w] = 0
        name = self.plan.nodes[nid].name
        log.info("worker %d replaced (%s)", w, reason, extra={"stage": name, "worker": w})
        self.replacing[key] = (
            held,
            reason,
            [c for c in lost if held is None or c is not held.call],
        )
        self.probes[key] = 0
        self._submit(nid, w, Event.OPEN, ordered=False)

    def _died(self, key: tuple[int, int], restarts: int = 0) -> WorkerDied:
        """The error for the actor of ``key``, gone for good (its stage's
        ``restarts`` spent, if any): where it ran, and whether its node went
        with it."""
        nid, w = key
        where = self.where.get(key)
        if where is None:
            return WorkerDied(self.plan.nodes[nid].name, w, restarts=restarts)
        node_id, address = where
        try:
            nodes = self.ray.nodes()  # type: ignore[no-untyped-call]
            alive = {n["NodeID"] for n in nodes if n["Alive"]}
        except Exception:  # the cluster cannot say: do not guess
            alive = {node_id}
        return WorkerDied(
            self.plan.nodes[nid].name,
            w,
            node=f"{node_id[:12]} at {address}",
            node_lost=node_id not in alive,
            restarts=restarts,
        )

    def _keep_figures(self, key: tuple[int, int]) -> None:
        """The actor of ``key`` starts a new life: what the old one counted moves
        to its past, so the stage's figures keep it."""
        if key in self.figures:
            now = self.figures[key]
            past = self.past.get(key) or (0.0,) * len(now)
            self.past[key] = tuple(a + b for a, b in zip(past, now, strict=True))
            self.figures[key] = (0.0,) * len(now)

    def _probe(self, key: tuple[int, int]) -> None:
        """Ask again for the new life of a replaced actor (``local_init``): calls
        made before Ray saw the old one go fail or reach the old one."""
        self.probes[key] += 1
        if self.probes[key] > UNAVAILABLE_RETRIES:
            raise self._died(key)
        time.sleep(min(0.5, 0.01 * 2 ** self.probes[key]))
        self._submit(*key, Event.OPEN, ordered=False)

    def _resume(self, key: tuple[int, int]) -> None:
        """A replacement has run ``local_init``: the item its predecessor had in
        hand goes first (as that call, keeping its place in the order), then the
        calls its predecessor had not answered."""
        held, reason, lost = self.replacing.pop(key)
        if held is not None:
            call = held.call
            port, batch = call.args[0], call.args[-1]
            call.kind, call.args = Event.RECOVER, (port, held.attempts, reason, batch)
            self._make(call, held.attempts + 1)
        for call in lost:
            self._make(call)

    def _release(self, call: _Call) -> None:
        """A call's effects, in call order: its in-flight change is counted before
        its outputs go downstream; then the ends of its outputs."""
        nid, reply = call.node, call.reply
        assert reply is not None
        node = self.plan.nodes[nid]
        gates = [gate for gate, delta in reply["delta"]]
        for gate, delta in reply["delta"]:
            self.in_flight[gate] += delta
        for port, (ref, count) in enumerate(zip(call.ports, reply["counts"], strict=True)):
            if count:
                for ch in node.outputs[port]:
                    self._put(ch, ref, count)
        for port in reply["closed"]:
            if node.loop is not None and port == 0:
                self.body_ended[nid] = True
            for ch in node.outputs[port]:
                self.live[ch] -= 1
        self.running[nid][call.worker] = reply["running"]
        if reply["stop_flow"] and not self.flow_stopping:
            self.flow_stopping = self.report.stopped = True
        if node.loop is not None:
            self.gate_calls[nid] -= 1
            gates.append(nid)
        for gate in gates:
            self._maybe_idle(gate)

    def _maybe_idle(self, gate: int) -> None:
        """Tell a gate its loop is empty, once its upstream has ended and no call
        of its own could have let items in that the count does not show yet; the
        gate decides."""
        node = self.plan.nodes[gate]
        up = node.loop.upstream  # type: ignore[union-attr]
        if (
            self.in_flight[gate] == 0
            and not self.gate_calls[gate]
            and not self.body_ended[gate]
            and self.running[gate][0]
            and (up is None or (gate, 0, node.inputs.index(up)) in self.told_end)
        ):
            self._submit(gate, 0, Event.IDLE, 0)

    def _put(self, cid: int, ref: Any, count: int) -> None:
        self.backlog[cid].append((ref, count))
        self.waiting[cid] += count

    # -- figures -----------------------------------------------------------------------
    def stats(self) -> dict[str, StageStats]:
        rows = [
            (
                nid,
                tuple(
                    a + b
                    for a, b in zip(
                        figures, self.past.get((nid, w), (0.0,) * len(figures)), strict=True
                    )
                ),
            )
            for (nid, w), figures in list(self.figures.items())
        ]
        stages = stage_figures(self.plan, rows)
        for node in self.plan.nodes:
            if not node.hidden:
                s = stages[node.name]
                s.restarts, s.replaced = self.restarted[node.id], self.replaced[node.id]
        return stages

    def queue_fill(self) -> dict[str, float]:
        fill: dict[str, float] = {}
        for node in self.plan.nodes:
            if node.inputs and not node.hidden:
                fill[node.name] = min(
                    1.0, max(self.waiting[c] / self.plan.channels[c].buffer for c in node.inputs)
                )
        return fill

    # -- teardown ----------------------------------------------------------------------
    def close(self) -> None:
        """Give the actors ``grace`` seconds to run ``local_term`` (an ended one ran
        it before its last reply), then kill every actor of the run and wait until
        their processes are gone.  Ended actors are asked too: one that Ray
        restarted since its last reply names its new process only in its answer."""
        if self.closed:
            return
        self.closed = True
        ray = self.ray
        try:
            pending = {
                handles[w].terminate.remote(): (nid, w)
                for nid, handles in enumerate(self.actors)
                for w in range(len(handles))
            }
            if pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=self.grace)
                for ref in ready:
                    self._absorb(ref, pending[ref])
        finally:
            for handles in self.actors:
                for actor in handles:
                    ray.kill(actor, no_restart=True)
            self._wait_gone()
            self.report.stages = self.stats()
            self._finish_report()

    def _absorb(self, ref: Any, actor: tuple[int, int]) -> None:
        """Take the logs and the pid of a reply that came in during teardown (the
        pid, so that teardown waits for that actor's process to be gone)."""
        try:
            reply = self.ray.get(ref)
        except self.ray.exceptions.RayError:
            return
        for record in reply.get("logs", ()):
            logging.getLogger(record.name).handle(record)
        if reply.get("pid"):
            self.pids[actor] = reply["pid"]

    def _wait_gone(self, limit: float = 5.0) -> None:
        """Wait until the actor processes on this machine have exited (ray.kill
        does not wait), so a closed run leaves no process behind."""
        here = socket.gethostname()
        end = time.monotonic() + limit
        for pid in [pid for host, pid in [*self.pids.values(), *self.gone] if host == here]:
            _wait_exit(pid, end)


def _wait_exit(pid: int, end: float) -> None:
    """Return once process ``pid`` is gone, or at monotonic time ``end``: woken by
    its exit where Linux offers a pidfd (else looking every 10 ms), then looking
    every millisecond until its parent, Ray's raylet, has reaped it, which takes
    a moment more: until then it is still in the process table."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):  # no pidfd here
        while time.monotonic() < end and _alive(pid):
            time.sleep(0.01)
        return
    try:
        readable(fd, max(0.0, end - time.monotonic()))
        while time.monotonic() < end and _reaped(fd) is False:
            time.sleep(0.001)
    finally:
        os.close(fd)


def _reaped(pidfd: int) -> bool | None:
    """Whether the process of ``pidfd`` is out of the process table (None: cannot
    tell).  Unlike its pid, a pidfd cannot come to name another process."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        return None
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
