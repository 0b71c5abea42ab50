"""Flows: stages wired together, as plain immutable data.

A :class:`Flow` is a set of nodes (each wraps one stage) and edges between their
ports.  Composition never mutates its operands: ``a >> b`` returns a new flow, and
two flows built from a common flow share its nodes, so diamonds and fan-outs can be
written as expressions.  A bare stage used as an operand becomes a fresh node each
time, so ``square >> square`` has two stages.

``Flow.outlets`` is a tuple of *groups* of output ports: connecting a flow to a
stage connects group *i* to the stage's input *i*.  ``[a, b] >> c`` makes two groups
(a zip); ``merge(a, b) >> c`` one group holding both (an interleave).
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, NoReturn, Protocol, final, overload

from ._types import check_edge
from .errors import GraphError, NotAStage, StopFlow

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    from ._report import RunReport
    from ._stages import Stage

    # what a flow takes and makes; Any where nothing says (PEP 696 defaults)
    In = TypeVar("In", contravariant=True, default=Any)
    Out = TypeVar("Out", covariant=True, default=Any)
else:
    from typing import TypeVar

    In = TypeVar("In", contravariant=True)
    Out = TypeVar("Out", covariant=True)

Next = TypeVar("Next")


@final
class Nothing:
    """What a sink makes, for type checkers: no item.  A flow that ends in sinks
    collects ``list[Nothing]``, and no stage can follow a sink."""

    def __init__(self) -> None:
        raise TypeError("Nothing has no instances")


_A = TypeVar("_A", contravariant=True)
_B = TypeVar("_B", covariant=True)


class Function(Protocol[_A, _B]):
    """A plain function (or lambda) of one item, as ``>>`` takes it: a stage is
    not one (it has no ``__name__`` for type checkers), so a stage whose types do
    not fit is an error rather than a function of unknown types."""

    __name__: str

    def __call__(self, item: _A, /) -> _B: ...


class Producer(Protocol[_B]):
    """An object whose ``run()`` returns a source's items (a decorated source
    class's instance, for type checkers)."""

    def run(self) -> Iterable[_B]: ...


class Runner(Protocol[_A, _B]):
    """An object whose ``run(item)`` is called per item (a decorated class's
    instance, for type checkers that keep the class's own type)."""

    def run(self, item: _A, /) -> _B: ...


__all__ = [
    "DEAD_LETTER",
    "Composable",
    "Edge",
    "Flow",
    "Function",
    "In",
    "Next",
    "Node",
    "Nothing",
    "Out",
    "Producer",
    "Runner",
    "as_flow",
    "mentions",
    "merge",
    "provide",
    "refuse_stop_flow",
]

_ids = itertools.count()
DEAD_LETTER = -1  # the output port of failed items, placed after the others by the planner

# The graph model imports nothing above it.  What it needs from the layers above
# (how a bare function becomes a stage; how a flow runs and is drawn) those
# layers provide when they are imported: ``flowdsl/__init__.py`` sees to it.
_provided: dict[str, Any] = {}


def provide(**functions: Any) -> None:
    """Register ``as_stage``, ``execute``, ``diagram`` or ``mimebundle`` for flows."""
    _provided.update(functions)


def _needs(name: str) -> Any:
    try:
        return _provided[name]
    except KeyError:
        raise RuntimeError(
            f"flowdsl is not fully imported ({name} is missing): import flowdsl first"
        ) from None


@dataclass(frozen=True, eq=False)
class Node:
    """One occurrence of a stage in a graph (compared by identity)."""

    stage: Stage
    uid: int = field(default_factory=lambda: next(_ids))
    loop: Any = None  # the Loop this node is the gate of, if any

    def __repr__(self) -> str:
        return f"Node({self.stage.name!r})"


@dataclass(frozen=True)
class Edge:
    """Output ``src_port`` of ``src`` feeds input ``dst_port`` of ``dst``.

    ``stream`` is the explicit :class:`~flowdsl.Stream` carrying it, if any: edges
    sharing a stream share one channel (the explicit API's merge and competition).
    ``back`` marks the feedback edge of a loop.  ``mention`` tells apart the edges
    of an output named several times in one connection (``merge(p, p) >> c``): each
    mention carries every item once.
    """

    src: Node | None  # None: a stream fed by its seeds alone
    src_port: int
    dst: Node
    dst_port: int
    stream: Any = None
    back: bool = False
    mention: int = 0


Port = tuple[Node, int]


def mentions(ports: Iterable[Port]) -> list[tuple[Node, int, int]]:
    """``(node, port, k)`` for each port: ``k`` counts the earlier mentions of the
    same port (an upstream named twice, as in ``merge(p, p)``, counts twice)."""
    seen: dict[Port, int] = {}
    out = []
    for n, p in ports:
        k = seen.get((n, p), 0)
        seen[(n, p)] = k + 1
        out.append((n, p, k))
    return out


class Composable(Generic[In, Out]):
    """Anything that can stand on either side of ``>>`` and be run.

    ``Composable[In, Out]`` takes items of type ``In`` and makes items of type
    ``Out``: ``a >> b`` is a type error where ``a`` makes what ``b`` cannot take,
    and ``collect()`` returns ``list[Out]``.
    """

    def _as_flow(self) -> Flow[In, Out]:
        raise NotImplementedError

    @overload
    def __rshift__(self, other: Composable[Out, Next]) -> Flow[In, Next]: ...
    @overload
    def __rshift__(self, other: list[Any] | tuple[Any, ...]) -> Flow[In, Any]: ...
    # a function or an object with run(), read as a transform reads it: a
    # generator's items, a coroutine's result, None for nothing
    @overload
    def __rshift__(self, other: Runner[Out, Iterator[Next]]) -> Flow[In, Next]: ...
    @overload
    def __rshift__(self, other: Runner[Out, AsyncIterator[Next]]) -> Flow[In, Next]: ...
    @overload
    def __rshift__(
        self, other: Runner[Out, Coroutine[Any, Any, Next | None]]
    ) -> Flow[In, Next]: ...
    @overload
    def __rshift__(self, other: Runner[Out, Next | None]) -> Flow[In, Next]: ...
    @overload
    def __rshift__(self, other: Function[Out, Iterator[Next]]) -> Flow[In, Next]: ...
    @overload
    def __rshift__(self, other: Function[Out, AsyncIterator[Next]]) -> Flow[In, Next]: ...
    @overload
    def __rshift__(
        self, other: Function[Out, Coroutine[Any, Any, Next | None]]
    ) -> Flow[In, Next]: ...
    @overload
    def __rshift__(self, other: Function[Out, Next | None]) -> Flow[In, Next]: ...

    def __rshift__(self, other: Any) -> Flow[Any, Any]:
        refuse_stop_flow(other, "a stage")
        if not _composable(other):
            if inspect.isfunction(getattr(type(other), "__rrshift__", None)):
                return NotImplemented  # a class that composes with flows itself decides
            raise NotAStage(_not_a_stage(other, left=False))
        return connect(self, other)

    @overload
    def __rrshift__(self, other: list[Any] | tuple[Any, ...]) -> Flow[Any, Out]: ...
    @overload
    def __rrshift__(self, other: Function[Any, In]) -> Flow[Any, Out]: ...
    @overload
    def __rrshift__(self, other: Producer[In]) -> Flow[NoReturn, Out]: ...
    @overload
    def __rrshift__(self, other: Runner[Any, In]) -> Flow[Any, Out]: ...

    def __rrshift__(self, other: Any) -> Flow[Any, Any]:
        refuse_stop_flow(other, "a stage")
        if not _composable(other):
            raise NotAStage(_not_a_stage(other))
        return connect(other, self)

    # -- running (all delegate to the executor layer) --------------------------------
    def run(
        self, *, executor: Any = "process", timeout: float | None = None, progress: bool = False
    ) -> RunReport:
        """Run the flow to completion and return a :class:`RunReport`.

        Results of stages that are not sinks are discarded; iterate the flow or
        call :meth:`collect` to get them. Every worker has stopped when it returns
        or raises.

        Args:
            executor: ``"process"`` (the default: worker processes), ``"serial"``
                (in this process, deterministically), ``"ray"``, or an executor
                object such as :class:`ProcessExecutor` with its options.
            timeout: Seconds the whole run may take.
            progress: Show live counters per stage (a bar in a terminal, a
                widget in a notebook).

        Returns:
            Per-stage counters and the wall time of the run.

        Raises:
            StageError: A stage raised (``on_error="raise"``, the default).
            WorkerDied: A worker vanished and the stage had no ``restarts`` left.
            FlowTimeout: The run took longer than ``timeout``.
            GraphError: The flow is invalid (raised before any process starts).

        Examples:
            >>> from flowdsl import sink, source
            >>> @source
            ... def numbers(n):
            ...     yield from range(n)
            >>> @sink
            ... def ignore(x):
            ...     pass
            >>> report = (numbers(100) >> ignore).run()
            >>> report["ignore"].items_in
            100
        """
        with _needs("execute")(
            self._as_flow(),
            executor=executor,
            timeout=timeout,
            progress=progress,
            want_results=False,
        ) as execution:
            for _ in execution:
                pass
            report: RunReport = execution.report
            return report

    def collect(self, **options: Any) -> list[Out]:
        """Run the flow and return the items that reach its end, as a list.

        Args:
            **options: ``executor``, ``timeout`` and ``progress``, as for
                :meth:`run`.

        Returns:
            What the flow's last stages emit (in the input order, for a chain of
            ordered stages).

        Raises:
            StageError: A stage raised; the other errors are those of :meth:`run`.

        Examples:
            >>> from flowdsl import source, transform
            >>> @source
            ... def numbers(n):
            ...     yield from range(n)
            >>> (numbers(4) >> transform(lambda x: -x)).collect()
            [0, -1, -2, -3]
        """
        return list(self.iterate(**options))

    def iterate(
        self, *, executor: Any = "process", timeout: float | None = None, progress: bool = False
    ) -> Iterator[Out]:
        """Run the flow, yielding the items that reach its end as they arrive.

        The flow runs with backpressure: a consumer slower than the flow holds
        the workers back. Leaving the loop early (``break``, an exception, or
        dropping the iterator) stops the flow and its workers. ``for x in flow``
        is ``for x in flow.iterate()``.

        Args:
            executor: As for :meth:`run`.
            timeout: As for :meth:`run`.
            progress: As for :meth:`run`.

        Yields:
            What the flow's last stages emit.

        Raises:
            StageError: A stage raised; the other errors are those of :meth:`run`.

        Examples:
            >>> from flowdsl import source
            >>> @source
            ... def numbers():
            ...     yield from range(10**9)
            >>> for x in numbers().iterate():
            ...     if x == 2:
            ...         break
            >>> x
            2
        """
        flow = self._as_flow()
        if not flow.outlets:
            logging.getLogger("flowdsl").warning(
                "%r ends in sinks: no item reaches the caller, so iterating or collecting it "
                "gives nothing; run() runs it and returns its report",
                self,
            )
        with _needs("execute")(
            flow, executor=executor, timeout=timeout, progress=progress, want_results=True
        ) as execution:
            yield from execution

    def __iter__(self) -> Iterator[Out]:
        return self.iterate()

    def diagram(self, draw_streams: bool = False) -> Any:
        """A drawing of the flow: one node per stage, one arrow per connection.

        Node ids follow the order of the stages, so the same flow gives the same
        DOT source in every build; loop feedback is a dashed back edge. In
        Jupyter a flow shows this drawing by itself.

        Args:
            draw_streams: Also draw a node for each connection (minipipe's
                streams).

        Returns:
            A ``graphviz.Digraph``: ``.source`` is its DOT text, and
            ``.render(...)`` draws it with Graphviz.

        Examples:
            >>> from flowdsl import sink, source
            >>> @source
            ... def numbers():
            ...     yield 1
            >>> @sink
            ... def show(x):
            ...     print(x)
            >>> print((numbers() >> show).diagram().source)  # doctest: +ELLIPSIS
            digraph flow {
            ...
                n0 -> n1
            }
        """
        return _needs("diagram")(self._as_flow(), draw_streams=draw_streams)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return _needs("mimebundle")(self._as_flow())  # type: ignore[no-any-return]


class Flow(Composable[In, Out]):
    """A graph of stages: what ``>>``, :func:`merge` and :func:`loop` build.

    A flow is plain data: building one runs nothing, and the same flow can run
    many times, on any executor. Stages keep their configuration; a stage used
    twice in one flow is two nodes.

    Args:
        nodes: The stages, one node per use (built by ``>>``, not by hand).
        edges: The connections between nodes.
        inlets: The nodes that take items from a flow to the left of ``>>``.
        outlets: The output ports that feed a flow to the right of ``>>``.

    Examples:
        >>> from flowdsl import source, transform
        >>> @source
        ... def numbers(n):
        ...     yield from range(n)
        >>> @transform
        ... def double(x):
        ...     return 2 * x
        >>> flow = numbers(3) >> double
        >>> flow
        <Flow of 2 stages: numbers, double>
        >>> flow.collect(), flow.collect(executor="serial")
        ([0, 2, 4], [0, 2, 4])
    """

    def __init__(
        self,
        nodes: tuple[Node, ...],
        edges: tuple[Edge, ...],
        inlets: tuple[Node, ...],
        outlets: tuple[tuple[Port, ...], ...],
    ) -> None:
        self.nodes = nodes
        self.edges = edges
        self.inlets = inlets
        self.outlets = outlets

    def _as_flow(self) -> Flow[In, Out]:
        return self

    @property
    def stages(self) -> list[Stage[Any, Any]]:
        """The stages of the flow, in the order of its nodes."""
        return [n.stage for n in self.nodes]

    def __repr__(self) -> str:
        names = ", ".join(n.stage.name for n in self.nodes)
        count = f"{len(self.nodes)} stage" + ("s" if len(self.nodes) != 1 else "")
        return f"<Flow of {count}: {names}>"

    def with_stages(self, new: dict[Node, Stage]) -> Flow:
        """The same graph with the stages of some nodes replaced (node ids kept)."""
        memo: dict[Node, Node] = {}

        def final(n: Node) -> Node:
            if n not in memo:
                loop = None if n.loop is None else frozenset(final(x) for x in n.loop)
                stage = new.get(n, n.stage)
                same = stage is n.stage and loop == n.loop
                memo[n] = n if same else Node(stage, n.uid, loop)
            return memo[n]

        def edge(e: Edge) -> Edge:
            src = None if e.src is None else final(e.src)
            return Edge(src, e.src_port, final(e.dst), e.dst_port, e.stream, e.back, e.mention)

        return Flow(
            tuple(map(final, self.nodes)),
            tuple(map(edge, self.edges)),
            tuple(map(final, self.inlets)),
            tuple(tuple((final(n), p) for n, p in g) for g in self.outlets),
        )

    @staticmethod
    def union(
        flows: list[Flow],
        inlets: tuple[Node, ...],
        outlets: tuple[tuple[Port, ...], ...],
        edges: tuple[Edge, ...] = (),
    ) -> Flow:
        """One flow of all the nodes and edges of ``flows`` (and ``edges``),
        with the given inlets and outlets."""
        nodes = _unique(n for f in flows for n in f.nodes)
        all_edges = _unique(itertools.chain((e for f in flows for e in f.edges), edges))
        return Flow(tuple(nodes), tuple(all_edges), inlets, outlets)


def as_flow(obj: Any) -> Flow:
    """The flow for an operand of ``>>``: stages become one-node flows."""
    as_stage = _needs("as_stage")
    if isinstance(obj, Composable):
        return obj._as_flow()
    if isinstance(obj, (list, tuple)):
        raise GraphError(f"a list can only stand on one side of '>>': {obj!r}")
    try:
        flow: Flow = as_stage(obj)._as_flow()
        return flow
    except TypeError as exc:
        raise GraphError(str(exc)) from None


def refuse_stop_flow(obj: Any, where: str) -> None:
    """Raise :class:`GraphError` if ``obj`` is StopFlow (or a subclass, or an
    instance), given where user code is needed: ``where`` says what it was given as."""
    if isinstance(obj, StopFlow) or (inspect.isclass(obj) and issubclass(obj, StopFlow)):
        raise GraphError(
            f"StopFlow was given as {where}, but it is an exception, not code to run: "
            f"raise it inside a stage (`raise StopFlow` in the function or run() method) "
            f"to end the flow cleanly"
        )


def _not_a_stage(obj: Any, left: bool = True) -> str:
    """Why ``obj`` cannot stand beside ``>>``; on the ``left``, an iterable was
    likely meant as the items of a source."""
    hint = ""
    if left and isinstance(obj, Iterable) and not isinstance(obj, (str, bytes)):
        hint = " To read from an iterable, make it a source: Source(items) or @source."
    return (
        f"{obj!r} cannot be connected with '>>': it is not a stage, a function or an "
        f"object with a run() method.{hint}"
    )


def _composable(obj: Any) -> bool:
    return (
        isinstance(obj, (Composable, list, tuple))
        or callable(obj)
        or hasattr(obj, "run")
        or inspect.isgenerator(obj)
    )


def _bundle(obj: Any) -> Flow:
    """A list on the left of ``>>``: each element's output becomes one input (zip)."""
    if not isinstance(obj, (list, tuple)):
        return as_flow(obj)
    if not obj:
        raise GraphError("an empty list cannot be connected")
    if not any(_composable(o) for o in obj):  # values, not stages
        raise NotAStage(_not_a_stage(obj))
    flows = [as_flow(o) for o in obj]
    groups: list[tuple[Port, ...]] = []
    for f in flows:
        if len(f.outlets) != 1:
            raise GraphError(
                f"each element of a zip list needs exactly one output, but {f!r} has "
                f"{len(f.outlets)}; use merge(...) to interleave several outputs"
            )
        groups.append(f.outlets[0])
    return Flow.union(flows, _unique_t(n for f in flows for n in f.inlets), tuple(groups))


def _fanout(obj: Any) -> Flow:
    """A list on the right of ``>>``: every element receives every item (broadcast)."""
    if not isinstance(obj, (list, tuple)):
        return as_flow(obj)
    if not obj:
        raise GraphError("an empty list cannot be connected")
    if not any(_composable(o) for o in obj):  # values, not stages
        raise NotAStage(_not_a_stage(obj, left=False))
    flows = [as_flow(o) for o in obj]
    return Flow.union(
        flows,
        _unique_t(n for f in flows for n in f.inlets),
        tuple(g for f in flows for g in f.outlets),
    )


def connect(left: Any, right: Any) -> Flow:
    """``left >> right``."""
    lf, rf = _bundle(left), _fanout(right)
    if not lf.outlets:
        raise GraphError(
            f"{_names(lf.nodes[-1:])} has no output to connect to {rf!r} "
            f"(a sink cannot have a downstream)"
        )
    if not rf.inlets:
        raise GraphError(f"{rf!r} has no input to connect to: a source cannot have an upstream")
    edges: list[Edge] = []
    if len(rf.inlets) == 1:
        (target,) = rf.inlets
        _check_arity(target.stage, len(lf.outlets))
        for i, group in enumerate(lf.outlets):
            edges += [Edge(n, p, target, i, mention=k) for n, p, k in mentions(group)]
    elif len(lf.outlets) == 1:
        edges += [
            Edge(n, p, t, 0, mention=k) for t in rf.inlets for n, p, k in mentions(lf.outlets[0])
        ]
    else:
        raise GraphError(
            f"cannot zip {len(lf.outlets)} outputs into several stages "
            f"({_names(rf.inlets)}): connect each one explicitly"
        )
    for e in edges:
        if e.src is not None:
            check_edge(
                e.src.stage, e.dst.stage, e.dst_port, f"{e.src.stage.name} >> {e.dst.stage.name}"
            )
    return Flow.union([lf, rf], lf.inlets, rf.outlets, tuple(edges))


def _check_arity(stage: Stage, n: int) -> None:
    """``n`` upstreams (a zip when ``n > 1``) call ``stage`` with ``n`` arguments:
    say so now, when the flow is built, if it cannot take them.  (A regulator's
    function is its coroutine's factory, and a batched stage takes one list.)"""
    if stage.kind not in ("transform", "sink") or stage.batch is not None:
        return
    if not stage.annotated_items:
        return
    problem = stage.bind_error(n)
    if problem:
        hint = (
            f" (it is fed by a zip of {n} upstreams, one argument each)"
            if n > 1
            else " (an item is passed whole, as one argument: a function of a tuple item "
            "takes the tuple and unpacks it, and a zip of upstreams gives one argument each)"
        )
        raise GraphError(problem + hint)


@overload
def merge(*items: Composable[Any, Next]) -> Flow[Any, Next]: ...
@overload
def merge(*items: Any) -> Flow[Any, Any]: ...


def merge(*items: Any) -> Flow[Any, Any]:
    """Interleave the outputs of several stages or flows, in arrival order.

    ``merge(a, b) >> c`` calls ``c`` once per item of ``a`` or ``b``, where
    ``[a, b] >> c`` would zip them (call ``c`` with one item of each).

    Args:
        *items: The stages or flows to interleave (or one list of them).

    Returns:
        A flow whose outputs are all of theirs.

    Raises:
        GraphError: No argument is given, or none has an output (a sink).

    Examples:
        >>> from flowdsl import merge, source
        >>> @source
        ... def letters(text):
        ...     yield from text
        >>> sorted(merge(letters("ab"), letters("xy")).collect())
        ['a', 'b', 'x', 'y']
    """
    if len(items) == 1 and isinstance(items[0], (list, tuple)):
        items = tuple(items[0])  # merge([a, b]) means merge(a, b)
    if not items:
        raise GraphError("merge() needs at least one stage or flow")
    flows = [as_flow(o) for o in items]
    group = tuple(p for f in flows for g in f.outlets for p in g)
    if not group:
        raise GraphError("merge(): none of the arguments has an output (sinks cannot merge)")
    return Flow.union(flows, _unique_t(n for f in flows for n in f.inlets), (group,))


def _unique(items: Any) -> list[Any]:
    seen: dict[Any, None] = {}
    for x in items:
        seen.setdefault(x, None)
    return list(seen)


def _unique_t(items: Any) -> tuple[Any, ...]:
    return tuple(_unique(items))


def _names(nodes: Any) -> str:
    return ", ".join(repr(n.stage.name) for n in nodes)
