"""Fault injection: make one worker of one stage misbehave at one item.

``inject_fault(flow, "parse", at=3, kind="kill")`` returns a copy of ``flow`` in
which the workers of stage ``parse`` kill themselves just before handling their
fourth item (``worker=0`` for the first worker only).  Everything else (names,
options, hooks, signatures, reports) is unchanged, so a test can check what its
own flow does when that happens: which exception the caller sees, what a
dead-letter stage receives, what ``on_error="skip"`` counts.
"""

from __future__ import annotations

import copy
import ctypes
import faulthandler
import functools
import inspect
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .._core import runner as _runner
from .._flow import Composable, Node, as_flow
from .._plan import _unique_names, compile_flow
from .._stages import Regulator, callable_of, hook_of
from ..errors import FlowError, GraphError
from .equivalence import complete

__all__ = ["FAULT_KINDS", "InjectedFault", "inject_fault"]

FAULT_KINDS = {
    "raise": "raise InjectedFault while handling the item",
    "kill": "SIGKILL the worker (what the out-of-memory killer does)",
    "exit": "os._exit(70): the worker vanishes without a word",
    "segfault": "crash the interpreter with a segmentation fault",
    "hang": "block forever (for timeouts and Ctrl-C)",
    "unpicklable": "emit an object that cannot be serialised instead of the result "
    "(fails where items cross processes; the serial executor passes it on)",
    "init": "raise InjectedFault in local_init (``at`` is ignored)",
    "term": "raise InjectedFault in local_term (``at`` is ignored)",
}
"""The faults :func:`inject_fault` can inject, each kind with what it does.

``"raise"``, ``"init"`` and ``"term"`` raise :class:`InjectedFault`; ``"kill"``,
``"exit"`` and ``"segfault"`` end the worker process; ``"hang"`` blocks it
forever; ``"unpicklable"`` emits what cannot cross processes.

Examples:
    >>> from flowdsl.testing import FAULT_KINDS
    >>> sorted(FAULT_KINDS)
    ['exit', 'hang', 'init', 'kill', 'raise', 'segfault', 'term', 'unpicklable']
"""
_DEADLY = {"kill", "exit", "segfault", "hang"}


class InjectedFault(Exception):
    """The exception raised by a ``"raise"``, ``"init"`` or ``"term"`` fault.

    Examples:
        >>> from flowdsl import StageError, source, transform
        >>> from flowdsl.testing import InjectedFault, inject_fault
        >>> @source
        ... def numbers():
        ...     yield from range(5)
        >>> flow = inject_fault(numbers() >> transform(abs, name="abs"), "abs", at=2)
        >>> try:
        ...     flow.collect(executor="serial")
        ... except StageError as error:
        ...     print(type(error.__cause__) is InjectedFault, error.item)
        True 2
    """


class Unserialisable:
    """What an ``"unpicklable"`` fault emits: neither pickle nor dill can send it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __reduce__(self) -> Any:
        raise TypeError("this object cannot be pickled (injected fault)")

    def __repr__(self) -> str:
        return "<Unserialisable>"


@dataclass(frozen=True)
class Fault:
    stage: str
    kind: str
    at: int
    worker: int | None  # None: every worker

    def describe(self, worker: int) -> str:
        where = "" if self.kind in ("init", "term") else f" at item {self.at}"
        return f"injected {self.kind!r} fault in stage {self.stage!r}, worker {worker}{where}"


def inject_fault(
    flow: Any, stage: str, *, at: int = 0, worker: int | None = None, kind: str = "raise"
) -> Composable:
    """A copy of ``flow`` where ``stage`` misbehaves as ``kind`` says (see
    :data:`FAULT_KINDS`) just before handling item ``at`` (0-based, counted per
    worker; for a source, before yielding it).

    ``worker`` selects one worker (by default every worker misbehaves at its own item
    ``at``, so the fault fires however items are shared out).  The serial executor runs
    a stage as one worker, 0.  Faults that end or block the process (``"kill"``,
    ``"exit"``, ``"segfault"``, ``"hang"``) only fire in worker processes: in the
    serial executor the stage raises :class:`~flowdsl.FlowError` instead (the caller
    gets a :class:`~flowdsl.StageError`) rather than taking the caller down.
    ``"unpicklable"`` fails where items cross processes; the serial executor passes
    the object on.  Faults compose: inject into the result again for several.

    Args:
        flow: A flow, or a single stage.
        stage: The name of the stage that misbehaves.
        at: The item (0-based, per worker) before which the fault fires.
        worker: The one worker that misbehaves (default: every worker).
        kind: What happens: a key of :data:`FAULT_KINDS`.

    Returns:
        A copy of the flow; the original is unchanged.

    A worker that replaces one (``restarts=``) counts from 0 again, so it fires
    again at its own item ``at``.  In the serial executor a fault that would end
    the process raises instead, and goes through the stage's ``on_error`` like
    any error (``"skip"`` drops the item).

    Raises:
        ValueError: ``kind`` is unknown, or ``at`` or ``worker`` is negative.
        GraphError: The flow is invalid, has no stage of that name, the stage
            cannot take faults (a loop gate, a regulator), ``worker`` is past
            the stage's workers, or ``"unpicklable"`` is asked of a sink.

    Examples:
        >>> from flowdsl import WorkerDied, source, transform
        >>> from flowdsl.testing import inject_fault
        >>> @source
        ... def numbers():
        ...     yield from range(10)
        >>> flow = numbers() >> transform(abs, name="abs")
        >>> try:
        ...     inject_fault(flow, "abs", at=3, kind="exit").collect()
        ... except WorkerDied as error:
        ...     print(error)
        worker 0 of stage 'abs' died unexpectedly (exit code 70)
    """
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}: use one of {sorted(FAULT_KINDS)}")
    if not isinstance(at, int) or at < 0:
        raise ValueError(f"at must be an item index >= 0, got {at!r}")
    if worker is not None and (not isinstance(worker, int) or worker < 0):
        raise ValueError(f"worker must be a worker index >= 0 or None, got {worker!r}")
    graph = as_flow(flow)
    compile_flow(complete(graph))  # a fault in an invalid flow would hide the real problem
    node = _find(graph.nodes, stage)
    target = node.stage
    if isinstance(target, Regulator) or target.kind == "loop":
        raise GraphError(
            f"stage {stage!r} is a {type(target).__name__}: faults can be "
            f"injected into sources, transforms and sinks"
        )
    if kind == "unpicklable" and target.kind == "sink":
        raise GraphError(f"stage {stage!r} is a sink: it emits nothing to corrupt")
    if worker is not None and worker >= target.workers:
        raise GraphError(
            f"stage {stage!r} has {target.workers} worker(s); there is no worker {worker}"
        )
    fault = Fault(stage, kind, at, worker)
    faulty = copy.copy(target)
    faulty.functor_obj = _Faulty(target.functor_obj, fault, target.kind, os.getpid())
    return graph.with_stages({node: faulty})


def _find(nodes: tuple[Node, ...], stage: str) -> Node:
    names = _unique_names(n.stage.name for n in nodes)
    for node, name in zip(nodes, names, strict=True):
        if name == stage:
            return node
    raise GraphError(f"no stage named {stage!r} in this flow; stages: {', '.join(names)}")


class _Faulty:
    """A functor standing in for the user's: same call, same hooks, one fault.

    ``run`` is a per-instance function that wraps the user's callable (so its
    signature and generator-ness are the user's); state is per instance, and every
    copy or unpickled instance rebuilds it, so each worker counts its own items.
    """

    def __init__(self, inner: Any, fault: Fault, kind: str, driver: int) -> None:
        self.inner = inner
        self.fault = fault
        self.kind = kind
        self.driver = driver
        self.seen = 0
        self.worker = 0
        self.run = self._wrap()

    # -- copies rebuild the per-instance wrapper --------------------------------------
    def __reduce__(self) -> Any:
        return _Faulty, (self.inner, self.fault, self.kind, self.driver)

    def __deepcopy__(self, memo: dict[int, Any]) -> _Faulty:
        inner = self.inner
        if not (
            inspect.isfunction(inner)
            or inspect.isgenerator(inner)
            or inspect.isbuiltin(inner)
            or inspect.ismethod(inner)
        ):
            inner = copy.deepcopy(inner, memo)
        return _Faulty(inner, self.fault, self.kind, self.driver)

    # -- hooks -------------------------------------------------------------------------
    def local_init(self, **kwargs: Any) -> None:
        self.worker = _runner.opening_worker()
        self.seen = 0
        if self.fault.kind == "init":
            self._fire()
        hook = hook_of(self.inner, "local_init")
        if hook is not None:
            hook(**kwargs)

    def local_term(self) -> None:
        hook = hook_of(self.inner, "local_term")
        if hook is not None:
            hook()
        if self.fault.kind == "term":
            self._fire()

    # -- the call ----------------------------------------------------------------------
    def _wrap(self) -> Callable[..., Any]:
        inner = self.inner
        if self.kind == "source" and (
            inspect.isgenerator(inner) or not (callable(inner) or hasattr(inner, "run"))
        ):

            def items() -> Iterator[Any]:
                return self._count(iter(inner))

            return items
        call = callable_of(inner)
        if self.kind == "source":

            @functools.wraps(call)
            def source(*args: Any, **kwargs: Any) -> Iterator[Any]:
                return self._count(iter(call(*args, **kwargs)))

            return source
        if inspect.isgeneratorfunction(inspect.unwrap(call)):

            @functools.wraps(call)
            def flat_map(*args: Any, **kwargs: Any) -> Iterator[Any]:
                if self._tick():
                    yield Unserialisable()
                    return
                yield from call(*args, **kwargs)

            return flat_map

        @functools.wraps(call)
        def each(*args: Any, **kwargs: Any) -> Any:
            if self._tick():
                return Unserialisable()
            return call(*args, **kwargs)

        return each

    def _count(self, items: Iterator[Any]) -> Iterator[Any]:
        for x in items:
            if self._tick():
                yield Unserialisable()
                continue
            yield x

    def _tick(self) -> bool:
        """Count one item; fire when it is the chosen one.  True: emit garbage."""
        n, self.seen = self.seen, self.seen + 1
        f = self.fault
        if n != f.at or f.kind in ("init", "term") or f.worker not in (None, self.worker):
            return False
        if f.kind == "unpicklable":
            return True
        self._fire()
        return False

    def _fire(self) -> None:
        f = self.fault
        if f.worker not in (None, self.worker):
            return
        what = f.describe(self.worker)
        if f.kind in _DEADLY and os.getpid() == self.driver:
            raise FlowError(
                f"{what} would end the calling process: the serial executor "
                f"runs stages there; use the process executor"
            )
        if f.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif f.kind == "exit":
            os._exit(70)
        elif f.kind == "segfault":
            faulthandler.disable()  # a deliberate crash needs no crash report
            ctypes.string_at(0)
        elif f.kind == "hang":
            threading.Event().wait()
        raise InjectedFault(what)
