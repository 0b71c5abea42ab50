"""Shared-memory segments: big buffers travel beside the pipe, not through it.

A producer copies the out-of-band buffers of one message (pickle protocol 5:
numpy arrays, big ``bytes``, ``bytearray`` and ``memoryview`` objects) into one
segment, a file under ``/dev/shm``, and sends only its name and the buffers'
offsets on the pipe.  The consumer maps the segment and reads the buffers where
they are: one copy per hop, made by the producer.

Segments are files created directly (``os.open``, ``posix_fallocate``, ``mmap``),
not ``multiprocessing.shared_memory`` objects, so no resource tracker is involved.
Their names start with a prefix unique to the run, and the driver unlinks every
file with that prefix once all workers have exited: whatever a killed worker,
a cancelled run or an unread message left behind is removed by that one sweep.

Each producer keeps a small pool of segments and reuses those that consumers
have released (fresh tmpfs pages cost more than the copy itself).  A segment
starts with a header of two bytes, each written by one side only:

- ``OWNER``: 0 while the segment is in its producer's pool, 1 once the producer
  has let go of it (pool full, or the producer is exiting);
- ``HELD``: set to 1 by the producer before it sends the segment's name, back to 0
  by the consumer once every object built on the segment has been freed.

Whoever writes its byte second sees the other's: the producer that lets go of a
segment still held leaves the unlink to the consumer, and a consumer releasing a
segment whose producer let go unlinks it (both may: the second unlink finds
nothing).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import mmap
import os
import secrets
import weakref
from dataclasses import dataclass
from typing import Any

__all__ = ["SHM_DIR", "THRESHOLD", "Receiver", "SegmentPool", "available", "new_prefix",
           "sweep"]

log = logging.getLogger("flowdsl")

SHM_DIR = "/dev/shm"
THRESHOLD = 64 * 1024  # buffers of at least this many bytes go through shared memory
POOL_SEGMENTS = 8  # segments a producer keeps mapped
POOL_BYTES = 256 << 20  # … and their bytes, beyond which old ones are let go
OWNER, HELD = 0, 1  # header bytes
HEADER = 64  # the first buffer starts here (and every buffer on a 64-byte boundary)
_MIN_SEGMENT = 1 << 20
_counter = itertools.count()


def available() -> bool:
    """True if segments can be made here (Linux with a writable ``/dev/shm``)."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK | os.X_OK)


def new_prefix() -> str:
    """A name prefix for the segments of one run."""
    return f"flowdsl-{os.getpid()}-{secrets.token_hex(4)}-"


def sweep(prefix: str) -> int:
    """Unlink every segment whose name starts with ``prefix``; return how many."""
    removed = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(SHM_DIR):
            if name.startswith(prefix):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(SHM_DIR, name))
                    removed += 1
    return removed


def layout(sizes: list[int]) -> tuple[list[int], int]:
    """The offset of each buffer in a segment, and the bytes the segment needs."""
    offsets, end = [], HEADER
    for n in sizes:
        offsets.append(end)
        end = (end + n + 63) & ~63
    return offsets, end


@dataclass(eq=False)
class _Segment:
    path: str
    fd: int
    size: int
    map: mmap.mmap


class SegmentPool:
    """The segments one producer process writes into."""

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}{os.getpid()}-"
        self.segments: list[_Segment] = []  # least recently used first

    def write(self, buffers: list[memoryview]) -> tuple[str, list[tuple[int, int]], int]:
        """Copy ``buffers`` into a free segment; mark it held and return its name,
        the (offset, length) of each buffer and the bytes to map.  Raises
        ``OSError`` when no segment can be had (``/dev/shm`` full, say)."""
        sizes = [b.nbytes for b in buffers]
        offsets, length = layout(sizes)
        seg = self._take(length)
        for buf, start, n in zip(buffers, offsets, sizes, strict=True):
            seg.map[start:start + n] = buf
        seg.map[HELD] = 1  # before the name leaves this process
        return os.path.basename(seg.path), list(zip(offsets, sizes, strict=True)), length

    def _take(self, length: int) -> _Segment:
        best = None
        for seg in self.segments:
            if seg.size >= length and seg.map[HELD] == 0 and (
                    best is None or seg.size < best.size):
                best = seg
        if best is not None:
            self.segments.remove(best)
            self.segments.append(best)
            return best
        size = _rounded(max(length, _MIN_SEGMENT))
        while self.segments and (len(self.segments) >= POOL_SEGMENTS
                                 or sum(s.size for s in self.segments) + size > POOL_BYTES):
            self._let_go(self.segments.pop(0))
        seg = self._create(size)
        self.segments.append(seg)
        return seg

    def _create(self, size: int) -> _Segment:
        path = os.path.join(SHM_DIR, f"{self.prefix}{next(_counter)}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # allocate every page now: a write to a mapped page tmpfs cannot back
            # would be a SIGBUS, this is an OSError
            os.posix_fallocate(fd, 0, size)
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            seg_map = mmap.mmap(fd, size, flags=flags)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        return _Segment(path, fd, size, seg_map)

    def _let_go(self, seg: _Segment) -> None:
        """Give up a segment: unlink it unless a consumer still holds it, in which
        case the consumer unlinks it when it releases it."""
        try:
            os.pwrite(seg.fd, b"\1", OWNER)
            if os.pread(seg.fd, 1, HELD) == b"\0":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(seg.path)
        finally:
            seg.map.close()
            os.close(seg.fd)

    def close(self) -> None:
        """Let go of every segment (the producer is done)."""
        while self.segments:
            with contextlib.suppress(OSError):
                self._let_go(self.segments.pop())


class Receiver:
    """The segments one consumer process has mapped, released as their objects die.

    A mapping lives as long as any object built on it (an array, a memoryview).
    When the last one goes, a weak reference puts the mapping on a queue (no
    Python code runs in that callback, so it is safe anywhere); :meth:`poll`,
    called on the consumer's own schedule, tells the producers.
    """

    def __init__(self) -> None:
        self._held: dict[int, tuple[Any, str]] = {}
        self._dropped: collections.deque[Any] = collections.deque()

    def attach(self, name: str, length: int) -> mmap.mmap:
        """Map segment ``name`` (``length`` bytes), writable and private to us."""
        self.poll()
        path = os.path.join(SHM_DIR, name)
        fd = os.open(path, os.O_RDWR)
        try:
            seg_map = mmap.mmap(fd, length, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        ref = weakref.ref(seg_map, self._dropped.append)
        self._held[id(ref)] = (ref, path)
        return seg_map

    def poll(self) -> None:
        """Release the segments whose objects have all been freed."""
        while self._dropped:
            ref = self._dropped.popleft()
            _, path = self._held.pop(id(ref))
            _release(path)

    @property
    def held(self) -> int:
        return len(self._held)


def _release(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:  # swept, or unlinked by its producer
        return
    except OSError as exc:  # the producer stops reusing it; the run's sweep unlinks it
        log.debug("cannot release %s: %s", path, exc)
        return
    try:
        os.pwrite(fd, b"\0", HELD)
        gone = os.pread(fd, 1, OWNER) == b"\1"
    finally:
        os.close(fd)
    if gone:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _rounded(n: int) -> int:
    """``n`` rounded up to one of 8 sizes per power of two (so segments of close
    sizes get reused), and to whole pages."""
    step = max(mmap.PAGESIZE, 1 << max(0, n.bit_length() - 4))
    return (n + step - 1) // step * step
