"""Running a flow on given inputs, and checking that executors agree on it."""

from __future__ import annotations

import reprlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from .._flow import Flow, as_flow
from .._plan import compile_flow
from .._stages import Source
from ..errors import GraphError, StageError, WorkerDied

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


def run_inline(
    flow: Any, items: Iterable[Any] | None = None, *, timeout: float | None = None
) -> list[Any]:
    """Run ``flow`` in this process (the serial executor) and return what reaches
    its end.

    A chain of transforms can be tested on its own: ``items`` are fed into a
    flow that has no source. Breakpoints and coverage work, and errors surface
    as usual.

    Args:
        flow: A flow, or a single stage.
        items: Items fed into a flow that has no source (``None`` for a flow
            that has one).
        timeout: Seconds the run may take.

    Returns:
        What reaches the end of the flow.

    Raises:
        StageError: A stage raised.
        GraphError: ``items`` were given to a flow with a source, or not given
            to one without.

    Examples:
        >>> from flowdsl import transform
        >>> from flowdsl.testing import run_inline
        >>> @transform
        ... def parse(line):
        ...     return int(line)
        >>> @transform
        ... def positive(x):
        ...     return x if x > 0 else None
        >>> run_inline(parse >> positive, ["3", "-1", "4"])
        [3, 4]
    """
    return feed(flow, items).collect(executor="serial", timeout=timeout)


def keeps_order(flow: Any) -> bool:
    """Does flowdsl guarantee the order of the flow's results?

    It does unless some stream merges several stages (``merge``, several producers
    on one ``Stream``, a dead-letter transform joining its stage's output), the
    flow loops, or a stage runs several calls at once (``workers`` or
    ``concurrency`` above 1) with ``ordered=False``.

    Args:
        flow: A flow, or a single stage.

    Returns:
        Whether every run gives the results in the same order.

    Examples:
        >>> from flowdsl import transform
        >>> from flowdsl.testing import keeps_order
        >>> double = transform(lambda x: 2 * x, name="double")
        >>> keeps_order(double.options(workers=4))
        True
        >>> keeps_order(double.options(workers=4, ordered=False))
        False
    """
    plan = compile_flow(complete(flow))
    for node in plan.nodes:
        parallel = node.workers > 1 or (node.stage.concurrency or 1) > 1
        if node.loop is not None or (parallel and not node.stage.ordered):
            return False
    return all(len({n for n, _ in c.producers}) <= 1 for c in plan.channels)


def assert_equivalent(
    flow: Any,
    items: Any = None,
    *,
    ordered: bool | None = None,
    executors: Sequence[Any] = ("serial", "process"),
    timeout: float = 60,
    max_examples: int = 20,
    expect_failure: bool | None = False,
) -> list[Any] | None:
    """Assert that every executor gives the same outcome for ``flow`` on ``items``.

    The first executor (the serial one by default) is the reference.  What reaches
    the end of the flow is compared as a list when ``ordered`` (by default: when
    :func:`keeps_order`), else as a multiset; each sink must receive as many items
    on every executor (what a sink does with them is not compared).  When the
    reference raises a :class:`~flowdsl.StageError` or :class:`~flowdsl.WorkerDied`,
    the others must raise the same for the same stage, and then that error is
    raised (a broken flow fails the test even where every executor agrees), unless
    ``expect_failure``: the check then passes on agreeing failures and fails if the
    reference succeeds; ``expect_failure=None`` accepts either outcome (inputs some
    of which make the flow fail).  ``items`` may be a
    hypothesis strategy (outside ``@given``): the check then runs on
    ``max_examples`` drawn inputs.

    Args:
        flow: A flow, or a single stage.
        items: Items fed into a flow without a source, or a hypothesis strategy
            of lists of them.
        ordered: Compare results as lists (default: :func:`keeps_order`).
        executors: The executors to compare, the reference first.
        timeout: Seconds each run may take.
        max_examples: Inputs drawn when ``items`` is a strategy.
        expect_failure: ``True``: the flow must fail, the same way everywhere;
            ``None``: either outcome, as long as they agree.

    Returns:
        The reference results (``None`` for a strategy, ``[]`` for an expected
        failure).

    Raises:
        AssertionError: The executors disagree, or the outcome is not the one
            expected.
        StageError: The flow failed on every executor (and ``expect_failure``
            is False); ``WorkerDied`` likewise.

    Examples:
        >>> from flowdsl import transform
        >>> from flowdsl.testing import assert_equivalent
        >>> square = transform(lambda x: x * x, name="square", workers=2)
        >>> assert_equivalent(square, [1, 2, 3])
        [1, 4, 9]
    """
    strategy = _is_strategy(items)
    if items is not None and not strategy:
        items = list(items)  # every executor runs on them: a generator would be used up
    if ordered is None:
        ordered = keeps_order(feed(flow, [] if strategy else items))
    if strategy:
        from hypothesis import given, settings

        @settings(max_examples=max_examples, deadline=None, database=None)
        @given(items)
        def check(drawn: Any) -> None:
            _compare(flow, drawn, ordered, executors, timeout, expect_failure)

        check()
        return None
    return _compare(flow, items, ordered, executors, timeout, expect_failure)


def _compare(
    flow: Any,
    items: Any,
    ordered: bool,
    executors: Sequence[Any],
    timeout: float,
    expect_failure: bool | None,
) -> list[Any]:
    graph = feed(flow, items)
    reference, *others = [_outcome(graph, ex, timeout) for ex in executors]
    want = repr(executors[0])
    for executor, got in zip(executors[1:], others, strict=True):
        if reference[0] == "ok" and got[0] == "ok":
            problem = _difference(
                got[1], reference[1], ordered, repr(executor), want
            ) or _sink_difference(got[2], reference[2], repr(executor), want)
            assert problem is None, f"{executor!r} and {want} disagree: {problem}"
        else:
            assert got[:2] == reference[:2], (
                f"{executor!r} ended with {_show(got)}, {want} with {_show(reference)}"
            )
    if reference[0] == "ok":
        assert expect_failure is not True, (
            f"expected the flow to fail, {want} gave {_show(reference)}"
        )
        results: list[Any] = reference[1]
        return results
    if expect_failure is False:
        raise reference[2]  # every executor agrees, on a failure
    return []


def _outcome(graph: Flow, executor: Any, timeout: float) -> tuple[Any, ...]:
    """("ok", results, items received per sink), or (error kind, stage, error)."""
    from ..executors import execute

    try:
        with execute(graph, executor=executor, timeout=timeout) as execution:
            results = list(execution)
        sinks = {s.name: s.items_in for s in execution.report.stages.values() if s.kind == "sink"}
        return ("ok", results, sinks)
    except StageError as exc:
        return ("StageError", exc.stage, exc)
    except WorkerDied as exc:
        return ("WorkerDied", exc.stage, exc)


def _show(outcome: tuple[Any, ...]) -> str:
    if outcome[0] == "ok":
        return f"results {_short(outcome[1])}"
    return f"{outcome[0]} in stage {outcome[1]!r}: {outcome[2]}"


def _difference(
    got: list[Any], want: list[Any], ordered: bool, name: str, reference: str
) -> str | None:
    """How the results ``got`` by executor ``name`` differ from those of the
    ``reference`` executor (None: they do not), short enough to read."""
    if ordered:
        if got == want or repr(got) == repr(want):  # (NaN is not equal to itself)
            return None
        pairs = zip(got, want, strict=False)
        first = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(got), len(want)))
        return (
            f"{name} gave {_short(got)}, {reference} gave {_short(want)} (compared as "
            f"lists: {len(got)} and {len(want)} items, first difference at index {first})"
        )
    have, need = _multiset(got), _multiset(want)
    if have == need or Counter(map(repr, got)) == Counter(map(repr, want)):
        return None
    missing, extra = list((need - have).elements()), list((have - need).elements())
    return (
        f"{name} gave {_short(got)}, {reference} gave {_short(want)} (compared as "
        f"multisets: {name} lacks {_short(missing)} and has {_short(extra)} more)"
    )


def _sink_difference(
    got: dict[str, int], want: dict[str, int], name: str, reference: str
) -> str | None:
    if got == want:
        return None
    return f"{name} delivered {got} item(s) to its sinks, {reference} {want}"


def _multiset(items: list[Any]) -> Counter[Any]:
    try:
        return Counter(items)
    except TypeError:  # unhashable items: count their reprs
        return Counter(map(repr, items))


_SHORT = reprlib.Repr()
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 12
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel = 3


def _short(obj: Any) -> str:
    """A repr that stays readable for long result lists."""
    return _SHORT.repr(obj)


def _is_strategy(obj: Any) -> bool:
    try:
        from hypothesis.strategies import SearchStrategy
    except ImportError:
        return False
    return isinstance(obj, SearchStrategy)
