"""Calls in flight: up to N calls of one stage at once, inside one worker.

An IO-bound stage (``concurrency=N``) does not wait for one item before taking
the next.  A coroutine function runs on the worker's own event loop
(:class:`EventLoop`, a thread that runs ``asyncio``); a plain function runs on N
threads.  Either way a call is a ``concurrent.futures.Future``, and
:class:`Calls` keeps them: it starts calls while fewer than N are running,
hands back the finished ones (in the order they were started, or as they
finish), and cancels and awaits the rest when the stage stops or fails.

This is the one part of the core that starts threads.  It never blocks without
looking at ``check`` (the executor's cancel) every :data:`TICK` seconds, and a
pipe becomes readable whenever a call finishes (:meth:`Calls.fileno`), so an
executor can wait for its input and for its calls at once.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .._waits import readable

if TYPE_CHECKING:
    import asyncio

__all__ = ["Calls", "EventLoop"]

TICK = 0.01  # seconds between looks at the executor's cancel while waiting
HOLD = 16  # finished calls an ordered stage may hold for their turn, per call it runs


class EventLoop:
    """An ``asyncio`` event loop running in a thread of its own, for one worker:
    its calls, and its hooks when they are coroutine functions."""

    def __init__(self, name: str) -> None:
        import asyncio  # here: most flows never start a loop, and asyncio is slow to import

        self.loop = asyncio.new_event_loop()
        self.tasks: set[asyncio.Task[Any]] = set()  # the calls running on the loop
        self._thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name=f"flowdsl-loop-{name}"
        )
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> Future[Any]:
        """Start ``coroutine`` as a task on the loop; its future."""
        import asyncio

        async def tracked() -> Any:
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            try:
                return await coroutine
            finally:
                self.tasks.discard(task)

        return asyncio.run_coroutine_threadsafe(tracked(), self.loop)

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coroutine`` on the loop and wait for its result."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def cancel_all(self) -> None:
        """Cancel every call on the loop and wait until each has finished
        (its ``finally`` blocks and ``async with`` exits have run)."""
        import asyncio

        async def cancel() -> None:
            tasks = [t for t in self.tasks if not t.done()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel())

    def close(self) -> None:
        """Cancel what still runs, close async generators, stop the thread."""
        if self.loop.is_closed():
            return
        self.cancel_all()
        with contextlib.suppress(RuntimeError):
            self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Calls:
    """Up to ``limit`` calls running, each a future with the item it is for.

    ``loop`` runs coroutines; without one, calls run on ``limit`` threads.
    ``check`` is called while waiting (it raises to leave the wait).  Where the
    results leave in order, a call that finished waits for those started before
    it without taking a running call's place, so one slow call does not stop the
    others; up to ``HOLD * limit`` calls are held or running at once.
    """

    def __init__(
        self, name: str, limit: int, loop: EventLoop | None, check: Callable[[], None] | None = None
    ) -> None:
        self.limit = limit
        self.loop = loop
        self.check = check
        self._pool = (
            None
            if loop is not None
            else ThreadPoolExecutor(max_workers=limit, thread_name_prefix=f"flowdsl-{name}")
        )
        self._running: dict[int, tuple[Any, Future[Any]]] = {}  # key: (item, future)
        self._order: deque[int] = deque()  # keys in the order they were started
        self._finished: deque[int] = deque()  # keys in the order they finished
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._next = 0
        self.max_in_flight = 0  # the most running at once
        # the calls running, by future (a retry reuses its key, while the done
        # callback of its first call may still be on its way): when each began
        self._began: dict[Future[Any], float] = {}
        self._call_seconds = 0.0  # of the calls that have finished

    def __len__(self) -> int:
        """Calls not handed back yet: running, or finished and waiting."""
        return len(self._running)

    @property
    def running(self) -> int:
        """Calls started and not finished."""
        return len(self._began)

    @property
    def full(self) -> bool:
        return self.running >= self.limit or len(self._running) >= HOLD * self.limit

    def fileno(self) -> int:
        """Readable once a call has finished (for an executor's wait)."""
        return self._wake_r

    def start(self, item: Any, call: Callable[[], Any], key: int | None = None) -> int:
        """Start ``call()`` (a coroutine function, or a plain one run on a thread)
        for ``item``; ``key`` keeps the place of a call started again (a retry)."""
        if key is None:
            key, self._next = self._next, self._next + 1
            self._order.append(key)
        began = time.perf_counter()
        future = self.loop.submit(call()) if self.loop is not None else self._pool.submit(call)  # type: ignore[union-attr]
        with self._lock:  # before its callback, which may run at once
            self._began[future] = began
        self.max_in_flight = max(self.max_in_flight, self.running)
        self._running[key] = (item, future)
        future.add_done_callback(functools.partial(self._done, key))
        return key

    def _done(self, key: int, future: Future[Any]) -> None:
        with self._lock:
            self._call_seconds += time.perf_counter() - self._began.pop(future)
            self._finished.append(key)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def finished(self, ordered: bool) -> list[tuple[int, Any, Future[Any]]]:
        """The calls that have finished, removed: ``(key, item, future)``; with
        ``ordered``, only those started before every call still running."""
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        with self._lock:
            keys, self._finished = self._finished, deque()
        if ordered:
            out = []
            while self._order and self._running[self._order[0]][1].done():
                out.append(self._order.popleft())
        else:
            out = [k for k in keys if k in self._running and self._running[k][1].done()]
            if out:
                taken = set(out)
                self._order = deque(k for k in self._order if k not in taken)
        return [(k, *self._running.pop(k)) for k in out]

    def again(
        self,
        key: int,
        item: Any,
        call: Callable[[], Any],
        later: list[tuple[int, Any, Future[Any]]],
    ) -> None:
        """Start the call of ``key`` again (a retry) in its place: first in line,
        before ``later``, the finished calls after it that were not used yet."""
        for k, x, future in reversed(later):
            self._running[k] = (x, future)
            self._order.appendleft(k)
        self._order.appendleft(key)
        self.start(item, call, key)

    def wait(self) -> None:
        """Block until a call finishes (looking at ``check`` meanwhile)."""
        while True:
            with self._lock:
                if self._finished or not self._running:
                    return
            if readable(self._wake_r, TICK):
                return
            if self.check is not None:
                self.check()

    def cancel(self) -> list[Any]:
        """Cancel every call in flight and wait until each has ended; the items
        they were for.  (A call on a thread cannot be interrupted: it runs to its
        end, and its result is dropped.)"""
        items = [item for item, _ in self._running.values()]
        if self.loop is not None:
            self.loop.cancel_all()
        for _, future in self._running.values():
            future.cancel()
        for _, future in self._running.values():
            with contextlib.suppress(BaseException):
                future.exception()  # waits for a running thread to return
        self._running.clear()
        self._order.clear()
        with self._lock:
            self._finished.clear()
        return items

    def close(self) -> None:
        """Cancel what runs, stop the threads, close the wake-up pipe."""
        self.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def busy(self) -> float:
        """The seconds of calls so far, over ``limit``: how long the worker's
        ``limit`` call places were busy, on average, so that a worker whose
        places are all busy all the time counts as busy all the time."""
        now = time.perf_counter()
        with self._lock:
            seconds = self._call_seconds + sum(now - t for t in self._began.values())
        return seconds / self.limit
