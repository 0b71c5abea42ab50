"""Exceptions raised by flowdsl.

Every error about a flow derives from :class:`FlowError`: building one that
cannot run (:class:`GraphError`), and running one (:class:`StageError`,
:class:`WorkerDied`, :class:`FlowTimeout`).  Builtin mixins are added where they
fit, so code that expects a ``ValueError`` for bad input or a ``TimeoutError``
keeps working.  An invalid argument to a function or constructor raises
``ValueError`` or ``TypeError`` at the call, as Python's own functions do.  All
of them pickle, because they cross process boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "Failure",
    "FlowError",
    "FlowTimeout",
    "GraphError",
    "StageError",
    "StopFlow",
    "WorkerDied",
]


class FlowError(Exception):
    """Root of the errors about a flow: building one that cannot run
    (:class:`GraphError`) and running one (:class:`StageError`,
    :class:`WorkerDied`, :class:`FlowTimeout`), so ``except FlowError`` catches
    every way a run can fail.  An invalid argument to a function or constructor
    (``workers=0``, an unknown option) raises ``ValueError`` or ``TypeError`` at
    the call, as Python's own functions do.

    Examples:
        >>> from flowdsl import FlowError, GraphError, StageError
        >>> issubclass(GraphError, FlowError) and issubclass(StageError, FlowError)
        True
    """


class GraphError(FlowError, ValueError):
    """Raised while building or validating a flow, before any process starts.

    The message names the stage at fault and says how to fix it. It is a
    ``ValueError`` too, for code that expects one for bad input (and a
    ``TypeError`` when an operand of ``>>`` is not a stage at all).

    Examples:
        >>> from flowdsl import GraphError, source, transform
        >>> @source
        ... def words():
        ...     yield "a"
        >>> @transform
        ... def add(a, b):
        ...     return a + b
        >>> try:
        ...     words() >> add
        ... except GraphError as error:
        ...     print(error)  # doctest: +ELLIPSIS
        transform 'add' ...
    """


class NotAStage(GraphError, TypeError):
    """An operand of ``>>`` that is not a stage: a :class:`GraphError`, and a
    ``TypeError`` as well, as Python's own operators raise for operands they
    cannot combine."""


class StageError(FlowError):
    """User code raised inside a stage.

    Raised in the driver, by ``run``, ``collect`` or the iteration of a flow,
    once every worker has stopped. The original exception is ``__cause__`` when
    it could be rebuilt in the driver.

    Args:
        stage: The name of the stage that failed.
        item: A ``repr`` of the item being processed (``None`` in hooks and
            sources).
        worker: The index of the worker inside its stage.
        remote_traceback: The formatted traceback from the worker.
        message: The original exception, as text.

    Examples:
        >>> from flowdsl import StageError, source, transform
        >>> @source
        ... def numbers():
        ...     yield from [1, 0]
        >>> @transform
        ... def invert(x):
        ...     return 1 / x
        >>> try:
        ...     (numbers() >> invert).collect()
        ... except StageError as error:
        ...     print(error.stage, error.item, type(error.__cause__).__name__)
        invert 0 ZeroDivisionError
    """

    def __init__(
        self,
        stage: str,
        item: str | None = None,
        worker: int = 0,
        remote_traceback: str = "",
        message: str = "",
    ) -> None:
        self.stage = stage
        self.item = item
        self.worker = worker
        self.remote_traceback = remote_traceback
        self.message = message
        super().__init__(stage, item, worker, remote_traceback, message)

    def __str__(self) -> str:
        where = f"stage {self.stage!r} (worker {self.worker})"
        if self.item is not None:
            where += f" on item {self.item}"
        text = f"{where} failed: {self.message}"
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback.rstrip()
        return text


class StageTimeout(StageError, TimeoutError):
    """An item's call ran longer than its stage's ``timeout``.

    The call was abandoned and its worker replaced (the serial executor, which
    cannot abandon a call, fails the item once the call returns). It is a
    :class:`StageError` and a ``TimeoutError``; a dead letter of such an item
    has ``Failure.exception`` of type ``TimeoutError``.

    Examples:
        >>> import time
        >>> from flowdsl import StageTimeout, source, transform
        >>> @source
        ... def delays():
        ...     yield from [0, 5]
        >>> @transform(timeout=0.5)
        ... def nap(seconds):
        ...     time.sleep(seconds)
        ...     return seconds
        >>> try:
        ...     (delays() >> nap).collect()
        ... except StageTimeout as error:
        ...     print(error.stage, error.item)
        nap 5
    """


class CallTimedOut(TimeoutError):
    """What the error policy of a stage sees for an item whose call ran longer
    than its ``timeout`` (``Failure.exception`` of a dead letter)."""


class ItemKilledWorker(RuntimeError):
    """What the error policy of a stage sees for an item whose worker died while
    running it (``Failure.exception`` of a dead letter)."""


class WorkerDied(FlowError):
    """A worker process vanished without reporting (killed, crashed, ``os._exit``).

    With ``restarts=`` the stage replaces the worker instead, and only the item
    it held fails (through ``retries`` and ``on_error``).

    Args:
        stage: The name of the stage whose worker died.
        worker: The index of the worker inside its stage.
        exitcode: The process's exit status, negative for a signal (``None``
            where the executor cannot know it).
        node: Where the worker ran, on a cluster: the node's id and address.
        node_lost: Whether the worker went with its node (the machine left the
            cluster), rather than alone.
        item: A ``repr`` of the item it was running, where the executor knows
            it (a stage with ``restarts``), else ``None``.
        restarts: The stage's restarts, all spent before this death (0 for a
            stage without ``restarts``).

    Examples:
        >>> import os
        >>> from flowdsl import WorkerDied, source, transform
        >>> @source
        ... def numbers():
        ...     yield from range(3)
        >>> @transform
        ... def crash(x):
        ...     os._exit(3)
        >>> try:
        ...     (numbers() >> crash).collect()
        ... except WorkerDied as error:
        ...     print(error)
        worker 0 of stage 'crash' died unexpectedly (exit code 3)
    """

    def __init__(
        self,
        stage: str,
        worker: int = 0,
        exitcode: int | None = None,
        node: str | None = None,
        node_lost: bool = False,
        item: str | None = None,
        restarts: int = 0,
    ) -> None:
        self.stage = stage
        self.worker = worker
        self.exitcode = exitcode
        self.node = node
        self.node_lost = node_lost
        self.item = item
        self.restarts = restarts
        super().__init__(stage, worker, exitcode, node, node_lost, item, restarts)

    def __str__(self) -> str:
        who = f"worker {self.worker} of stage {self.stage!r}"
        on = f" on item {self.item}" if self.item is not None else ""
        spent = ""
        if self.restarts:
            plural = "restart was" if self.restarts == 1 else "restarts were"
            spent = f"; its {self.restarts} {plural} spent"
        if self.node_lost:
            return f"{who} was lost{on} with its node, {self.node}, which left the cluster{spent}"
        where = f" on node {self.node}" if self.node else ""
        code = f" (exit code {self.exitcode})" if self.exitcode is not None else ""
        return f"{who} died unexpectedly{on}{where}{code}{spent}"


class FlowTimeout(FlowError, TimeoutError):
    """The flow did not finish within the ``timeout`` given to ``run``.

    The workers are stopped before it is raised. It is a ``TimeoutError`` too.

    Examples:
        >>> import time
        >>> from flowdsl import FlowTimeout, sink, source
        >>> @source
        ... def forever():
        ...     while True:
        ...         yield 1
        >>> @sink
        ... def slow(x):
        ...     time.sleep(0.01)
        >>> try:
        ...     (forever() >> slow).run(timeout=0.5)
        ... except FlowTimeout:
        ...     print("stopped")
        stopped
    """


class StopFlow(Exception):
    """Raise inside a stage to end the whole flow cleanly.

    Not an error: the stage that raised it stops (the item that raised produces
    nothing), the sources end their streams, and what was already emitted drains
    to the end of the flow.  It is raised from a stage's items: a transform's or
    sink's call, a source's iteration, a loop's ``until``.  Anywhere else it is a
    mistake, reported as one: given as a stage or predicate, a
    :class:`GraphError`; raised from ``local_init`` or ``local_term``, or returned
    or yielded instead of raised, a :class:`StageError`.

    Examples:
        >>> from flowdsl import StopFlow, source, transform
        >>> @source
        ... def numbers():
        ...     yield from range(1_000_000)
        >>> @transform
        ... def until_five(x):
        ...     if x == 5:
        ...         raise StopFlow
        ...     return x
        >>> (numbers() >> until_five).collect(executor="serial")
        [0, 1, 2, 3, 4]
    """


@dataclass
class Failure:
    """What a dead-letter stage receives for an item that failed.

    A stage given as ``on_error=`` receives one for each item whose call raised
    (after ``retries``), instead of the flow stopping.

    Attributes:
        stage: The name of the stage where the item failed.
        item: The item itself.
        error: The exception, as text.
        exception: The exception (``None`` if it could not be sent between
            processes).
        traceback: The formatted traceback.
        worker: The index of the worker inside its stage.

    Examples:
        >>> from flowdsl import source, transform
        >>> @source
        ... def numbers():
        ...     yield from [2, 0, 4]
        >>> @transform
        ... def note(failure):
        ...     return f"{failure.item}: {failure.error}"
        >>> @transform(on_error=note)
        ... def invert(x):
        ...     return 1 / x
        >>> sorted((numbers() >> invert).collect(), key=str)
        [0.25, 0.5, '0: ZeroDivisionError: division by zero']
    """

    stage: str
    item: Any
    error: str
    exception: BaseException | None
    traceback: str
    worker: int = 0
