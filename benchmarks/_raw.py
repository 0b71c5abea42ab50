"""The "raw ceiling": a pipeline written by hand for one job.

One process per stage worker, stages joined by OS pipes (``multiprocessing.Pipe``),
items moved in batches of 256 pickled with the standard pickle.  No supervision,
no error handling, no adaptive batching: what a careful programmer writes when
speed is all that matters, and so about the best a general library can approach
with the same design (processes, pickle, pipes).
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import Any

BATCH = 256
_EOS = b""
_ctx = mp.get_context("fork")


class _Link:
    """A pipe between two stages, shared by all their workers."""

    def __init__(self, producers: int, consumers: int) -> None:
        self.reader, self.writer = _ctx.Pipe(duplex=False)
        self.rlock, self.wlock = _ctx.Lock(), _ctx.Lock()
        self.live = _ctx.Value("i", producers)
        self.consumers = consumers

    def send(self, batch: list[Any]) -> None:
        data = pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
        with self.wlock:
            self.writer.send_bytes(data)

    def recv(self) -> list[Any] | None:
        with self.rlock:
            data = self.reader.recv_bytes()
        return None if data == _EOS else pickle.loads(data)

    def done(self) -> None:
        """One producer worker has finished; the last one ends the stream."""
        with self.live.get_lock():
            self.live.value -= 1
            last = self.live.value == 0
        if last:
            with self.wlock:
                for _ in range(self.consumers):
                    self.writer.send_bytes(_EOS)


def _source(items: Iterable[Any], out: _Link, batch: int) -> None:
    buf: list[Any] = []
    for x in items:
        buf.append(x)
        if len(buf) >= batch:
            out.send(buf)
            buf = []
    if buf:
        out.send(buf)
    out.done()


def _map(fn: Callable[[Any], Any], inp: _Link, out: _Link) -> None:
    while (items := inp.recv()) is not None:
        out.send([fn(x) for x in items])
    out.done()


def _reduce(fn: Callable[[Any, Any], Any], acc: Any, inp: _Link, result: Any) -> None:
    while (items := inp.recv()) is not None:
        for x in items:
            acc = fn(acc, x)
    result.send(acc)


def pipeline(
    items: Callable[[], Iterable[Any]],
    *stages: Callable[[Any], Any],
    workers: tuple[int, ...] | None = None,
    batch: int = BATCH,
) -> Iterator[Any]:
    """Yield ``stages[-1](...stages[0](x))`` for every ``x`` of ``items()``.

    ``items()`` runs in a source process, each stage in ``workers[i]`` processes;
    the results stream back to the caller.
    """
    workers = workers or (1,) * len(stages)
    links = [_Link(1, workers[0])]
    for i in range(len(stages)):
        links.append(_Link(workers[i], workers[i + 1] if i + 1 < len(stages) else 1))
    procs = [_ctx.Process(target=_source, args=(items(), links[0], batch))]
    for i, fn in enumerate(stages):
        procs += [
            _ctx.Process(target=_map, args=(fn, links[i], links[i + 1])) for _ in range(workers[i])
        ]
    for p in procs:
        p.start()
    last = links[-1]
    while (out := last.recv()) is not None:
        yield from out
    for p in procs:
        p.join()


def reduce_in_sink(
    items: Callable[[], Iterable[Any]],
    *stages: Callable[[Any], Any],
    sink: Callable[[Any, Any], Any],
    initial: Any,
    batch: int = BATCH,
) -> Any:
    """Run ``items() >> stages >> sink`` with the sink in its own process too:
    it folds every item into ``initial`` and sends the result back at the end."""
    links = [_Link(1, 1) for _ in range(len(stages) + 1)]
    result_r, result_w = _ctx.Pipe(duplex=False)
    procs = [_ctx.Process(target=_source, args=(items(), links[0], batch))]
    procs += [
        _ctx.Process(target=_map, args=(fn, links[i], links[i + 1])) for i, fn in enumerate(stages)
    ]
    procs.append(_ctx.Process(target=_reduce, args=(sink, initial, links[-1], result_w)))
    return _result_of(procs, result_r)


def _result_of(procs: list[Any], result: Any) -> Any:
    """Start ``procs``, wait for the one result the sink sends, join them all."""
    for p in procs:
        p.start()
    acc = result.recv()
    for p in procs:
        p.join()
    return acc


# -- the shared-memory ceiling (W3) ------------------------------------------------------
class _Slots:
    """One hop for arrays of ``nbytes``: ``count`` segments under ``/dev/shm``,
    mapped before the fork so both sides share them; the producer copies an
    array into a free segment and sends its index, the consumer reads the array
    where it is and sends the index back once done with it."""

    def __init__(self, count: int, nbytes: int) -> None:
        import mmap
        import os

        self.nbytes, self.maps = nbytes, []
        for i in range(count):
            path = f"/dev/shm/raw-ceiling-{os.getpid()}-{id(self)}-{i}"
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            try:
                os.posix_fallocate(fd, 0, nbytes)
                self.maps.append(mmap.mmap(fd, nbytes))
            finally:
                os.close(fd)
                os.unlink(path)  # the mappings keep the memory until the last goes
        self.full_r, self.full_w = _ctx.Pipe(duplex=False)
        self.free_r, self.free_w = _ctx.Pipe(duplex=False)
        for i in range(count):
            self.free_w.send_bytes(bytes([i]))

    def put(self, array: Any) -> None:
        import numpy as np

        i = self.free_r.recv_bytes()[0]
        np.frombuffer(self.maps[i], dtype=array.dtype, count=array.size)[:] = array.ravel()
        self.full_w.send_bytes(bytes([i]))

    def get(self, dtype: Any) -> tuple[int, Any] | None:
        import numpy as np

        data = self.full_r.recv_bytes()
        if data == _EOS:
            return None
        return data[0], np.frombuffer(self.maps[data[0]], dtype=dtype)

    def release(self, i: int) -> None:
        self.free_w.send_bytes(bytes([i]))

    def end(self) -> None:
        self.full_w.send_bytes(_EOS)


def _shm_source(items: Iterable[Any], out: _Slots) -> None:
    for x in items:
        out.put(x)
    out.end()


def _shm_map(fn: Callable[[Any], Any], dtype: Any, inp: _Slots, out: _Slots) -> None:
    while (got := inp.get(dtype)) is not None:
        i, x = got
        out.put(fn(x))
        inp.release(i)
    out.end()


def _shm_reduce(
    fn: Callable[[Any, Any], Any], acc: Any, dtype: Any, inp: _Slots, result: Any
) -> None:
    while (got := inp.get(dtype)) is not None:
        i, x = got
        acc = fn(acc, x)
        inp.release(i)
    result.send(acc)


def shm_reduce_in_sink(
    items: Callable[[], Iterable[Any]],
    stage: Callable[[Any], Any],
    *,
    sink: Callable[[Any, Any], Any],
    initial: Any,
    nbytes: int,
    dtype: Any,
    slots: int = 4,
) -> Any:
    """``items() >> stage >> sink`` for arrays of ``nbytes``, in three processes
    joined by two hops through shared memory: the best a careful programmer gets
    for big arrays (one copy per hop, made by the producer into a reused segment;
    the consumer reads in place)."""
    hops = [_Slots(slots, nbytes), _Slots(slots, nbytes)]
    result_r, result_w = _ctx.Pipe(duplex=False)
    procs = [
        _ctx.Process(target=_shm_source, args=(items(), hops[0])),
        _ctx.Process(target=_shm_map, args=(stage, dtype, hops[0], hops[1])),
        _ctx.Process(target=_shm_reduce, args=(sink, initial, dtype, hops[1], result_w)),
    ]
    return _result_of(procs, result_r)
