"""What a worker sends its driver besides items: log records and errors.

A worker (a process or a Ray actor) replaces its logging handlers with one that
ships records to the driver, which hands them to its own handlers: one logging
set-up, the user's, for the whole flow.  A stage's error travels with its cause
when the cause can be rebuilt on the other side.  Both executors use these.
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from ..errors import StageError

__all__ = ["StageFields", "portable", "portable_error", "restored_error", "route_logging"]


def portable_error(error: StageError) -> tuple[StageError, BaseException | None]:
    """``error`` and its cause, ready to pickle: exceptions pickle without their
    ``__cause__``, so it travels beside, or not at all when it cannot be rebuilt
    (the remote traceback's text still travels)."""
    cause = error.__cause__
    try:
        pickle.loads(pickle.dumps(cause))
    except Exception:
        cause = None
    return error, cause


def restored_error(payload: Any) -> StageError:
    """The error a worker sent as :func:`portable_error`, its cause put back."""
    error, cause = payload
    error.__cause__ = cause
    return error  # type: ignore[no-any-return]


def portable(record: logging.LogRecord, stage: str, worker: int) -> logging.LogRecord:
    """``record`` made picklable (message formatted, no exception object) and
    marked with the stage worker that made it: ``stage`` and ``worker``
    attributes, which the user's own records lack."""
    if record.args:
        record.msg = record.getMessage()
        record.args = None
    record.exc_info = None
    fields = record.__dict__
    fields.setdefault("stage", stage)
    fields.setdefault("worker", worker)
    record.processName = f"{fields['stage']}-{worker}"
    return record


class StageFields(logging.Filter):
    """Gives a record of flowdsl's that is about no one stage (a warning about
    the whole flow) ``stage`` and ``worker`` attributes of ``None``, so a format
    that shows them works for every record of the ``flowdsl`` logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.setdefault("stage", None)
        record.__dict__.setdefault("worker", None)
        return True


def route_logging(handler: logging.Handler, levels: dict[str, int]) -> None:
    """Send every record of this process to ``handler`` alone, at the driver's
    levels (``levels`` of the root and ``flowdsl`` loggers)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levels.get("", logging.WARNING))
    lib = logging.getLogger("flowdsl")
    lib.setLevel(levels.get("flowdsl", logging.WARNING))
    for old in list(lib.handlers):
        if not isinstance(old, logging.NullHandler):
            lib.removeHandler(old)
    lib.propagate = True
