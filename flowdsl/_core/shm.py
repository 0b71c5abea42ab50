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
What a driver killed outright (SIGKILL) could not sweep, the next process
executor of this user removes when it starts (:func:`sweep_orphans`).

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

``THRESHOLD``: through two hops, shared memory beats the pipe from a few KiB per
buffer on; 64 KiB keeps small arrays in their message, since a received array
keeps its whole segment (up to about a message, 1 MB) alive as long as it lives.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import itertools
import logging
import mmap
import os
import stat
import weakref
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SHM_DIR",
    "THRESHOLD",
    "Receiver",
    "SegmentPool",
    "available",
    "new_prefix",
    "sweep",
    "sweep_orphans",
]

log = logging.getLogger("flowdsl")

SHM_DIR = "/dev/shm"
THRESHOLD = 64 * 1024  # buffers of at least this many bytes go through shared memory
POOL_SEGMENTS = 8  # segments a producer keeps mapped
POOL_BYTES = 256 << 20  # … and their bytes, beyond which old ones are let go
MAPPED_SEGMENTS = 16  # segments a consumer keeps mapped for reuse (and POOL_BYTES)
OWNER, HELD = 0, 1  # header bytes
HEADER = 64  # the first buffer starts here (and every buffer on a 64-byte boundary)
_MIN_SEGMENT = 256 << 10
_counter = itertools.count()


def available() -> bool:
    """True if segments can be made here (Linux with a writable ``/dev/shm``)."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK | os.X_OK)


def new_prefix() -> str:
    """A name prefix for the segments of one run."""
    return f"flowdsl-{os.getpid()}-{os.urandom(4).hex()}-"


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


def sweep_orphans() -> int:
    """Unlink the segments of runs whose driver is gone (killed outright, before
    its teardown could sweep); return how many.  Only regular files of this user
    named ``flowdsl-<pid>-…`` go, and only when no process has that pid: a live
    run's segments, a directory or a link planted under such a name stay."""
    removed = 0
    uid = os.getuid()
    with contextlib.suppress(OSError):
        for name in os.listdir(SHM_DIR):
            pid = _driver_of(name)
            if pid is None or _alive(pid):
                continue
            path = os.path.join(SHM_DIR, name)
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode) and info.st_uid == uid:
                    os.unlink(path)
                    removed += 1
    if removed:
        log.info("removed %d shared-memory segment(s) left by runs whose driver died", removed)
    return removed


def _driver_of(name: str) -> int | None:
    """The driver pid in a segment's name (``flowdsl-<pid>-<token>-…``), if it is one."""
    parts = name.split("-")
    if len(parts) < 4 or parts[0] != "flowdsl" or not parts[1].isdigit():
        return None
    return int(parts[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


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
            seg.map[start : start + n] = buf
        seg.map[HELD] = 1  # before the name leaves this process
        return os.path.basename(seg.path), list(zip(offsets, sizes, strict=True)), length

    def unhold(self, name: str) -> None:
        """Make segment ``name``, written but never sent, free again."""
        for seg in self.segments:
            if os.path.basename(seg.path) == name:
                seg.map[HELD] = 0

    def _take(self, length: int) -> _Segment:
        best = None
        for seg in self.segments:
            # not a segment far bigger than needed: a kept item would pin all of it
            if (
                length <= seg.size <= max(4 * length, _MIN_SEGMENT)
                and seg.map[HELD] == 0
                and (best is None or seg.size < best.size)
            ):
                best = seg
        if best is not None:
            self.segments.remove(best)
            self.segments.append(best)
            return best
        size = _rounded(max(length, _MIN_SEGMENT))
        while self.segments and (
            len(self.segments) >= POOL_SEGMENTS
            or sum(s.size for s in self.segments) + size > POOL_BYTES
        ):
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

    What a message's objects use is a view of the segment's mapping, through an
    object made for that message; when the last object built on it (an array, a
    memoryview) goes, a weak reference puts that view on a queue (no Python code
    runs in that callback, so it is safe anywhere), and :meth:`poll`, called on the
    consumer's own schedule, tells the producer.  Mappings are kept for the next
    message in the same segment: mapping anew costs a page fault per few pages.
    """

    def __init__(self) -> None:
        self._held: dict[int, tuple[Any, str]] = {}  # id(weak ref) -> (weak ref, name)
        self.dropped: collections.deque[Any] = collections.deque()
        self._maps: collections.OrderedDict[str, mmap.mmap] = collections.OrderedDict()
        self._in_use: set[str] = set()

    def attach(self, name: str, length: int) -> memoryview:
        """The first ``length`` bytes of segment ``name``, writable; the segment is
        held until every object built on this view is gone."""
        self.poll()
        seg_map = self._maps.get(name)
        if seg_map is None:
            seg_map = self._maps[name] = _map(name)
            self._trim()
        else:
            self._maps.move_to_end(name)
        view = (ctypes.c_char * length).from_buffer(seg_map)
        ref = weakref.ref(view, self.dropped.append)
        self._held[id(ref)] = (ref, name)
        self._in_use.add(name)
        return memoryview(view).cast("B")

    def poll(self) -> None:
        """Release the segments whose objects have all been freed."""
        while self.dropped:
            ref = self.dropped.popleft()
            _, name = self._held.pop(id(ref))
            self._in_use.discard(name)
            if not _release(os.path.join(SHM_DIR, name)):  # unlinked: no reuse to come
                self._unmap(name)

    def close(self) -> None:
        """Release what can be, and unmap every segment not in use."""
        self.poll()
        for name in [n for n in self._maps if n not in self._in_use]:
            self._unmap(name)

    def _trim(self) -> None:
        """Unmap the least recently used segments beyond the bounds (a producer may
        have let go of them: then only our mapping keeps their memory)."""
        size = sum(len(m) for m in self._maps.values())
        for name, seg_map in list(self._maps.items())[:-1]:
            if len(self._maps) <= MAPPED_SEGMENTS and size <= POOL_BYTES:
                break
            size -= len(seg_map)
            self._unmap(name)

    def _unmap(self, name: str) -> None:
        seg_map = self._maps.pop(name, None)
        if seg_map is not None and name not in self._in_use:
            seg_map.close()  # else it goes with the last object that uses it

    @property
    def held(self) -> int:
        """How many segments objects of this process still use."""
        return len(self._held)

    @property
    def mapped(self) -> int:
        """How many segments this process keeps mapped."""
        return len(self._maps)


def _map(name: str) -> mmap.mmap:
    fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size, flags=mmap.MAP_SHARED)
    finally:
        os.close(fd)


def _release(path: str) -> bool:
    """Tell the producer of segment ``path`` that we are done with it; unlink it if
    the producer has let go of it.  True if the segment may come back."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:  # swept, or unlinked by its producer
        return False
    except OSError as exc:  # the producer stops reusing it; the run's sweep unlinks it
        log.debug("cannot release %s: %s", path, exc)
        return False
    try:
        os.pwrite(fd, b"\0", HELD)
        gone = os.pread(fd, 1, OWNER) == b"\1"
    finally:
        os.close(fd)
    if gone:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return not gone


def _rounded(n: int) -> int:
    """``n`` rounded up to one of 8 sizes per power of two (so segments of close
    sizes get reused), and to whole pages."""
    step = max(mmap.PAGESIZE, 1 << max(0, n.bit_length() - 4))
    return (n + step - 1) // step * step
