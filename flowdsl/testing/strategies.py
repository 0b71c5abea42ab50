"""Hypothesis strategies: streams of items, and random flows built from your stages.

Needs hypothesis (``pip install flowdsl[testing]``).  Pair them with
:func:`~flowdsl.testing.assert_equivalent`::

    @given(flow=flows([parse, clean, enrich]), items=streams(st.text()))
    def test_parallel_matches_serial(flow, items):
        assert_equivalent(flow, items)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "flowdsl.testing.strategies needs hypothesis: pip install 'flowdsl[testing]'"
    ) from exc

from .._flow import Flow, as_flow, merge
from .._stages import Stage, as_stage

__all__ = ["flows", "streams"]

BUFFERS = (None, 1, 2, 16)  # small buffers make every batch boundary and full queue happen


def streams(
    elements: st.SearchStrategy[Any] | None = None, *, max_size: int = 50, long_size: int = 2000
) -> st.SearchStrategy[list[Any]]:
    """Lists of items: mostly short, sometimes long enough (up to ``long_size``) to
    fill the bounded queues between stages, so backpressure paths run too."""
    elements = st.integers() if elements is None else elements
    short = st.lists(elements, max_size=max_size)
    if long_size <= max_size:
        return short
    long = st.lists(elements, min_size=max_size, max_size=long_size)
    return st.one_of(short, short, long)


class DrawnFlow(Flow):
    """A flow drawn by :func:`flows`; its repr is the expression that builds it."""

    def __init__(self, flow: Flow, expression: str) -> None:
        super().__init__(flow.nodes, flow.edges, flow.inlets, flow.outlets)
        self.expression = expression

    def __repr__(self) -> str:
        return self.expression


def flows(
    stages: Sequence[Any], *, max_stages: int = 6, ordered: bool = False, max_workers: int = 3
) -> st.SearchStrategy[DrawnFlow]:
    """Random flows with one input, made of ``stages`` (transforms taking one item,
    used any number of times).

    Shapes are chains and broadcasts merged back together (``merge(a >> [b, c])``);
    each use of a stage gets random ``workers``, ``ordered`` and ``buffer`` options.
    With ``ordered=True``, only flows whose result order is guaranteed are drawn (no
    merges, every stage ordered), so results can be compared as lists.
    """
    pool = [as_stage(s) for s in stages]
    if not pool:
        raise ValueError("flows() needs at least one stage")
    for s in pool:
        if s.kind != "transform":
            raise ValueError(f"flows() builds from transforms; {s.name!r} is a {s.kind}")
        problem = s.bind_error(1)
        if problem is not None:  # it would fail every drawn flow, far from here
            raise ValueError(f"flows() chains transforms that take one item; {problem}")
    leaf = _uses(pool, ordered, max_workers)
    shapes = (
        (lambda sub: _chain(sub)) if ordered else (lambda sub: st.one_of(_chain(sub), _fan(sub)))
    )
    return st.recursive(leaf, shapes, max_leaves=max_stages)


@st.composite
def _uses(draw: Any, pool: list[Stage], ordered: bool, max_workers: int) -> DrawnFlow:
    stage = draw(st.sampled_from(pool))
    options = {
        "workers": draw(st.integers(1, max_workers)),
        "ordered": True if ordered else draw(st.booleans()),
        "buffer": draw(st.sampled_from(BUFFERS)),
    }
    shown = ", ".join(
        f"{k}={v}"
        for k, v in options.items()
        if (k, v) not in (("workers", 1), ("ordered", True), ("buffer", None))
    )
    expression = f"{_call(stage)}.options({shown})" if shown else _call(stage)
    return DrawnFlow(as_flow(stage.options(**options)), expression)


def _call(stage: Stage) -> str:
    """The stage's name, with the arguments bound to it: ``scale(factor=3)``."""
    bound = [repr(a) for a in stage.args] + [f"{k}={v!r}" for k, v in stage.kwargs.items()]
    return f"{stage.name}({', '.join(bound)})" if bound else stage.name


def _chain(sub: Any) -> Any:
    return st.tuples(sub, sub).map(lambda ab: DrawnFlow(ab[0] >> ab[1], f"{ab[0]!r} >> {ab[1]!r}"))


def _fan(sub: Any) -> Any:
    return st.tuples(sub, sub, sub).map(
        lambda abc: DrawnFlow(
            merge(abc[0] >> [abc[1], abc[2]]), f"merge({abc[0]!r} >> [{abc[1]!r}, {abc[2]!r}])"
        )
    )
