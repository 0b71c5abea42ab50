"""The executor interface: how a plan is run.

An executor turns a :class:`~flowdsl._plan.Plan` into an :class:`Execution`: an
iterator over the items that leave the flow, which raises on failure and which
``close()`` cancels.  The DSL never sees more than this, so new executors (another
process model, a cluster) plug in without touching it.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator
from typing import Any

from .._plan import Plan
from .._report import RunReport, StageStats

__all__ = ["Execution", "Executor"]


class Executor(abc.ABC):
    """The base of every executor: what runs a flow, given as ``executor=``.

    An executor object carries its options; the names ``"process"``,
    ``"serial"`` and ``"ray"`` stand for the defaults of
    :class:`ProcessExecutor`, :class:`SerialExecutor` and :class:`RayExecutor`.
    The interface between an executor and the core (plans and executions) is
    internal for now.

    Examples:
        >>> from flowdsl import Executor, ProcessExecutor, SerialExecutor
        >>> all(issubclass(e, Executor) for e in (ProcessExecutor, SerialExecutor))
        True
    """

    name: str = "executor"

    @abc.abstractmethod
    def start(self, plan: Plan, *, timeout: float | None = None) -> Execution:
        """Start running ``plan``; return the execution that streams its results.

        Called by ``run``, ``collect`` and iteration, once the flow is planned.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Execution(abc.ABC):
    """One run of a plan.

    Iterating yields the items that reach the result channel and ends when the run
    is done; it raises the run's error.  ``close()`` stops the run and frees every
    resource; it is idempotent and called by the context manager.
    """

    closed = False  # set by close(): the run is over, its figures final

    def __init__(self, plan: Plan, executor_name: str) -> None:
        self.plan = plan
        self.report = RunReport(
            {n.name: StageStats(n.name, n.kind, n.workers) for n in plan.nodes if not n.hidden},
            executor=executor_name,
            plan=plan,
        )
        self._started = time.perf_counter()

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Any]: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def stats(self) -> dict[str, StageStats]:
        """Each stage's figures so far: live while the run goes on (read by the
        progress display), final once it is closed."""
        return self.report.stages

    def queue_fill(self) -> dict[str, float]:
        """For each stage with inputs, how full its fullest input queue is (0 to 1);
        empty where the executor has no queues."""
        return {}

    def _finish_report(self) -> None:
        self.report.seconds = time.perf_counter() - self._started

    def __enter__(self) -> Execution:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
