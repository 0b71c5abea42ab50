"""Types become tests: inputs drawn from a flow's annotations, and a property
test of the whole flow in one line.

    def test_pipeline():
        check_flow(numbers >> square >> total, n=st.integers(0, 100))

Needs hypothesis (``pip install flowdsl[testing]``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._flow import Flow, Node, as_flow
from .._stages import Stage
from .._types import UNKNOWN, _hints, hint_error, is_instance, makes, show, takes
from ..errors import GraphError, StageError, WorkerDied
from .equivalence import _compare, _difference, _is_strategy, feed, keeps_order

__all__ = ["SOURCE_INTS", "Inputs", "check_flow", "inputs"]

SOURCE_INTS = 100  # a source's int parameters are drawn from 0 to this, unless given


@dataclass(frozen=True)
class Inputs:
    """What one example feeds a flow: the items of a flow that has an input, or
    the arguments of its source (its repr is what hypothesis shows when the
    example fails).

    Attributes:
        items: The items fed into a flow that has an input (else ``None``).
        arguments: The values bound to the source's parameters.

    Examples:
        >>> from flowdsl.testing import Inputs
        >>> Inputs(arguments={"n": 3}), Inputs(items=[1, 2])
        (Inputs(n=3), Inputs(items=[1, 2]))
    """

    items: list[Any] | None = None
    arguments: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        if self.items is not None:
            return f"Inputs(items={self.items!r})"
        return "Inputs(" + ", ".join(f"{k}={v!r}" for k, v in self.arguments.items()) + ")"


def inputs(flow: Any, *, items: Any = None, **arguments: Any) -> Any:
    """A strategy of :class:`Inputs` for ``flow``, from its annotations.

    A flow with an input gets lists of its first stage's item type
    (``st.from_type``), or of the ``items`` strategy.  A flow that starts with
    a source gets values for the source's parameters not bound yet, from their
    annotations (an ``int`` from 0 to 100: it is most often a size), or from
    ``arguments``; parameters with defaults keep them.  Item lists hold up to 30
    items.

    Args:
        flow: A flow, or a single stage.
        items: A strategy of items, instead of the first stage's annotation.
        **arguments: A strategy or a value per source parameter without a
            default (``n=st.integers(0, 50)``), instead of its annotation.

    Returns:
        A hypothesis strategy of :class:`Inputs`.

    Raises:
        GraphError: Something cannot be drawn (no annotation, an unknown
            parameter), naming the stage and what to pass.

    Examples:
        >>> from hypothesis import given, settings, strategies as st
        >>> from flowdsl import source
        >>> from flowdsl.testing import inputs
        >>> @source
        ... def numbers(n: int):
        ...     yield from range(n)
        >>> @settings(max_examples=5)
        ... @given(inputs(numbers, n=st.integers(0, 9)))
        ... def test_numbers(example):
        ...     n = example.arguments["n"]
        ...     assert numbers(n).collect(executor="serial") == list(range(n))
        >>> test_numbers()
    """
    from hypothesis import strategies as st

    graph = as_flow(flow)
    if graph.inlets:
        if len(graph.inlets) != 1:
            raise GraphError(f"{graph!r} has several inputs: feed them from sources")
        head = graph.inlets[0].stage
        if items is None:
            hint = takes(head, 0)
            if hint is UNKNOWN:
                why = hint_error(head)
                what = (
                    f"annotations cannot be evaluated ({why})"
                    if why
                    else "has no annotated item type to draw from"
                )
                raise GraphError(f"stage {head.name!r}: {what}: pass items=<a strategy>")
            items = st.from_type(hint)
        return st.lists(items, max_size=30).map(lambda xs: Inputs(items=xs))
    source = _source(graph)
    parameters = _unbound(source)
    strategies = {}
    for name, hint in parameters.items():
        given = arguments.pop(name, None)
        if given is None:
            if hint is UNKNOWN:
                raise GraphError(
                    f"source {source.name!r}: parameter {name!r} has no "
                    f"annotation to draw from: pass {name}=<a strategy>"
                )
            # a source's int parameters are most often sizes: any int would make
            # examples that never end
            given = st.integers(0, SOURCE_INTS) if hint is int else st.from_type(hint)
        strategies[name] = given if _is_strategy(given) else st.just(given)
    if arguments:
        raise GraphError(
            f"source {source.name!r} has no unbound parameter {', '.join(map(repr, arguments))}"
        )
    return st.fixed_dictionaries(strategies).map(lambda kw: Inputs(arguments=kw))


def check_flow(
    flow: Any,
    *,
    items: Any = None,
    max_examples: int = 25,
    executors: Sequence[Any] = ("serial", "process"),
    timeout: float = 60,
    **arguments: Any,
) -> None:
    """A property test of ``flow`` on inputs drawn from its annotations
    (see :func:`inputs`): for each example, every executor gives what the
    serial one gives, and what plain Python gives when the flow is a chain of
    functions; every result is of the type the last stage declares; no stage
    raises.  A failure shows the shrunk inputs and names the stage.

    Args:
        flow: A flow, or a single stage, with annotated stages.
        items: A strategy of items, instead of the first stage's annotation.
        max_examples: How many examples hypothesis tries.
        executors: The executors that must agree (the serial one runs last, so
            a call that hangs ends at the others' timeout).
        timeout: Seconds each run may take.
        **arguments: A strategy or a value per source parameter, as for
            :func:`inputs`.

    Raises:
        AssertionError: An example failed (hypothesis shows it, shrunk).
        GraphError: The inputs cannot be drawn from the annotations.

    Examples:
        >>> from flowdsl import transform
        >>> from flowdsl.testing import check_flow
        >>> @transform
        ... def shout(word: str) -> str:
        ...     return word.upper()
        >>> check_flow(shout, max_examples=5)
    """
    from hypothesis import given, settings

    graph = as_flow(flow)
    drawn = inputs(graph, items=items, **arguments)
    # the serial reference runs last: a call that hangs in it cannot be stopped,
    # where the other executors end at their timeout (FlowTimeout fails the test)
    executors = sorted(executors, key=lambda e: e == "serial")
    last = _last_stage(graph)
    made = UNKNOWN if last is None else makes(last)
    chain = _plain_chain(graph)

    @settings(max_examples=max_examples, deadline=None, database=None)
    @given(drawn)
    def check(example: Inputs) -> None:
        runnable = _runnable(graph, example)
        ordered = keeps_order(runnable)
        try:
            results = _compare(runnable, None, ordered, executors, timeout, False)
        except (StageError, WorkerDied) as exc:
            raise AssertionError(f"stage {exc.stage!r} failed on {example!r}: {exc}") from exc
        for x in results:
            assert is_instance(x, made), (
                f"stage {last.name!r} declares {show(made)} but made "  # type: ignore[union-attr]
                f"{type(x).__name__} {x!r}"
            )
        if chain is not None and example.items is not None:
            expected = _apply(chain, example.items)
            problem = _difference(
                results, expected, ordered, "the flow", "its functions composed in plain Python"
            )
            assert problem is None, problem

    check()


# -- helpers ------------------------------------------------------------------------------
def _source(graph: Flow) -> Stage:
    sources = [n.stage for n in graph.nodes if n.stage.kind == "source"]
    if len(sources) != 1:
        raise GraphError(
            f"{graph!r} has {len(sources)} sources: check_flow draws the arguments of one"
        )
    return sources[0]


def _unbound(source: Stage) -> dict[str, Any]:
    """The source's parameters that its binding leaves open, with their types."""
    if not callable(source.callable):
        return {}
    sig = source.signature()
    if sig is None:
        return {}
    params = list(sig.parameters.values())[len(source.args) :]
    hints = _hints(source.callable)
    return {
        p.name: hints.get(p.name, UNKNOWN)
        for p in params
        if p.name not in source.kwargs
        and p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _runnable(graph: Flow, example: Inputs) -> Flow:
    if example.items is not None:
        return feed(graph, example.items)
    source = _source(graph)
    node = next(n for n in graph.nodes if n.stage is source)
    return graph.with_stages({node: source(**example.arguments)})


def _last_stage(graph: Flow) -> Stage | None:
    if len(graph.outlets) != 1:
        return None
    stages = {n.stage for n, _ in graph.outlets[0]}
    return stages.pop() if len(stages) == 1 else None


def _plain_chain(graph: Flow) -> list[Stage] | None:
    """The stages of a chain of plain function transforms, in order; None when
    the flow is anything else (the serial executor is then the reference)."""
    if len(graph.inlets) != 1 or any(e.src is None or e.src_port != 0 for e in graph.edges):
        return None
    nxt = {e.src: e.dst for e in graph.edges}
    if len(nxt) != len(graph.edges) or len(graph.nodes) != len(graph.edges) + 1:
        return None
    chain: list[Stage] = []
    node: Node | None = graph.inlets[0]
    while node is not None:
        stage = node.stage
        if (
            stage.kind != "transform"
            or not inspect.isfunction(stage.functor_obj)
            or stage.is_async
            or stage.batch is not None
            or stage.on_error != "raise"
        ):
            return None
        chain.append(stage)
        node = nxt.get(node)
    return chain


def _apply(chain: list[Stage], items: list[Any]) -> list[Any]:
    for stage in chain:
        f, out = stage.callable, []
        for x in items:
            r = f(x, *stage.args, **stage.kwargs)
            if stage.is_generator:
                out.extend(r)
            elif r is not None:
                out.append(r)
        items = out
    return items
