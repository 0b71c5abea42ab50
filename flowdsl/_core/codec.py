"""Serialisation of batches: the standard pickle first, dill as the fallback.

Every message is one batch of items, serialised in the worker that produced it
(so an unpicklable item is that stage's error, not a silent drop in a feeder
thread), and it names that worker: a batch that cannot be read where it arrives
is the producing stage's error too (:func:`undecodable`), whoever reads it.  The
first byte says how it was written, the next four who wrote it (node, worker):

- ``P``: the standard pickle, everything in the message (the common case);
- ``Q``: the standard pickle with a hook for big ``bytes``/``bytearray`` and for
  ``memoryview`` objects, which neither pickler takes on its own;
- ``D``: dill, with the same hook;
- ``S``: any of the above whose big buffers are in a shared-memory segment
  (see :mod:`._shm`): the message holds the segment's name and the pickle stream;
- ``B``: any of the above whose big buffers travel *beside* the message: the
  message is ``(bytes, buffers)``, for a transport that stores buffers itself
  (Ray's object store keeps them without a copy, and hands them to a reader on
  any node as read-only memory).

Big buffers (pickle protocol 5's out-of-band buffers, from
:data:`~._shm.THRESHOLD` bytes: numpy arrays and ``memoryview`` objects wherever
they are, ``bytes``/``bytearray`` that are an item or directly inside one) go
through shared memory when the run has it, or beside the message where the
transport takes them; a consumer's arrays and memoryviews then use that memory
in place (writable if the sent object was and the memory is), while ``bytes``
and ``bytearray`` are copied out of it.  Everything smaller, and everything when
neither is available, travels in the message as before.

A batch of numpy scalars of one type (what a ``batch=n`` stage's array spreads
into) travels as one array and is read back as the same scalars: the standard
pickle writes each scalar with its dtype, some 40 times slower.
"""

from __future__ import annotations

import io
import logging
import pickle
import struct
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import dill

from ..errors import StageError
from . import shm as _shm
from .runner import describe

__all__ = [
    "DRIVER",
    "EOS",
    "Codec",
    "Undecodable",
    "decode",
    "encode",
    "encode_beside",
    "find_unpicklable",
    "split",
    "undecodable",
    "unsendable",
]

log = logging.getLogger("flowdsl")

EOS = b""  # the end-of-stream marker: no batch encodes to zero bytes
_PICKLE, _HOOKED, _DILL, _SHARED, _BESIDE = b"P", b"Q", b"D", b"S", b"B"
_ORIGIN = struct.Struct("<HH")  # the node and worker that wrote a message
HEAD = 1 + _ORIGIN.size  # bytes before the body of a message
DRIVER = (0xFFFF, 0)  # the origin of what the driver sends: seeds
_PROTOCOL = pickle.HIGHEST_PROTOCOL
_BLOBS = (bytes, bytearray)
_FEW = 16  # entries of a container the search for big bytes looks into
# memoryview formats that memoryview.cast rebuilds
_CASTABLE = frozenset("cbB?hHiIlLqQnNfdeP") | {"@" + c for c in "cbB?hHiIlLqQnNfdeP"}


class Undecodable(Exception):
    """A message could not be read; ``origin`` is the (node, worker) that wrote it.
    Turned into the producing stage's error by :func:`undecodable`."""

    def __init__(self, origin: tuple[int, int], cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.origin = origin
        self.cause = cause
        self.text = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))


def encode(batch: list[Any], origin: tuple[int, int] = DRIVER) -> bytes:
    """Serialise ``batch`` into one message written by ``origin``; raise the
    pickler's error if neither pickler can."""
    head = _ORIGIN.pack(*origin)
    try:
        return _PICKLE + head + pickle.dumps(_packed(batch), _PROTOCOL)
    except Exception:
        tag, stream, _ = _dump_hooked(batch, False)
        return tag + head + stream


Message = bytes | tuple[bytes, list[Any]]  # a message with its buffers beside it


def encode_beside(batch: list[Any], origin: tuple[int, int] = DRIVER) -> Message:
    """Serialise ``batch`` for a transport that stores big buffers itself: the
    message alone when it has none, else ``(message, buffers)``, the buffers as
    :class:`pickle.PickleBuffer` objects (which Ray's serialiser keeps out of
    band).  Raise the pickler's error if neither pickler can."""
    tag, stream, buffers = _pickled(batch, [], whole=True)
    head = _ORIGIN.pack(*origin)
    if not buffers:
        return tag + head + stream
    return _BESIDE + head + tag + stream, buffers


def decode(data: Message, receiver: _shm.Receiver | None = None) -> list[Any]:
    """The batch in message ``data``; ``receiver`` maps its segment, if it has one.
    Raises :class:`Undecodable` if it cannot be read."""
    data, beside = data if isinstance(data, tuple) else (data, None)
    try:
        if data[:1] == _PICKLE:
            return _unpacked(pickle.loads(memoryview(data)[HEAD:]))
        if data[:1] == _SHARED:
            return _unpacked(_decode_shared(data, receiver or _shm.Receiver()))
        if data[:1] == _BESIDE:
            view = memoryview(data)
            return _unpacked(_load(bytes(view[HEAD : HEAD + 1]), view[HEAD + 1 :], beside))
        return _load(data[:1], memoryview(data)[HEAD:], None)
    except Exception as exc:
        raise Undecodable(_ORIGIN.unpack_from(data, 1), exc) from exc


def split(data: Message) -> list[Message]:
    """Message ``data`` as one message per item, each from the same writer: for
    a stage that takes its items one at a time (``timeout``, ``restarts``) where
    the transport cannot split batches on the way (Ray's object store)."""
    origin = _ORIGIN.unpack_from(data[0] if isinstance(data, tuple) else data, 1)
    return [encode_beside([x], origin) for x in decode(data)]


def undecodable(exc: Undecodable, names: Sequence[str], where: str) -> StageError:
    """The error of the stage whose output could not be read ``where`` (``"stage
    'x'"`` or ``"the driver"``), with what went wrong."""
    node, worker = exc.origin
    stage = names[node] if node < len(names) else "seed"
    return StageError(
        stage, None, worker, exc.text, f"an output could not be deserialised in {where}: {exc}"
    )


def find_unpicklable(batch: list[Any]) -> Any:
    """The first item of ``batch`` that neither pickler can serialise."""
    for item in batch:
        try:
            encode([item])
        except Exception:
            return item
    return None


def unsendable(stage: str, worker: int, batch: list[Any], exc: BaseException) -> StageError:
    """The error of stage ``stage`` when its output ``batch`` cannot be encoded
    (raise it from ``exc``, inside the ``except`` that caught it): it names the
    first item that cannot travel."""
    bad = describe(find_unpicklable(batch))
    return StageError(
        stage,
        bad,
        worker,
        traceback.format_exc(),
        f"output cannot be serialised to send downstream: {type(exc).__name__}: {exc}",
    )


class Codec:
    """Encodes and decodes the messages of one process.

    ``shm_prefix`` names the run's segments; ``None`` keeps every message in the
    pipe.  ``origin`` is the (node, worker) its messages say wrote them; ``names``
    (of every node) and ``where`` (``"the driver"``, ``"stage 'x'"``) name, when a
    message cannot be read here, the stage that wrote it and this reader.  A codec
    keeps this process's segments: :meth:`close` it at the end.
    """

    def __init__(
        self,
        shm_prefix: str | None,
        origin: tuple[int, int] = DRIVER,
        *,
        names: Sequence[str] = (),
        where: str = "the driver",
    ) -> None:
        self.origin = origin
        self.names, self.where = names, where
        self.head = _ORIGIN.pack(*origin)
        self.pool = None if shm_prefix is None else _shm.SegmentPool(shm_prefix)
        self.receiver = _shm.Receiver()
        self._taken: list[memoryview] = []
        self._take = _taker(self._taken)

    def encode(self, batch: list[Any], copies: int = 1) -> tuple[list[bytes], int]:
        """``copies`` messages holding ``batch``, one per channel it goes to (each
        with its own segment, if it needs one), and the bytes of one: its pickle
        stream and its out-of-band buffers."""
        if self.pool is None:
            data = encode(batch, self.origin)
            return [data] * copies, len(data)
        if self.receiver.dropped:
            self.receiver.poll()
        tag, stream, buffers = _pickled(batch, self._taken, self._take)
        if not buffers:
            data = tag + self.head + stream
            return [data] * copies, len(data)
        nbytes = len(stream) + sum(b.nbytes for b in buffers)
        written: list[str] = []
        try:
            return [self._shared(tag, stream, buffers, written) for _ in range(copies)], nbytes
        except OSError as exc:  # no room in /dev/shm, too many files, …
            log.debug("shared memory unavailable (%s): the batch goes through the pipe", exc)
            for name in written:  # never sent: free for reuse
                self.pool.unhold(name)
            data = encode(batch, self.origin)
            return [data] * copies, len(data)

    def _shared(
        self, tag: bytes, stream: bytes, buffers: list[memoryview], written: list[str]
    ) -> bytes:
        assert self.pool is not None
        name, spans, length = self.pool.write(buffers)
        written.append(name)
        meta = pickle.dumps((name, spans, length), _PROTOCOL)
        return b"".join((_SHARED, self.head, len(meta).to_bytes(4, "little"), meta, tag, stream))

    def decode(self, data: Message) -> list[Any]:
        """The batch in ``data``; a batch that cannot be read is a
        :class:`~flowdsl.StageError` of the stage that wrote it."""
        try:
            return decode(data, self.receiver)
        except Undecodable as exc:
            raise undecodable(exc, self.names, self.where) from exc.cause

    def close(self) -> None:
        """Release what this process holds and let go of its segments."""
        self.receiver.close()
        if self.pool is not None:
            self.pool.close()


# -- pickling ------------------------------------------------------------------------------
def _pickled(
    batch: list[Any], taken: list[Any], take: Any = None, *, whole: bool = False
) -> tuple[bytes, bytes, list[Any]]:
    """(tag, stream, big buffers) for ``batch``: the standard pickle with its big
    buffers out of band, else the hooked picklers.  ``take`` is a callback of
    :func:`_taker` filling ``taken`` (a codec keeps one, to save making it).
    The buffers are memoryviews, or with ``whole`` the pickler's own
    :class:`pickle.PickleBuffer` objects (to be pickled again, out of band)."""
    try:
        stream = pickle.dumps(
            _packed(batch), _PROTOCOL, buffer_callback=take or _taker(taken, whole)
        )
    except Exception:
        taken.clear()
        return _dump_hooked(batch, True, whole)
    if not taken and len(stream) < _shm.THRESHOLD:  # the common case
        return _PICKLE, stream, []
    found = _second_look(batch, stream, taken[:], whole)
    taken.clear()
    return found


def _packed(batch: list[Any]) -> Any:
    """``batch``, or where it is two or more numpy scalars of one type, the array
    of them: pickled in one piece, not one reduction per scalar (which writes
    each with its dtype, some 40 times slower).  :func:`_unpacked` undoes it."""
    kind = type(batch[0]) if len(batch) > 1 else None
    if (
        kind is not None
        and kind.__module__ == "numpy"  # so numpy is loaded
        and kind in _scalar_types()
        and len(set(map(type, batch))) == 1
    ):
        return sys.modules["numpy"].array(batch, dtype=kind)
    return batch


def _unpacked(batch: Any) -> list[Any]:
    """The items of a decoded batch: a packed array gives back its scalars, the
    same type and bits as those sent."""
    return batch if type(batch) is list else list(batch)


_SCALARS: frozenset[type] = frozenset()


def _scalar_types() -> frozenset[type]:
    """numpy's number scalars (booleans, integers, floats and complex numbers of
    a fixed width); asked only once a batch holds a numpy object (flowdsl never
    imports numpy itself)."""
    global _SCALARS
    if not _SCALARS and "numpy" in sys.modules:
        np = sys.modules["numpy"]
        names = "bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64"
        names += " float16 float32 float64 complex64 complex128"
        kinds = [getattr(np, name, None) for name in names.split()]
        _SCALARS = frozenset(k for k in kinds if isinstance(k, type))
    return _SCALARS


def _second_look(
    batch: list[Any], stream: bytes, buffers: list[Any], whole: bool = False
) -> tuple[bytes, bytes, list[Any]]:
    """(tag, stream, out-of-band buffers) for a batch the standard pickle wrote as
    ``stream`` and ``buffers``: if a big ``bytes`` or ``bytearray`` stayed in the
    stream, pickle again with the hook that takes it out."""
    if len(stream) >= _shm.THRESHOLD and _has_big_bytes(batch):
        more: list[Any] = []
        hooked = _dump_with(_Pickler, batch, _taker(more, whole))
        if len(more) > len(buffers):
            return _HOOKED, hooked, more
    return _PICKLE, stream, buffers


def _has_big_bytes(batch: list[Any]) -> bool:
    """Whether an item is a big ``bytes``/``bytearray``, or holds one directly in a
    tuple, list or dict of a few entries.  Looking deeper would cost more than
    it saves on batches of many small objects (the hook is a Python call per
    object), so a big ``bytes`` deeper inside travels in the message."""
    for item in batch:
        kind = type(item)
        if kind is bytes or kind is bytearray:
            if len(item) >= _shm.THRESHOLD:
                return True
        elif kind is tuple or kind is list or kind is dict:
            inside = item.values() if kind is dict else item
            if len(item) <= _FEW and any(_is_big_bytes(x) for x in inside):
                return True
    return False


def _is_big_bytes(x: Any) -> bool:
    return type(x) in _BLOBS and len(x) >= _shm.THRESHOLD


def _dump_hooked(
    batch: list[Any], out_of_band: bool, whole: bool = False
) -> tuple[bytes, bytes, list[Any]]:
    """The standard pickle with the hook, else dill with it (whose error is raised)."""
    buffers: list[Any] = []
    try:
        stream = _dump_with(_Pickler, batch, _taker(buffers, whole) if out_of_band else None)
        return _HOOKED, stream, buffers
    except Exception:
        buffers.clear()
    stream = _dump_with(_DillPickler, batch, _taker(buffers, whole) if out_of_band else None)
    return _DILL, stream, buffers


def _taker(into: list[Any], whole: bool = False) -> Any:
    """A ``buffer_callback`` that takes buffers of ``THRESHOLD`` bytes or more out of
    the stream, into ``into``: as memoryviews, or with ``whole`` as the pickler's
    :class:`pickle.PickleBuffer` itself."""

    def take(buf: pickle.PickleBuffer) -> bool:
        try:
            raw = buf.raw()
        except BufferError:  # not contiguous: written in-band
            return True
        if raw.nbytes < _shm.THRESHOLD:
            return True
        into.append(buf if whole else raw)
        return False

    return take


def _dump_with(pickler: Any, batch: list[Any], callback: Any) -> bytes:
    f = io.BytesIO()
    pickler(f, _PROTOCOL, buffer_callback=callback).dump(batch)
    return f.getvalue()


def _persistent_id(obj: Any) -> Any:
    """Big ``bytes``/``bytearray`` and every ``memoryview`` travel as a
    :class:`pickle.PickleBuffer` (so out-of-band when big), rebuilt on load."""
    kind = type(obj)
    if kind is bytes or kind is bytearray:
        if len(obj) < _shm.THRESHOLD:
            return None
        return ("b" if kind is bytes else "a", pickle.PickleBuffer(obj))
    if kind is memoryview and obj.format in _CASTABLE and (obj.ndim == 1 or obj.nbytes):
        if not obj.c_contiguous:
            obj = memoryview(bytes(obj) if obj.readonly else bytearray(obj))
        return ("m", pickle.PickleBuffer(obj), obj.format, obj.shape)
    return None


def _persistent_load(pid: Any) -> Any:
    kind, buf, *shape = pid
    if kind == "b":
        return bytes(buf)
    if kind == "a":
        return bytearray(buf)
    fmt, dims = shape
    view = memoryview(buf).cast("B")
    return view.cast(fmt) if len(dims) == 1 else view.cast(fmt, dims)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        return _persistent_id(obj)


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        return _persistent_load(pid)


class _DillPickler(dill.Pickler):  # type: ignore[misc]
    def persistent_id(self, obj: Any) -> Any:
        return _persistent_id(obj)


class _DillUnpickler(dill.Unpickler):  # type: ignore[misc]
    def persistent_load(self, pid: Any) -> Any:
        return _persistent_load(pid)


def _load(tag: bytes, stream: Any, buffers: list[memoryview] | None) -> list[Any]:
    if tag == _PICKLE:
        return pickle.loads(stream, buffers=buffers)  # type: ignore[no-any-return]
    unpickler = _Unpickler if tag == _HOOKED else _DillUnpickler
    return unpickler(io.BytesIO(stream), buffers=buffers).load()  # type: ignore[no-any-return]


def _decode_shared(data: bytes, receiver: _shm.Receiver) -> list[Any]:
    view = memoryview(data)[HEAD:]
    n = int.from_bytes(view[:4], "little")
    name, spans, length = pickle.loads(view[4 : 4 + n])
    whole = receiver.attach(name, length)
    buffers = [whole[start : start + size] for start, size in spans]
    return _load(bytes(view[4 + n : 5 + n]), view[5 + n :], buffers)
