"""Loops: the one sanctioned way to build a cycle.

``loop(body, ...)`` puts a *gate* in front of ``body``.  Items from upstream and
the seeds enter the body through the gate; every output of the body comes back
to the gate, which sends it downstream when ``until(output)`` is true and back
into the body otherwise.

An end-of-stream marker cannot end a cycle (it would have to pass itself), so
loops count instead: every stage inside a loop adds what it produced minus what
it consumed to the loop's in-flight counter, after its outputs are on their way.
The counter therefore only reaches zero when nothing is left inside the loop;
then, once its upstream has ended, the gate closes the body's input and the
ordinary end of stream takes over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar, overload

from ._flow import (
    DEAD_LETTER,
    Composable,
    Edge,
    Flow,
    Function,
    Node,
    Runner,
    as_flow,
    refuse_stop_flow,
)
from ._stages import Stage
from ._types import UNKNOWN, _item_parameters, check_edge, makes
from .errors import GraphError

__all__ = ["LoopGate", "loop"]

T = TypeVar("T")  # what a loop's body takes and makes


class LoopGate(Stage[Any, Any]):
    """The gate of a loop (made by :func:`loop`, not by users)."""

    kind = "loop"
    _default_name = "loop"

    def __init__(
        self,
        until: Callable[[Any], bool] | None,
        max_iterations: int | None,
        seed: Iterable[Any],
        name: str | None = None,
    ) -> None:
        super().__init__(until or _never, name or "loop")
        self.until = until
        self.max_iterations = max_iterations
        self.seed = list(seed)
        self.head: Stage | None = None  # the body's first stage, whose input the loop's is
        self.item_type: Any = None  # what the body makes, as far as its annotations say

    def route(self, items: list[Any]) -> tuple[list[Any], list[Any]]:
        """Split body outputs into (back into the body, out of the loop).

        With ``max_iterations``, items travel as ``(passes, item)`` envelopes and an
        item leaves once it has made that many passes.
        """
        back, out = [], []
        until, limit = self.until, self.max_iterations
        for x in items:
            if limit is not None:
                passes, value = x
                if (until is not None and until(value)) or passes + 1 >= limit:
                    out.append(value)
                else:
                    back.append((passes + 1, value))
            elif until is not None and until(x):
                out.append(x)
            else:
                back.append(x)
        return back, out

    def enter(self, items: list[Any]) -> list[Any]:
        """Items entering the body from upstream or the seed."""
        if self.max_iterations is None:
            return items
        return [(0, x) for x in items]

    @property
    def enveloped(self) -> bool:
        return self.max_iterations is not None


def _never(_: Any) -> bool:
    return False


def _type_loop(gate: LoopGate, head: Stage, tails: list[Stage]) -> None:
    """What the loop takes (its body's head does) and makes (its body's outputs
    do), checking that those outputs can enter the body again."""
    gate.head = head
    made = {makes(t) for t in tails}
    gate.item_type = made.pop() if len(made) == 1 else UNKNOWN
    if len(_item_parameters(head.callable)) > 1:
        return  # a head of N parameters takes tuples, unpacked
    for tail in tails:
        check_edge(
            tail, head, 0, f"loop({head.name}): what {tail.name} makes goes back into {head.name}"
        )


@overload
def loop(
    body: Composable[T, T],
    *,
    seed: Iterable[T] = (),
    until: Callable[[T], bool] | None = None,
    max_iterations: int | None = None,
    name: str | None = None,
) -> Flow[T, T]: ...
@overload
def loop(
    body: Runner[T, Iterator[T]] | Function[T, Iterator[T]],
    *,
    seed: Iterable[T] = (),
    until: Callable[[T], bool] | None = None,
    max_iterations: int | None = None,
    name: str | None = None,
) -> Flow[T, T]: ...
@overload
def loop(
    body: Runner[T, T | None] | Function[T, T | None],
    *,
    seed: Iterable[T] = (),
    until: Callable[[T], bool] | None = None,
    max_iterations: int | None = None,
    name: str | None = None,
) -> Flow[T, T]: ...


def loop(
    body: Any,
    *,
    seed: Iterable[Any] = (),
    until: Callable[[Any], bool] | None = None,
    max_iterations: int | None = None,
    name: str | None = None,
) -> Flow[Any, Any]:
    """A cycle: every output of ``body`` is fed back into it until ``until(output)``.

    Items from upstream (if any) and the ``seed`` items enter ``body``; outputs for
    which ``until`` is true leave the loop downstream.  A body whose function takes
    N > 1 parameters receives each tuple unpacked.  An item leaves the loop when
    ``until`` says it is done, or after ``max_iterations`` passes whatever
    ``until`` says.  The loop ends when its upstream has ended and nothing is in
    flight inside it, or when a stage raises :class:`~flowdsl.StopFlow`.  With
    neither ``until`` nor ``max_iterations``, only a body that filters items out
    (returns ``None``) lets the loop end.

    Args:
        body: The stage or flow each item goes through on every pass.
        seed: Items that enter the body when the run starts, for a loop with no
            upstream (or as well as it).
        until: Whether an output is done: true leaves the loop, false feeds it
            back. Without it every output is fed back (the body filters, or a
            stage raises ``StopFlow``, to end).
        max_iterations: The most passes an item makes; it then leaves the loop
            whatever ``until`` says.
        name: The loop's name in reports and diagrams (default ``"loop"``).

    Returns:
        A flow: items from the left of ``>>`` enter it, done items leave it.

    Raises:
        GraphError: ``until`` is not callable, ``max_iterations`` is not a
            positive integer, or the body holds a sink or a batched stage.

    Examples:
        >>> from flowdsl import loop, source, transform
        >>> @source
        ... def starts():
        ...     yield from [6, 7]
        >>> @transform
        ... def collatz(x):
        ...     return x // 2 if x % 2 == 0 else 3 * x + 1
        >>> (starts() >> loop(collatz, until=lambda x: x == 1)).collect()
        [1, 1]
        >>> loop(collatz, seed=[5], max_iterations=2).collect(executor="serial")
        [8]
    """
    refuse_stop_flow(until, "a loop's until")
    if until is not None and not callable(until):
        raise GraphError(f"loop: until must be callable, got {until!r}")
    if max_iterations is not None and (not isinstance(max_iterations, int) or max_iterations < 1):
        raise GraphError(f"loop: max_iterations must be an integer >= 1, got {max_iterations!r}")
    flow = as_flow(body)
    letters = {e.dst: e.src for e in flow.edges if e.src_port == DEAD_LETTER}
    for node in flow.nodes:
        if node in letters and node.stage.kind == "sink":
            src = letters[node]
            failing = src.stage.name if src is not None else "?"
            raise GraphError(
                f"stage {failing!r} in a loop body sends its failures to "
                f"the sink {node.stage.name!r}, and a loop body cannot hold sinks: inside "
                f"a loop use on_error='skip' or a dead-letter transform, or handle "
                f"failures after the loop"
            )
        if node.stage.kind not in ("transform", "loop"):
            raise GraphError(
                f"loop body stage {node.stage.name!r} is a {node.stage.kind}: "
                f"a loop body is made of transforms only"
            )
    if len(flow.inlets) != 1:
        raise GraphError(
            f"a loop body needs exactly one input stage, got {[n.stage.name for n in flow.inlets]}"
        )
    if len(flow.outlets) != 1:
        raise GraphError("a loop body needs exactly one output (use merge(...) to join several)")
    (head,) = flow.inlets
    gate_stage = LoopGate(until, max_iterations, seed, name)
    _type_loop(gate_stage, head.stage, [n.stage for n, _ in flow.outlets[0]])
    gate = Node(gate_stage, loop=frozenset(flow.nodes))
    edges = [Edge(gate, 0, head, 0)]
    edges += [Edge(n, p, gate, 1, back=True) for n, p in flow.outlets[0]]
    return Flow.union(
        [Flow((gate,), (), (gate,), ()), flow], (gate,), (((gate, 1),),), tuple(edges)
    )
