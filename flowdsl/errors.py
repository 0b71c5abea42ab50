"""Exceptions raised by flowdsl.

Every error the library raises derives from :class:`FlowError`, so ``except
FlowError`` catches them all.  Builtin mixins are added where they fit, so code
that expects a ``ValueError`` for bad input or a ``TimeoutError`` keeps working.
All of them pickle, because they cross process boundaries.
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
    """Root of every error raised by flowdsl."""


class GraphError(FlowError, ValueError):
    """Raised while building or validating a flow, before any process starts.

    The message names the stage at fault and says how to fix it.
    """


class StageError(FlowError):
    """User code raised inside a stage.

    Raised in the driver.  ``stage`` is the stage name, ``item`` a ``repr`` of the
    item being processed (``None`` in hooks and sources), ``worker`` the index of
    the worker inside its stage, ``remote_traceback`` the formatted traceback from
    the worker.  The original exception is ``__cause__`` when it could be rebuilt.
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
    """An item's call ran longer than its stage's ``timeout``: the call was
    abandoned and its worker replaced (the serial executor, which cannot abandon
    a call, fails the item once the call returns)."""


class CallTimedOut(TimeoutError):
    """What the error policy of a stage sees for an item whose call ran longer
    than its ``timeout`` (``Failure.exception`` of a dead letter)."""


class ItemKilledWorker(RuntimeError):
    """What the error policy of a stage sees for an item whose worker died while
    running it (``Failure.exception`` of a dead letter)."""


class WorkerDied(FlowError):
    """A worker process vanished without reporting (killed, crashed, ``os._exit``)."""

    def __init__(self, stage: str, worker: int = 0, exitcode: int | None = None) -> None:
        self.stage = stage
        self.worker = worker
        self.exitcode = exitcode
        super().__init__(stage, worker, exitcode)

    def __str__(self) -> str:
        return (
            f"worker {self.worker} of stage {self.stage!r} died unexpectedly "
            f"(exit code {self.exitcode})"
        )


class FlowTimeout(FlowError, TimeoutError):
    """The flow did not finish within the ``timeout`` given to ``run``."""


class StopFlow(Exception):
    """Raise inside a stage to end the whole flow cleanly.

    Not an error: the stage that raised it stops (the item that raised produces
    nothing), the sources end their streams, and what was already emitted drains
    to the end of the flow.  It is raised from a stage's items: a transform's or
    sink's call, a source's iteration, a loop's ``until``.  Anywhere else it is a
    mistake, reported as one: given as a stage or predicate, a
    :class:`GraphError`; raised from ``local_init`` or ``local_term``, or returned
    or yielded instead of raised, a :class:`StageError`.
    """


@dataclass
class Failure:
    """What a dead-letter stage receives for an item that failed.

    ``stage`` and ``worker`` say where, ``item`` is the item itself, ``error`` the
    exception as text, ``exception`` the exception (``None`` if it could not be
    sent between processes), ``traceback`` the formatted traceback.
    """

    stage: str
    item: Any
    error: str
    exception: BaseException | None
    traceback: str
    worker: int = 0
