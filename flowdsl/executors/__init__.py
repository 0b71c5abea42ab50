"""Executors interpret flows: ``"process"`` (the default), ``"serial"`` and
``"ray"`` (optional: ``pip install flowdsl[ray]``)."""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .._flow import Flow
from .._plan import compile_flow
from ._base import Execution, Executor

if TYPE_CHECKING:
    from .process import ProcessExecutor
    from .ray import RayExecutor
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

# each executor by its name, and the module it lives in: imported when first used,
# so a worker that runs stages imports no executor (the ray one imports ray only
# when a run starts)
_NAMED = {
    "process": ("ProcessExecutor", ".process"),
    "ray": ("RayExecutor", ".ray"),
    "serial": ("SerialExecutor", ".serial"),
}
_MODULES = dict(_NAMED.values())


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name], __name__), name)
    globals()[name] = value
    return value


def resolve_executor(executor: Any) -> Executor:
    """An executor object for a name or an executor."""
    if isinstance(executor, Executor):
        return executor
    if isinstance(executor, str) and executor in _NAMED:
        executor_class: type[Executor] = __getattr__(_NAMED[executor][0])
        return executor_class()
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
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    runner = resolve_executor(executor)
    plan = compile_flow(flow, want_results=want_results)
    execution: Execution = runner.start(plan, timeout=timeout)
    display = None
    try:
        if progress:
            from .._progress import Progress

            display = Progress(execution)
        yield execution
    finally:
        try:
            execution.close()
        finally:
            if display is not None:
                display.close()
