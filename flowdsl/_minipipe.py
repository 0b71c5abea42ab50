"""The minipipe-style explicit API (placeholder for Sentinel until the full API)."""

from __future__ import annotations

__all__ = ["Sentinel"]


class Sentinel(Exception):  # noqa: N818 - minipipe's name
    """Marks the end of a stream; thrown into a Regulator's coroutine to flush it."""
