"""flowdsl: parallel, streaming dataflow pipelines from a small decorator DSL.

Decorate functions or classes with :func:`source`, :func:`transform` and
:func:`sink`, wire them with ``>>`` (lists zip or broadcast, :func:`merge`
interleaves, :func:`loop` makes cycles), then ``run()``, ``collect()`` or iterate
the flow.  Every stage runs in its own worker process(es) by default.
"""

import logging as _logging

from . import _diagram, _flow
from ._batching import batch, unbatch
from ._core.records import StageFields as _StageFields
from ._flow import Flow, merge
from ._loop import loop
from ._minipipe import PipeLine, PipeSystem, Stream
from ._report import RunReport, StageStats
from ._sentinel import Sentinel
from ._stages import Regulator, Sink, Source, Stage, Transform, sink, source, transform
from ._stages import as_stage as _stages_as_stage
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
from .executors import Executor, ProcessExecutor, RayExecutor, SerialExecutor, execute

# The graph model (flows and stages) imports nothing above it; the layers above
# give it what running and drawing a flow need.
_flow.provide(
    as_stage=_stages_as_stage,
    execute=execute,
    diagram=_diagram.diagram,
    mimebundle=_diagram.mimebundle,
)
del execute, _stages_as_stage

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
_logging.getLogger(__name__).addFilter(_StageFields())


def _fix_module(names: list[str]) -> None:
    """Public objects report their public home (``flowdsl.Transform``)."""
    for name in names:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("flowdsl.") and not name[0].islower():
            obj.__module__ = __name__


_fix_module(__all__)
