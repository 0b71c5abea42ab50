"""Executors interpret flows: ``"process"`` (the default), ``"serial"`` and
``"ray"`` (optional: ``pip install flowdsl[ray]``)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from .._flow import Flow
from .._plan import compile_flow
from .._progress import Progress
from ._base import Execution, Executor
from .process import ProcessExecutor
from .ray import RayExecutor  # imports ray only when a run starts
from .serial import SerialExecutor

__all__ = [
    "Execution",
    "Executor",
    "ProcessExecutor",
    "RayExecutor",
    "SerialExecutor",
    "execute",
    "resolve_executor",
]

_NAMED: dict[str, type[Executor]] = {
    "process": ProcessExecutor,
    "ray": RayExecutor,
    "serial": SerialExecutor,
}


def resolve_executor(executor: Any) -> Executor:
    """An executor object for a name or an executor."""
    if isinstance(executor, Executor):
        return executor
    if isinstance(executor, str) and executor in _NAMED:
        return _NAMED[executor]()
    raise ValueError(
        f"unknown executor {executor!r}: use one of {sorted(_NAMED)} or an Executor instance"
    )


@contextmanager
def execute(
    flow: Flow,
    *,
    executor: Any = "process",
    timeout: float | None = None,
    progress: bool = False,
    want_results: bool = True,
) -> Any:
    """Compile ``flow``, start it on ``executor`` and yield the execution."""
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
        if not timeout > 0:  # NaN too
            raise ValueError(f"timeout must be positive, got {timeout!r}")
    runner = resolve_executor(executor)
    plan = compile_flow(flow, want_results=want_results)
    execution: Execution = runner.start(plan, timeout=timeout)
    display = None
    try:
        display = Progress(execution) if progress else None
        yield execution
    finally:
        try:
            execution.close()
        finally:
            if display is not None:
                display.close()
