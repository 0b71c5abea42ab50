"""flowdsl: parallel, streaming dataflow pipelines from a small decorator DSL.

Decorate functions or classes with :func:`source`, :func:`transform` and
:func:`sink`, wire them with ``>>`` (lists zip or broadcast, :func:`merge`
interleaves, :func:`loop` makes cycles), then ``run()``, ``collect()`` or iterate
the flow.  Every stage runs in its own worker process(es) by default.
"""

import importlib as _importlib
import logging as _logging
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from . import _flow
from ._batching import batch, unbatch
from ._flow import Flow, merge
from ._loop import loop
from ._sentinel import Sentinel
from ._stages import Regulator, Sink, Source, Stage, Transform, sink, source, transform
from ._stages import as_stage as _as_stage
from .errors import (
    Failure,
    FlowError,
    FlowTimeout,
    GraphError,
    StageError,
    StageTimeout,
    StopFlow,
    WorkerDied,
)

if _TYPE_CHECKING:
    from ._minipipe import PipeLine as PipeLine
    from ._minipipe import PipeSystem as PipeSystem
    from ._minipipe import Stream as Stream
    from ._report import RunReport as RunReport
    from ._report import StageStats as StageStats
    from .executors import Executor as Executor
    from .executors import ProcessExecutor as ProcessExecutor
    from .executors import RayExecutor as RayExecutor
    from .executors import SerialExecutor as SerialExecutor

# The executors, the minipipe API and the reports are imported when first used:
# a worker (a Ray actor, a spawned process) that only runs stages imports the
# graph model and the stage runtime, not every executor.
_LAZY = {
    "Executor": ".executors",
    "PipeLine": "._minipipe",
    "PipeSystem": "._minipipe",
    "ProcessExecutor": ".executors",
    "RayExecutor": ".executors",
    "RunReport": "._report",
    "SerialExecutor": ".executors",
    "StageStats": "._report",
    "Stream": "._minipipe",
}


def __getattr__(name: str) -> _Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    _fix_module([name])
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _layer(module: str, name: str) -> _Any:
    """``name`` of ``module``, a layer above the graph model, imported when first called."""

    def call(*args: _Any, **kwargs: _Any) -> _Any:
        return getattr(_importlib.import_module(module, __name__), name)(*args, **kwargs)

    call.__name__ = name
    return call


# The graph model (flows and stages) imports nothing above it; the layers above
# give it what running and drawing a flow need.
_flow.provide(
    as_stage=_as_stage,
    execute=_layer(".executors", "execute"),
    diagram=_layer("._diagram", "diagram"),
    mimebundle=_layer("._diagram", "mimebundle"),
)
del _as_stage

__version__ = "0.1.0"

__all__ = [
    "Executor",
    "Failure",
    "Flow",
    "FlowError",
    "FlowTimeout",
    "GraphError",
    "PipeLine",
    "PipeSystem",
    "ProcessExecutor",
    "RayExecutor",
    "Regulator",
    "RunReport",
    "Sentinel",
    "SerialExecutor",
    "Sink",
    "Source",
    "Stage",
    "StageError",
    "StageStats",
    "StageTimeout",
    "StopFlow",
    "Stream",
    "Transform",
    "WorkerDied",
    "batch",
    "loop",
    "merge",
    "sink",
    "source",
    "transform",
    "unbatch",
]

_logging.getLogger(__name__).addHandler(_logging.NullHandler())


def _fix_module(names: list[str]) -> None:
    """Public objects report their public home (``flowdsl.Transform``)."""
    for name in names:
        if name not in globals():
            continue  # not imported yet: when it is
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("flowdsl.") and not name[0].islower():
            obj.__module__ = __name__


_fix_module(__all__)
