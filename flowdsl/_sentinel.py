"""The end-of-stream marker of the explicit API."""

from __future__ import annotations

from typing import Any

__all__ = ["Sentinel", "is_sentinel"]


class Sentinel(Exception):
    """Marks the end of a stream.

    A source that yields ``Sentinel`` ends its stream; a transform that returns it
    (or, with several outputs, a tuple holding it) stops: its outputs end, and
    the stages after it see the end of their stream.  It is also thrown into a
    Regulator's coroutine at end of stream, so a coroutine that buffers can catch
    it and flush (see
    :class:`Regulator`). A generator source does not need it: its stream ends
    when it returns.

    Examples:
        >>> from flowdsl import Sentinel, Source
        >>> def numbers():
        ...     yield from [1, 2, Sentinel, 3]
        >>> Source(numbers).collect()
        [1, 2]
    """

    def __repr__(self) -> str:
        return "sentinel"


def is_sentinel(x: Any) -> bool:
    if x is Sentinel or isinstance(x, Sentinel):
        return True
    return isinstance(x, (tuple, list)) and any(y is Sentinel or isinstance(y, Sentinel) for y in x)
