"""Running a flow on given inputs, and checking that executors agree on it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from .._flow import Flow, as_flow
from .._plan import compile_flow
from .._stages import Source
from ..errors import FlowError, GraphError, StageError, WorkerDied

__all__ = ["assert_equivalent", "complete", "feed", "keeps_order", "run_inline"]


def feed(flow: Any, items: Iterable[Any] | None) -> Flow:
    """``flow`` with ``items`` flowing into its input; ``flow`` itself if ``items``
    is None.  A flow that has a source takes no items, one that has none needs them."""
    graph = as_flow(flow)
    if items is None:
        if graph.inlets:
            raise GraphError(f"{graph!r} has an input: give the items to feed into it")
        return graph
    if not graph.inlets:
        raise GraphError(f"{graph!r} starts with a source: it takes no items")
    return as_flow(Source(list(items), name="inputs") >> graph)


def complete(flow: Any) -> Flow:
    """``flow`` made runnable for validation: fed no items if it has an input."""
    graph = as_flow(flow)
    return feed(graph, []) if graph.inlets else graph


def run_inline(flow: Any, items: Iterable[Any] | None = None, *,
               timeout: float | None = None) -> list[Any]:
    """Run ``flow`` in this process (the serial executor) and return what reaches
    its end.  ``items``, if given, are fed into a flow that has no source, so a
    chain of transforms can be tested on its own: ``run_inline(parse >> clean,
    lines)``.  Breakpoints and coverage work, and errors surface as usual."""
    return feed(flow, items).collect(executor="serial", timeout=timeout)


def keeps_order(flow: Any) -> bool:
    """Does flowdsl guarantee the order of the flow's results?

    It does unless some stream merges several stages (``merge``, several producers
    on one ``Stream``), the flow loops, or a stage runs several workers with
    ``ordered=False``.
    """
    plan = compile_flow(complete(flow))
    for node in plan.nodes:
        if node.loop is not None or (node.workers > 1 and not node.stage.ordered):
            return False
    return all(len({n for n, _ in c.producers}) <= 1 for c in plan.channels)


def assert_equivalent(flow: Any, items: Any = None, *, ordered: bool | None = None,
                      executors: Sequence[Any] = ("serial", "process"),
                      timeout: float = 60, max_examples: int = 20) -> list[Any] | None:
    """Assert that every executor gives the same outcome for ``flow`` on ``items``.

    The first executor (the serial one by default) is the reference.  Results are
    compared as lists when ``ordered`` (by default: when :func:`keeps_order`), else
    as multisets; when the reference raises a :class:`~flowdsl.StageError`, the
    others must raise one for the same stage.  ``items`` may be a hypothesis strategy
    (outside ``@given``): the check then runs on ``max_examples`` drawn inputs.
    Returns the reference results (None for a strategy).
    """
    if ordered is None:
        ordered = keeps_order(feed(flow, _sample(items)))
    if _is_strategy(items):
        from hypothesis import given, settings

        @settings(max_examples=max_examples, deadline=None, database=None)
        @given(items)
        def check(drawn: Any) -> None:
            _compare(flow, drawn, ordered, executors, timeout)

        check()
        return None
    return _compare(flow, items, ordered, executors, timeout)


def _compare(flow: Any, items: Any, ordered: bool, executors: Sequence[Any],
             timeout: float) -> list[Any]:
    graph = feed(flow, items)
    reference, *others = [_outcome(graph, ex, timeout) for ex in executors]
    for executor, got in zip(executors[1:], others, strict=True):
        if reference[0] == "ok" and got[0] == "ok":
            same = got[1] == reference[1] if ordered else (
                _multiset(got[1]) == _multiset(reference[1]))
            how = "list" if ordered else "multiset"
            assert same, (f"{executor!r} gave {got[1]!r}, {executors[0]!r} gave "
                          f"{reference[1]!r} (compared as a {how})")
        else:
            assert got[:2] == reference[:2], (
                f"{executor!r} ended with {_show(got)}, {executors[0]!r} with "
                f"{_show(reference)}")
    return reference[1] if reference[0] == "ok" else []


def _outcome(graph: Flow, executor: Any, timeout: float) -> tuple[Any, ...]:
    try:
        return ("ok", graph.collect(executor=executor, timeout=timeout))
    except StageError as exc:
        return ("StageError", exc.stage, exc)
    except WorkerDied as exc:
        return ("WorkerDied", exc.stage, exc)
    except FlowError:
        raise


def _show(outcome: tuple[Any, ...]) -> str:
    if outcome[0] == "ok":
        return f"results {outcome[1]!r}"
    return f"{outcome[0]} in stage {outcome[1]!r}: {outcome[2]}"


def _multiset(items: list[Any]) -> Any:
    try:
        return Counter(items)
    except TypeError:  # unhashable items: compare sorted reprs
        return sorted(map(repr, items))


def _is_strategy(obj: Any) -> bool:
    try:
        from hypothesis.strategies import SearchStrategy
    except ImportError:
        return False
    return isinstance(obj, SearchStrategy)


def _sample(items: Any) -> Any:
    """Items standing in for a strategy while the flow's shape is checked."""
    return [] if _is_strategy(items) else items

