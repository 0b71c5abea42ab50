"""Channels: bounded, multi-producer, multi-consumer byte queues between processes.

A channel is an OS pipe guarded by two locks, with a semaphore counting free
slots; every wait on it wakes when the run is cancelled (:class:`Cancel`).
Producers write whole messages themselves (no feeder thread: a put that returns
has really been handed over), consumers compete for messages.  The end of
stream is counted: each producer worker calls :meth:`producer_done`, and the last
one puts one end-of-stream marker per consumer worker.
"""

from __future__ import annotations

import contextlib
import enum
import os
import pickle
from collections.abc import Iterator
from typing import Any

from multiprocess.connection import wait

from .._core.codec import EOS
from .._core.runner import Cancelled

__all__ = ["Cancel", "Channel", "ControlPipe", "Notice"]

TICK = 0.01  # seconds between looks at the cancel flag while waiting for a lock
# a channel holds at most this many bytes of messages (in the pipe and in shared
# memory), however many items its ``buffer`` allows: big items wait in few messages
CHANNEL_BYTES = 8 << 20


class Cancel:
    """The driver's request that a run's workers stop.

    A flag, and a pipe that becomes readable once it is set, so that a worker
    waiting for input wakes at once.  Workers look at it where they wait (and
    between batches), and leave by raising :class:`Cancelled` there, in their
    own code: user code is never interrupted by a signal handler.
    """

    def __init__(self, ctx: Any) -> None:
        self._flag = ctx.RawValue("b", 0)
        self.reader, self._writer = ctx.Pipe(duplex=False)

    def set(self) -> None:
        self._flag.value = 1
        with contextlib.suppress(OSError):
            self._writer.send_bytes(b"x")  # never read: the pipe stays readable

    def __bool__(self) -> bool:
        return bool(self._flag.value)

    def check(self) -> None:
        """Raise :class:`Cancelled` if the run is being cancelled."""
        if self._flag.value:
            raise Cancelled()

    def acquire(self, lock: Any) -> None:
        """Take ``lock`` (a lock, semaphore or condition), looking at the flag
        every :data:`TICK` seconds while it is taken by others."""
        if lock.acquire(False):  # the common case, and the cheapest call
            return
        while not lock.acquire(True, TICK):
            self.check()

    def wait(self, readers: list[Any], timeout: float | None = None) -> list[Any]:
        """The ``readers`` with data, once one has (or the run is cancelled, or
        ``timeout`` seconds have passed: then none)."""
        ready: list[Any] = wait([*readers, self.reader], timeout)
        self.check()
        return ready

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


class Channel:
    def __init__(
        self,
        ctx: Any,
        name: str,
        buffer: int,
        producers: int,
        consumers: int,
        max_batch: int,
        cancel: Cancel,
        min_batch: int = 1,
    ) -> None:
        self.name = name
        self.cancel = cancel
        # ``buffer`` bounds the items waiting: batches of at most ``batch_limit``
        # items, at most ``capacity`` batches.
        self.batch_limit = max(1, min(max_batch, buffer))
        # a batch may hold this many items whatever they cost: a concurrent
        # consumer's calls in flight at once
        self.min_batch = min(min_batch, self.batch_limit)
        self.capacity = max(1, buffer // self.batch_limit)
        # the batches it may hold now: fewer once its messages are known to be big
        # (see fit); the slots taken from it are held for the rest of the run
        self._room = ctx.RawValue("i", self.capacity)
        self._fitting = ctx.Lock()
        self.consumers = consumers
        # seconds per item measured by the consumers; producers size batches by it
        self.cost = ctx.Value("d", 1.0, lock=False)
        self.reader, self.writer = ctx.Pipe(duplex=False)
        self._rlock = ctx.Lock()
        self._wlock = ctx.Lock()
        self._slots = ctx.Semaphore(self.capacity)
        self._live = ctx.Value("i", producers)
        self._readers = ctx.Value("i", consumers)
        self._closed = ctx.Value("b", 0, lock=False)

    def fit(self, message_bytes: int) -> None:
        """Messages of about ``message_bytes`` bytes are coming: hold the channel
        to as many as fit in CHANNEL_BYTES (at least one).  The slots above that
        are taken for good, once a consumer has freed them."""
        room = max(1, CHANNEL_BYTES // max(1, message_bytes))
        if room >= self._room.value:  # the common case: nothing to do
            return
        cancel = self.cancel
        cancel.acquire(self._fitting)
        try:
            while self._room.value > room:
                # room first: a reader that compares the free slots with it may
                # then miss a message (and wait for it) but never see one not sent
                self._room.value -= 1
                try:
                    cancel.acquire(self._slots)
                except Cancelled:
                    self._room.value += 1
                    raise
        finally:
            self._fitting.release()

    def put(self, data: bytes) -> None:
        cancel = self.cancel
        cancel.acquire(self._slots)
        try:
            cancel.acquire(self._wlock)
        except Cancelled:
            self._slots.release()  # a slot taken is a message on its way
            raise
        try:
            self.writer.send_bytes(data)
        finally:
            self._wlock.release()

    def get(self) -> bytes:
        cancel, reader = self.cancel, self.reader
        cancel.acquire(self._rlock)
        try:
            # A message whose slot is taken is in the pipe or being written: read
            # it.  Otherwise wait for data or the cancel, whichever comes first.
            if not self._sent() and not reader.poll():
                cancel.wait([reader])
            data: bytes = reader.recv_bytes()
            if data != EOS:  # (end-of-stream markers take no slot)
                self._slots.release()
        finally:
            self._rlock.release()
        return data

    def _sent(self) -> bool:
        """Whether a message has been or is being written and not yet read (read
        with the read lock held; no system call where the platform has it)."""
        try:
            value: int = self._slots.get_value()
            room: int = self._room.value
            return value < room
        except NotImplementedError:  # macOS has no sem_getvalue
            return False

    def fill(self) -> float:
        """The share of the channel's batch slots in use (0 to 1)."""
        try:
            free: int = self._slots.get_value()
        except NotImplementedError:  # macOS has no sem_getvalue
            return 0.0
        room: int = self._room.value
        return max(0, room - free) / room

    def ready(self) -> bool:
        """True if a batch is waiting (a hint: another consumer may take it)."""
        return self._sent() or self.reader.poll(0)

    def producer_done(self) -> None:
        """One producer worker has ended; the last one ends the stream."""
        with self._live.get_lock():
            self._live.value -= 1
            last = self._live.value == 0
        if last:
            self.end()

    def end(self) -> None:
        """Put one end-of-stream marker per consumer worker.  The markers need no
        free slot: a stage may be its own consumer."""
        self.cancel.acquire(self._wlock)
        try:
            for _ in range(self.consumers):
                self.writer.send_bytes(EOS)
        finally:
            self._wlock.release()

    def reader_gone(self) -> None:
        """A consumer worker stopped reading before the end of the stream; when
        none is left the channel is closed and producers stop feeding it."""
        with self._readers.get_lock():
            self._readers.value -= 1
            if self._readers.value <= 0:
                self._closed.value = 1

    @property
    def closed(self) -> bool:
        return bool(self._closed.value)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


class Notice(enum.IntEnum):
    """What a worker tells the driver on the control pipe."""

    LOG = 0  # a log record, for the driver's handlers
    STOP = 1  # a stage raised StopFlow: the sources are to stop
    ERROR = 2  # a stage failed (the payload: records.portable_error)
    DONE = 3  # the worker has finished: its exit is not a death
    INTERRUPT = 4  # the stage raised KeyboardInterrupt: the run ends as on Ctrl-C
    RETIRED = 5  # the worker ran its max_items_per_worker: it is to be replaced


class ControlPipe:
    """Notices from workers to the driver: logs, StopFlow, errors, completion."""

    def __init__(self, ctx: Any) -> None:
        self.reader, self.writer = ctx.Pipe(duplex=False)
        self._wlock = ctx.Lock()
        self._holder = ctx.RawValue("i", 0)  # the pid writing, if any

    def send(self, notice: Notice, node: int, worker: int, payload: Any = None) -> None:
        data = pickle.dumps((notice, node, worker, payload))
        with self._wlock:
            self._holder.value = os.getpid()
            self.writer.send_bytes(data)
            self._holder.value = 0

    def release_for(self, pid: int) -> None:
        """Worker ``pid`` died: if it held the pipe, let the others write again."""
        if self._holder.value == pid:
            self._holder.value = 0
            self._wlock.release()

    def received(self) -> Iterator[tuple[Notice, int, int, Any]]:
        """The notices waiting, without blocking."""
        while self.reader.poll(0):
            yield pickle.loads(self.reader.recv_bytes())

    def close(self) -> None:
        self.reader.close()
        self.writer.close()
