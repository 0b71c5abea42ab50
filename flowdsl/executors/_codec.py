"""Serialisation of batches: the standard pickle first, dill as the fallback.

Every message is one batch of items, serialised in the worker that produced it
(so an unpicklable item is that stage's error, not a silent drop in a feeder
thread).  The first byte says which pickler wrote it.
"""

from __future__ import annotations

import pickle
from typing import Any

import dill

__all__ = ["EOS", "decode", "encode", "find_unpicklable"]

EOS = b""  # the end-of-stream marker: no batch encodes to zero bytes
_PICKLE, _DILL = b"P", b"D"
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def encode(batch: list[Any]) -> bytes:
    """Serialise ``batch``; raise the pickler's error if neither pickler can."""
    try:
        return _PICKLE + pickle.dumps(batch, _PROTOCOL)
    except Exception:
        return _DILL + dill.dumps(batch, _PROTOCOL)


def decode(data: bytes) -> list[Any]:
    if data[:1] == _PICKLE:
        return pickle.loads(memoryview(data)[1:])
    return dill.loads(data[1:])


def find_unpicklable(batch: list[Any]) -> Any:
    """The first item of ``batch`` that neither pickler can serialise."""
    for item in batch:
        try:
            encode([item])
        except Exception:
            return item
    return None
