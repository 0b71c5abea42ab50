"""Waiting for a file descriptor, whatever its number.

``select.select`` refuses descriptors from 1024 on, and a process inherits every
file its parent had open, so a worker of a driver with many open files has only
high numbers: ``poll`` has no such limit.
"""

from __future__ import annotations

import select

__all__ = ["readable"]


def readable(fd: int, timeout: float | None) -> bool:
    """Whether ``fd`` is readable or hung up, waiting up to ``timeout`` seconds
    (``None``: as long as it takes)."""
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999))))
