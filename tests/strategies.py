"""Hypothesis strategies for flows, each with a plain-Python reference.

A drawn :class:`Chain` or :class:`Dag` knows how to build a flowdsl flow and how to
compute, without flowdsl, what that flow must produce: the serial executor and plain
Python composition are the oracle for the process executor.

Every stage is a module-level function with its parameters bound as arguments
(``add_k(k=3)``), so flows pickle by reference and run under ``spawn`` too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from flowdsl import loop, merge, sink, source, transform

# -- the stages ------------------------------------------------------------------------


@source
def items_of(items):
    """A source over a list (returns the iterable)."""
    return list(items)


@transform
def add_k(x, k=0):
    return x + k


@transform
def mul_k(x, k=1):
    return x * k


@transform
def multiples_of(x, m=1):
    """A filter: ``None`` emits nothing."""
    return x if x % m == 0 else None


@transform
def repeat(x, r=1):
    """A flat-map: ``x`` emitted ``r`` times (``r`` may be 0)."""
    for _ in range(r):
        yield x


@transform
def minus_k(x, k=1):
    return x - k


@transform
def split_down(x, d=3):
    """A flat-map for loop bodies: two smaller items, one of which may leave."""
    yield x - d
    yield x - 1


@transform
def clamp(x, m=7):
    """Items small enough for a loop whose body splits them."""
    return abs(x) % m


def at_most_zero(x):
    return x <= 0


def low_or_even(x):
    return x <= 0 or x % 2 == 0


@transform
def add2(a, b):
    return a + b


@transform
def add3(a, b, c):
    return a + b + c


def plus(x, k=0):
    """An undecorated function, wrapped with ``transform(plus)`` inside a flow."""
    return x + k


def times(x, k=1):
    """An undecorated function, wrapped with ``transform(times)`` inside a flow."""
    return x * k


_DECORATED = {
    "add": add_k,
    "mul": mul_k,
    "keep": multiples_of,
    "repeat": repeat,
    "minus": minus_k,
    "split": split_down,
}
_PLAIN = {"add": plus, "mul": times}
_PARAM = {"add": "k", "mul": "k", "keep": "m", "repeat": "r", "minus": "k", "split": "d"}


def _reference(op: str, arg: int, xs: list[int]) -> list[int]:
    """What one step does to a list, in plain Python."""
    if op == "add":
        return [x + arg for x in xs]
    if op == "mul":
        return [x * arg for x in xs]
    if op == "keep":
        return [x for x in xs if x % arg == 0]
    if op == "repeat":
        return [x for x in xs for _ in range(arg)]
    if op == "minus":
        return [x - arg for x in xs]
    if op == "split":
        return [y for x in xs for y in (x - arg, x - 1)]
    raise AssertionError(op)


# -- chains ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One transform of a chain: what it computes and how it runs."""

    op: str  # "add", "mul" (maps), "keep" (filter), "repeat" (flat-map)
    arg: int
    workers: int = 1
    ordered: bool = True
    buffer: int | None = None
    wrapped: bool = False  # transform(plain_function) instead of a decorated stage

    @property
    def keeps_order(self) -> bool:
        """Does flowdsl guarantee this step's output order?"""
        return self.ordered or self.workers == 1

    def stage(self, name: str | None = None) -> Any:
        if self.wrapped and self.op in _PLAIN:
            base = transform(_PLAIN[self.op])
        else:
            base = _DECORATED[self.op]
        options: dict[str, Any] = {
            "workers": self.workers,
            "ordered": self.ordered,
            "buffer": self.buffer,
        }
        if name is not None:
            options["name"] = name
        return base(**{_PARAM[self.op]: self.arg}).options(**options)

    def apply(self, xs: list[int]) -> list[int]:
        return _reference(self.op, self.arg, xs)

    def __repr__(self) -> str:
        opts = [f"workers={self.workers}"]
        if not self.ordered:
            opts.append("ordered=False")
        if self.buffer is not None:
            opts.append(f"buffer={self.buffer}")
        how = "transform(...)" if self.wrapped and self.op in _PLAIN else ""
        return f"{how}{self.op}({_PARAM[self.op]}={self.arg}, {', '.join(opts)})"


@dataclass(frozen=True)
class Chain:
    """A linear sequence of steps (possibly empty)."""

    steps: tuple[Step, ...]

    @property
    def keeps_order(self) -> bool:
        return all(s.keeps_order for s in self.steps)

    def stages(self, prefix: str | None = None) -> list[Any]:
        return [
            s.stage(None if prefix is None else f"{prefix}{i}") for i, s in enumerate(self.steps)
        ]

    def attach(self, upstream: Any, prefix: str | None = None) -> Any:
        """``upstream >> s0 >> s1 >> ...`` (stages named ``{prefix}{i}`` if given)."""
        for stage in self.stages(prefix):
            upstream = upstream >> stage
        return upstream

    def flow(self, prefix: str | None = None) -> Any:
        """The chain alone, as one flow (it must have at least one step)."""
        first, *rest = self.stages(prefix)
        flow = first._as_flow()
        for stage in rest:
            flow = flow >> stage
        return flow

    def apply(self, xs: list[int]) -> list[int]:
        for step in self.steps:
            xs = step.apply(xs)
        return xs

    def prefixes(self, xs: list[int]) -> list[list[int]]:
        """What each step outputs, in plain Python."""
        outs = []
        for step in self.steps:
            xs = step.apply(xs)
            outs.append(xs)
        return outs

    def __repr__(self) -> str:
        return " >> ".join(map(repr, self.steps)) or "<no steps>"


item_lists = st.lists(st.integers(-1000, 1000), max_size=40)
buffers = st.one_of(st.none(), st.sampled_from([1, 2, 3, 16, 300]))


@st.composite
def steps(draw: Any, *, ordered: bool | None = True, workers: Any = None) -> Step:
    """One step; ``ordered=None`` draws the flag, ``workers`` a strategy for it."""
    op = draw(st.sampled_from(["add", "mul", "keep", "repeat"]))
    arg = draw(
        {
            "add": st.integers(-5, 5),
            "mul": st.integers(-3, 3),
            "keep": st.integers(1, 4),
            "repeat": st.integers(0, 2),
        }[op]
    )
    return Step(
        op=op,
        arg=arg,
        workers=draw(workers if workers is not None else st.integers(1, 3)),
        ordered=draw(st.booleans()) if ordered is None else ordered,
        buffer=draw(buffers),
        wrapped=draw(st.booleans()),
    )


def chains(*, min_size: int = 1, max_size: int = 5, ordered: bool | None = True) -> Any:
    """Chains of steps; ``ordered=True`` makes every step ordered, ``None`` draws it."""
    return st.lists(steps(ordered=ordered), min_size=min_size, max_size=max_size).map(
        lambda s: Chain(tuple(s))
    )


@st.composite
def unordered_chains(draw: Any, *, max_size: int = 5) -> Chain:
    """Chains where at least one step has several workers and ``ordered=False``."""
    chain = draw(chains(min_size=0, max_size=max_size - 1, ordered=None))
    loose = draw(steps(ordered=False, workers=st.integers(2, 3)))
    at = draw(st.integers(0, len(chain.steps)))
    return Chain((*chain.steps[:at], loose, *chain.steps[at:]))


# -- loops -----------------------------------------------------------------------------

_UNTIL = {"at_most_zero": at_most_zero, "low_or_even": low_or_even}


@dataclass(frozen=True)
class Loop:
    """``loop(body, until=...)``: a body of steps and inner loops, ending with a
    step that makes every item smaller, so every item leaves in the end."""

    body: tuple[Any, ...]  # Step, Loop, or Fan (not first)
    until: str = "at_most_zero"
    seed: tuple[int, ...] = ()

    def flow(self) -> Any:
        body = _part(self.body[0])
        for b in self.body[1:]:
            body = (
                merge(body >> [_part(c) for c in b.branches])
                if isinstance(b, Fan)
                else body >> _part(b)
            )
        return loop(body, until=_UNTIL[self.until], seed=list(self.seed))

    def pass_once(self, x: int) -> list[int]:
        xs = [x]
        for b in self.body:
            xs = b.apply(xs)
        return xs

    def apply(self, xs: list[int]) -> list[int]:
        """What leaves the loop, in plain Python (in some order)."""
        until, out = _UNTIL[self.until], []
        work = [*self.seed, *xs]
        while work:
            for y in self.pass_once(work.pop()):
                (out if until(y) else work).append(y)
        return out

    def __repr__(self) -> str:
        seed = f", seed={list(self.seed)}" if self.seed else ""
        return f"loop({' >> '.join(map(repr, self.body))}, until={self.until}{seed})"


@dataclass(frozen=True)
class Fan:
    """``merge(body >> [a, b])`` inside a loop body: every item goes both ways."""

    branches: tuple[Step, Step]

    def apply(self, xs: list[int]) -> list[int]:
        return [y for b in self.branches for y in b.apply(xs)]

    def __repr__(self) -> str:
        return f"[{', '.join(map(repr, self.branches))}]"


def _part(b: Any) -> Any:
    return b.flow() if isinstance(b, Loop) else b.stage()


@st.composite
def loops(draw: Any, depth: int = 2, seeded: bool = False) -> Loop:
    """Loop bodies of maps, filters, flat-maps, broadcasts and nested loops,
    several workers."""
    workers = st.integers(1, 3)
    parts: list[Any] = []
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(
            st.sampled_from(
                ["keep", "split", "minus", "fan", "loop"]
                if depth > 1
                else ["keep", "split", "minus", "fan"]
            )
        )
        if kind == "loop":
            parts.append(draw(loops(depth=depth - 1)))
        elif kind == "fan":
            if not parts:
                parts.append(Step("keep", 1, workers=draw(workers)))
            parts.append(
                Fan(
                    (
                        Step("minus", 1, workers=draw(workers)),
                        Step("keep", draw(st.integers(2, 3)), workers=draw(workers)),
                    )
                )
            )
        else:
            arg = draw(
                {"keep": st.integers(1, 3), "split": st.integers(2, 3), "minus": st.integers(0, 2)}[
                    kind
                ]
            )
            parts.append(
                Step(
                    kind,
                    arg,
                    workers=draw(workers),
                    ordered=draw(st.booleans()),
                    buffer=draw(buffers),
                )
            )
    parts.append(
        Step("minus", draw(st.integers(1, 2)), workers=draw(workers), buffer=draw(buffers))
    )  # every pass makes an item smaller
    seed = tuple(draw(st.lists(st.integers(0, 6), max_size=3))) if seeded else ()
    return Loop(tuple(parts), draw(st.sampled_from(sorted(_UNTIL))), seed)


# -- DAGs ------------------------------------------------------------------------------


def as_multiset(xs: list[int]) -> Counter[int]:
    return Counter(xs)


@dataclass(frozen=True)
class Dag:
    """A small flow with one output group, and what it must produce.

    ``kind`` is one of ``leaf`` (a source and a chain), ``then`` (a DAG and a chain),
    ``merge``, ``zip`` (of ordered DAGs), ``diamond`` (``d >> [b, c] >> add2``),
    ``fan`` (``merge(d >> [b, c])``).
    """

    kind: str
    parts: tuple[Dag, ...] = ()
    chains: tuple[Chain, ...] = ()
    items: Any = ()  # of a leaf: a tuple or a range
    workers: int = 1  # of the zip stage
    loop: Loop | None = None  # of a ``loop`` (over parts[0], clamped) or a ``seeded`` leaf

    # -- what it builds -------------------------------------------------------------
    def flow(self) -> Any:
        k = self.kind
        if k == "leaf":
            return self.chains[0].attach(items_of(list(self.items)))
        if k == "then":
            return self.chains[0].attach(self.parts[0].flow())
        if k == "merge":
            return merge(*(p.flow() for p in self.parts))
        if k == "zip":
            fn = add2 if len(self.parts) == 2 else add3
            return [p.flow() for p in self.parts] >> fn.options(workers=self.workers)
        if k == "diamond":
            return (
                self.parts[0].flow()
                >> [c.flow() for c in self.chains]
                >> add2.options(workers=self.workers)
            )
        if k == "fan":
            return merge(self.parts[0].flow() >> [c.flow() for c in self.chains])
        if k == "loop":
            assert self.loop is not None
            return self.parts[0].flow() >> clamp >> self.loop.flow()
        if k == "seeded":
            assert self.loop is not None
            return self.loop.flow()
        raise AssertionError(k)

    # -- what it must produce -------------------------------------------------------
    @property
    def keeps_order(self) -> bool:
        """Is the output sequence (not just the multiset) determined?"""
        k = self.kind
        if k in ("leaf", "then"):
            return self.chains[0].keeps_order and all(p.keeps_order for p in self.parts)
        return k in ("zip", "diamond")  # a loop's output order is not promised

    def expected(self) -> list[int]:
        """The output, in order when :attr:`keeps_order`, else in some order."""
        k = self.kind
        if k in ("loop", "seeded"):
            return self._loop_expected()
        if k == "leaf":
            return self.chains[0].apply(list(self.items))
        if k == "then":
            return self.chains[0].apply(self.parts[0].expected())
        if k == "merge":
            return [x for p in self.parts for x in p.expected()]
        if k == "zip":
            return [sum(t) for t in zip(*(p.expected() for p in self.parts), strict=False)]
        up = self.parts[0].expected()
        if k == "diamond":
            left, right = (c.apply(up) for c in self.chains)
            return [a + b for a, b in zip(left, right, strict=False)]
        if k == "fan":
            return [x for c in self.chains for x in c.apply(up)]
        raise AssertionError(k)

    def _loop_expected(self) -> list[int]:
        assert self.loop is not None
        if self.kind == "seeded":
            return self.loop.apply([])
        return self.loop.apply([abs(x) % 7 for x in self.parts[0].expected()])

    def __repr__(self) -> str:
        k = self.kind
        if k == "leaf":
            return f"items_of({_show_items(self.items)}) >> {self.chains[0]!r}"
        if k == "then":
            return f"({self.parts[0]!r}) >> {self.chains[0]!r}"
        if k == "merge":
            return f"merge({', '.join(map(repr, self.parts))})"
        if k == "zip":
            fn = "add2" if len(self.parts) == 2 else "add3"
            return f"[{', '.join(map(repr, self.parts))}] >> {fn}(workers={self.workers})"
        if k == "loop":
            return f"({self.parts[0]!r}) >> clamp >> {self.loop!r}"
        if k == "seeded":
            return repr(self.loop)
        branches = ", ".join(f"({c!r})" for c in self.chains)
        if k == "diamond":
            return f"({self.parts[0]!r}) >> [{branches}] >> add2(workers={self.workers})"
        return f"merge(({self.parts[0]!r}) >> [{branches}])"


short_lists = st.lists(st.integers(-100, 100), max_size=15)
# long enough to fill the bounded queues between stages (256 items by default)
long_lists = st.builds(lambda a, n: range(a, a + n), st.integers(-50, 50), st.integers(100, 2000))


def _leaves(ordered: bool | None) -> Any:
    return st.builds(
        lambda xs, c: Dag("leaf", chains=(c,), items=_frozen(xs)),
        short_lists | long_lists,
        chains(min_size=0, max_size=2, ordered=ordered),
    )


def _frozen(xs: Any) -> Any:
    """A tuple, or the range itself (short to print)."""
    return xs if isinstance(xs, range) else tuple(xs)


def _show_items(items: Any) -> str:
    return repr(items) if isinstance(items, range) else repr(list(items))


def _ordered(draw: Any, children: Any) -> Dag:
    """A child whose output order is determined (a zip needs one): an ordered leaf
    stands in for one that is not."""
    child = draw(children)
    return child if child.keeps_order else draw(_leaves(ordered=True))


@st.composite
def _extend(draw: Any, children: Any) -> Dag:
    """One DAG node over smaller DAGs (drawn from ``children``)."""
    kind = draw(st.sampled_from(["then", "merge", "zip", "diamond", "fan"]))
    workers = draw(st.integers(1, 3))
    if kind == "then":
        return Dag(
            "then",
            parts=(draw(children),),
            chains=(draw(chains(min_size=1, max_size=2, ordered=None)),),
        )
    if kind == "merge":
        return Dag("merge", parts=tuple(draw(st.lists(children, min_size=1, max_size=3))))
    if kind == "zip":
        n = draw(st.integers(2, 3))
        parts = tuple(_ordered(draw, children) for _ in range(n))
        return Dag("zip", parts=parts, workers=workers)
    if kind == "diamond":
        branches = tuple(draw(chains(min_size=1, max_size=2)) for _ in range(2))
        return Dag("diamond", parts=(_ordered(draw, children),), chains=branches, workers=workers)
    branches = tuple(draw(chains(min_size=1, max_size=2, ordered=None)) for _ in range(2))
    return Dag("fan", parts=(draw(children),), chains=branches)


def dags(max_leaves: int = 4) -> Any:
    """Small random DAGs: sources, chains, broadcast, merge and zip."""
    return st.recursive(_leaves(ordered=None), _extend, max_leaves=max_leaves)


@st.composite
def _with_loop(draw: Any, children: Any) -> Dag:
    if draw(st.booleans()):
        return Dag("loop", parts=(draw(children),), loop=draw(loops()))
    return draw(_extend(children))


def looped_dags(max_leaves: int = 4) -> Any:
    """Random DAGs as :func:`dags` draws, with loops (nested, seeded, with
    flat-map and filter bodies, several workers) among their parts."""
    leaves = _leaves(ordered=None) | st.builds(
        lambda lp: Dag("seeded", loop=lp), loops(seeded=True).filter(lambda lp: lp.seed)
    )
    return st.recursive(leaves, _with_loop, max_leaves=max_leaves)


@sink
def discard(x):
    """A sink that keeps nothing (its counts show in the RunReport)."""
