"""Validate a flow and lower it to a plan: numbered nodes and channels.

The plan is what executors interpret.  A *channel* is a queue: every item put in
it goes to exactly one of its consumers (they compete), and it ends when all of
its producers have ended.  Broadcast is one producer port feeding several
channels; merge is several producers sharing one channel; zip is a node with
several input ports, one channel each.  Items that leave the flow go to the
*result channel*, whose consumer is the driver.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._flow import DEAD_LETTER, Edge, Flow, Node, mentions
from ._loop import LoopGate
from ._stages import Regulator, Stage
from ._types import hint_error, hints_of
from .errors import GraphError

__all__ = ["DEFAULT_BUFFER", "ChannelSpec", "NodeSpec", "Plan", "compile_flow"]

# items a queue in front of a stage holds by default: several messages' worth, so
# that a stage that the OS sets aside for a few milliseconds (four processes on
# two cores) does not stall its neighbours; big items are held to fewer, by bytes
DEFAULT_BUFFER = 4096
DRIVER = -1  # the consumer id of the result channel


@dataclass
class ChannelSpec:
    id: int
    name: str
    buffer: int
    producers: list[tuple[int, int]] = field(default_factory=list)  # (node, port)
    consumers: list[tuple[int, int]] = field(default_factory=list)  # (node, port)
    seeds: list[Any] = field(default_factory=list)
    seeded: bool = False  # items will be put in before the run (explicit API)


@dataclass
class LoopSpec:
    upstream: int | None  # channel from upstream, if any
    feedback: int  # channel from the body back to the gate


@dataclass
class NodeSpec:
    id: int
    name: str
    stage: Stage
    inputs: list[int]  # channel per input port
    outputs: list[list[int]]  # channels per output port
    arity: int = 1  # arguments per call: items of a zip arrive as tuples
    hidden: bool = False  # added by the planner, not in reports
    loop: LoopSpec | None = None  # set on the gate of a loop
    regions: tuple[int, ...] = ()  # gates of the loops this node is inside
    envelope: bool = False  # items inside a max_iterations loop are (passes, item)
    dead_letter: int | None = None  # the output port of failed items, if routed
    serves: int | None = None  # a hidden stage's: the node it was added for
    fused_batch: int | None = None  # batch=n filled in the stage's own worker

    @property
    def kind(self) -> str:
        return self.stage.kind

    @property
    def workers(self) -> int:
        return self.stage.workers

    @property
    def gate(self) -> LoopGate:
        """The loop gate stage of a loop node."""
        assert isinstance(self.stage, LoopGate)
        return self.stage


@dataclass
class Plan:
    nodes: list[NodeSpec]
    channels: list[ChannelSpec]
    result: int | None  # the result channel id, if the flow has open outputs

    def producer_workers(self, channel: int) -> int:
        return sum(self.nodes[n].workers for n, _ in self.channels[channel].producers)

    def consumer_workers(self, channel: int) -> int:
        return sum(
            1 if n == DRIVER else self.nodes[n].workers for n, _ in self.channels[channel].consumers
        )

    def one_at_a_time(self, ch: int) -> bool:
        """True when a reader of channel ``ch`` is supervised (timeout, restarts,
        max_items_per_worker): its batches then hold one item each."""
        return any(
            n != DRIVER and self.nodes[n].stage.supervised for n, _ in self.channels[ch].consumers
        )

    def calls_per_batch(self, ch: int) -> int:
        """How many items a batch on channel ``ch`` may hold whatever they cost:
        the calls its concurrent readers keep in flight at once (1 if none is)."""
        return max(
            (
                self.nodes[n].stage.concurrency
                for n, _ in self.channels[ch].consumers
                if n != DRIVER
            ),
            default=1,
        )

    def readers(self, channel: int) -> list[tuple[int, int]]:
        """``(node, input index)`` of every stage that reads ``channel`` (the
        driver, which reads the result channel, is not a stage)."""
        return [
            (n, self.nodes[n].inputs.index(channel))
            for n, _ in self.channels[channel].consumers
            if n != DRIVER
        ]

    def downstream(self, node: int) -> set[int] | None:
        """The stages that read an output of ``node``; None when the driver does,
        or when it has no output at all (a stage nobody reads may stop early)."""
        chans = [ch for port in self.nodes[node].outputs for ch in port]
        if not chans or any(self.channels[ch].consumers[0][0] == DRIVER for ch in chans):
            return None
        return {n for ch in chans for n, _ in self.readers(ch)}


def compile_flow(flow: Flow, want_results: bool = True) -> Plan:
    """Validate ``flow`` and return its plan; raise :class:`GraphError` if invalid."""
    nodes = list(flow.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    names = _unique_names(n.stage.name for n in nodes)
    _check_cycles(nodes, flow.edges)

    channels: list[ChannelSpec] = []
    by_key: dict[Any, ChannelSpec] = {}
    inputs: dict[int, dict[int, int]] = defaultdict(dict)
    outputs: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))

    def channel_for(key: Any, name: str, buffer: int) -> ChannelSpec:
        if key not in by_key:
            by_key[key] = ChannelSpec(len(channels), name, buffer)
            channels.append(by_key[key])
        return by_key[key]

    linked: set[tuple[int, tuple[int, int], int]] = set()  # (channel, producer, mention)

    def link(
        src: tuple[int, int] | None, dst: tuple[int, int], ch: ChannelSpec, mention: int = 0
    ) -> None:
        # a producer feeds a channel once per mention: merge(p, p) sends every item
        # of p twice; the edges of one stream from one producer share one link
        if src is not None and (ch.id, src, mention) not in linked:
            linked.add((ch.id, src, mention))
            ch.producers.append(src)
            outputs[src[0]][src[1]].append(ch.id)
        if dst not in ch.consumers:
            ch.consumers.append(dst)
        if dst[0] != DRIVER and inputs[dst[0]].setdefault(dst[1], ch.id) != ch.id:
            raise GraphError(
                f"input {dst[1]} of stage {names[dst[0]]!r} is fed by two "
                f"different streams; share one stream to merge them"
            )

    for e in flow.edges:
        d = index[e.dst]
        stage = e.dst.stage
        key = e.stream if e.stream is not None else (d, e.dst_port)
        name = getattr(e.stream, "name", None) or f"{names[d]}:in{e.dst_port}"
        ch = channel_for(key, name, _buffer_of(e.stream, stage))
        if e.stream is not None:
            ch.seeds = e.stream.seeds
            queue = getattr(e.stream, "q", None)
            ch.seeded = bool(e.stream.seeds) or (queue is not None and not queue.empty())
        src = None if e.src is None else (index[e.src], e.src_port)  # None: seeds only
        link(src, (d, e.dst_port), ch, e.mention)

    result = None
    open_ports = [p for group in flow.outlets for p in group]
    if open_ports and want_results:
        ch = channel_for("result", "result", DEFAULT_BUFFER)
        result = ch.id
        for n, p, k in mentions(open_ports):
            link((index[n], p), (DRIVER, 0), ch, k)
    for n, p in open_ports:  # without a result channel, outputs are counted and dropped
        outputs[index[n]][p]

    specs = []
    for i, node in enumerate(nodes):
        n_in = max(inputs[i], default=-1) + 1
        if node.stage.kind == "loop":
            specs.append(_gate_spec(i, names[i], node, inputs[i], outputs[i]))
            continue
        if sorted(inputs[i]) != list(range(n_in)):
            missing = sorted(set(range(n_in)) - set(inputs[i]))
            raise GraphError(f"stage {names[i]!r} has no upstream for input {missing[0]}")
        n_out = max(max(outputs[i], default=-1) + 1, len(node.stage.downstreams))
        spec = NodeSpec(
            i,
            names[i],
            node.stage,
            [inputs[i][k] for k in range(n_in)],
            [outputs[i].get(k, []) for k in range(n_out)],
        )
        if DEAD_LETTER in outputs[i]:  # failures get the last port
            spec.dead_letter = n_out
            spec.outputs.append(outputs[i][DEAD_LETTER])
        specs.append(spec)
    plan = Plan(specs, channels, result)
    _mark_regions(plan, nodes, index)
    for spec in specs:
        _check_node(spec, plan)
        spec.arity = _arity(spec, plan)
    _check_reachable(plan)
    for spec in list(specs):
        if len(spec.inputs) > 1 and (
            spec.workers > 1 or spec.stage.supervised or spec.stage.batch is not None
        ):
            _lower_zip(plan, spec)
        if spec.stage.batch is not None:
            if _fusable(spec):
                spec.fused_batch = spec.stage.batch
            else:
                _lower_batch(plan, spec)
    return plan


def _fusable(spec: NodeSpec) -> bool:
    """Whether a ``batch=n`` stage fills its lists itself, sparing a process and a
    hop: one input of single items, taken as they come (a supervised stage's
    worker must hold one item at a time, and a loop's items may not wait in a list)."""
    stage = spec.stage
    return (
        len(spec.inputs) == 1
        and spec.arity == 1
        and not stage.supervised
        and not spec.regions
        and spec.workers == 1
        and not stage.is_async
    )


def _gate_spec(
    i: int, name: str, node: Node, inputs: dict[int, int], outputs: dict[int, list[int]]
) -> NodeSpec:
    if 1 not in inputs:
        raise GraphError(f"loop {name!r} has no body output feeding back into it")
    spec = NodeSpec(
        i,
        name,
        node.stage,
        [c for c in (inputs.get(0), inputs[1]) if c is not None],
        [outputs.get(0, []), outputs.get(1, [])],
    )
    spec.loop = LoopSpec(inputs.get(0), inputs[1])
    return spec


def _mark_regions(plan: Plan, nodes: list[Node], index: dict[Node, int]) -> None:
    """Tell every node which loops it is inside (nested loops: several)."""
    for gate in nodes:
        if gate.loop is None:
            continue
        g = index[gate]
        for member in gate.loop:
            spec = plan.nodes[index[member]]
            spec.regions += (g,)
            if isinstance(gate.stage, LoopGate) and gate.stage.enveloped:
                if spec.envelope or spec.kind == "loop" or len(spec.inputs) > 1:
                    raise GraphError(
                        f"loop {plan.nodes[g].name!r}: max_iterations is not "
                        f"supported around a nested loop or a zip"
                    )
                spec.envelope = True


def _arity(spec: NodeSpec, plan: Plan) -> int:
    """Arguments per call: the zip width, or for a loop body's first stage the
    number of parameters its function needs (tuples are unpacked)."""
    if len(spec.inputs) != 1 or spec.kind not in ("transform", "sink"):
        return max(1, len(spec.inputs))
    producers = plan.channels[spec.inputs[0]].producers
    if not any(plan.nodes[n].kind == "loop" for n, _ in producers):
        return 1
    for n in range(1, 9):
        if spec.stage.bind_error(n) is None:
            return n
    return 1


def _pack(*items: Any) -> tuple[Any, ...]:
    return items


def _lower_batch(plan: Plan, spec: NodeSpec) -> None:
    """``batch=n``: a hidden batch stage in front of ``spec`` makes its lists."""
    from ._batching import Batch

    if spec.regions:
        raise GraphError(
            f"stage {spec.name!r}: batch=n is not supported inside a loop "
            f"(a list being filled would hold items the loop counts as gone)"
        )
    size = spec.stage.batch
    assert size is not None  # (lowered only for batch=n)
    _in_front(plan, spec, "batch", Batch(size, name=f"{spec.name}:batch"))
    spec.arity = 1  # (a zip's tuples arrive in lists)


def _lower_zip(plan: Plan, spec: NodeSpec) -> None:
    """Pair a zip in one hidden stage so that the workers of ``spec`` can compete
    for whole argument tuples."""
    from ._stages import Transform

    zipper = Transform(_pack, name=f"{spec.name}:zip")
    # inside a loop, the zip counts in-flight items too
    _in_front(plan, spec, "zip", zipper, arity=spec.arity, regions=spec.regions)


def _in_front(plan: Plan, spec: NodeSpec, role: str, stage: Any, **fields: Any) -> None:
    """Put hidden ``stage`` in front of ``spec``: it takes ``spec``'s inputs and
    feeds ``spec`` through one new channel (both named ``<spec name>:<role>``)."""
    nid, cid = len(plan.nodes), len(plan.channels)
    name = f"{spec.name}:{role}"
    ch = ChannelSpec(
        cid,
        name,
        spec.stage.buffer or DEFAULT_BUFFER,
        producers=[(nid, 0)],
        consumers=[(spec.id, 0)],
    )
    node = NodeSpec(nid, name, stage, spec.inputs, [[cid]], hidden=True, serves=spec.id, **fields)
    for port, c in enumerate(spec.inputs):
        consumers = plan.channels[c].consumers
        consumers[consumers.index((spec.id, port))] = (nid, port)
    spec.inputs = [cid]
    plan.nodes.append(node)
    plan.channels.append(ch)


def _buffer_of(stream: Any, stage: Stage) -> int:
    if stream is not None:
        return int(stream.buffer_size)
    return stage.buffer or DEFAULT_BUFFER


def _check_node(spec: NodeSpec, plan: Plan) -> None:
    stage, name = spec.stage, spec.name
    n_in = len(spec.inputs)
    if stage.kind == "loop":
        return
    if getattr(stage, "check_types", False):
        hints_of(stage)  # evaluated here, in the driver, to go with the stage
        problem = hint_error(stage)
        if problem:
            raise GraphError(
                f"{stage.kind} {name!r}: check_types=True needs its "
                f"annotations, which cannot be evaluated ({problem})"
            )
    if stage.kind == "source":
        if n_in:
            raise GraphError(f"source {name!r} cannot have an upstream")
        if not (callable(stage.callable) or isinstance(stage.functor_obj, Iterable)):
            raise GraphError(
                f"source {name!r}: {stage.functor_obj!r} is neither callable nor iterable"
            )
    else:
        if not n_in:
            raise GraphError(
                f"{stage.kind} {name!r} has no upstream: connect a source to "
                f"it, e.g. my_source >> {name}"
            )
        if not callable(stage.callable):
            raise GraphError(f"{stage.kind} {name!r}: {stage.functor_obj!r} is not callable")
    regular = spec.outputs[: spec.dead_letter] if spec.dead_letter is not None else spec.outputs
    if stage.kind == "sink" and any(regular):
        raise GraphError(f"sink {name!r} cannot have a downstream")
    if isinstance(stage, Regulator):
        return
    if spec.regions and n_in == 1 and _arity(spec, plan) > 1:
        return  # a loop body fed tuples: checked by _arity
    problem = stage.bind_error(
        None if stage.kind == "source" else 1 if stage.batch is not None else n_in
    )  # (one list)
    if problem:
        hint = ""
        if n_in > 1:
            hint = f" (it is fed by a zip of {n_in} upstreams, one argument each)"
        raise GraphError(problem + hint)


def _check_reachable(plan: Plan) -> None:
    """Every stage must be able to receive an item: from a source, a seeded stream
    or a loop's seed.  A stage fed only by a cycle with nothing in it would wait
    forever."""
    starts = [
        n.id for n in plan.nodes if n.kind == "source" or (n.loop is not None and n.gate.seed)
    ]
    starts += [
        cid
        for c in plan.channels
        if c.seeds or c.seeded or not c.producers
        for cid, _ in c.consumers
        if cid != DRIVER
    ]
    seen, todo = set(starts), list(starts)
    while todo:
        for port in plan.nodes[todo.pop()].outputs:
            for ch in port:
                for cid, _ in plan.channels[ch].consumers:
                    if cid != DRIVER and cid not in seen:
                        seen.add(cid)
                        todo.append(cid)
    for node in plan.nodes:
        if node.id not in seen:
            raise GraphError(
                f"stage {node.name!r} can never receive an item: no source, "
                f"seeded stream or loop seed reaches it"
            )


def _unique_names(names: Iterable[str]) -> list[str]:
    names = list(names)
    counts = Counter(names)
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        if counts[name] > 1:
            out.append(f"{name}_{seen[name]}")
            seen[name] += 1
        else:
            out.append(name)
    return out


def _check_cycles(nodes: list[Node], edges: tuple[Edge, ...]) -> None:
    """Cycles are allowed only through loop back edges or explicit streams."""
    succ: dict[Node, list[Node]] = defaultdict(list)
    for e in edges:
        if not e.back and e.stream is None and e.src is not None:
            succ[e.src].append(e.dst)
    state: dict[Node, int] = {}
    for root in nodes:
        if root in state:
            continue
        stack = [(root, iter(succ[root]))]
        path = [root]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise GraphError(
                    "cycle not made with loop(): " + " >> ".join(repr(n.stage.name) for n in cycle)
                )
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
                path.append(nxt)
