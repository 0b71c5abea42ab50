"""Log records made in workers, sent to the driver's handlers.

A worker (a process or a Ray actor) replaces its logging handlers with one that
ships records to the driver, which hands them to its own handlers: one logging
set-up, the user's, for the whole flow.  Both executors use these two helpers.
"""

from __future__ import annotations

import logging

__all__ = ["portable", "route_logging"]


def portable(record: logging.LogRecord, worker: int) -> logging.LogRecord:
    """``record`` made picklable (message formatted, no exception object) and
    named after the stage worker that made it."""
    if record.args:
        record.msg = record.getMessage()
        record.args = None
    record.exc_info = None
    record.processName = f"{getattr(record, 'stage', '')}-{worker}"
    return record


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
