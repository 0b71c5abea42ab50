"""The Ray side of the ray executor: one actor per worker of a stage.

An actor is transport for one stage machine (:mod:`flowdsl._core.machine`): each
call is one event of the machine (open, pull, a batch, the end of an input, stop,
the count of a loop), and the driver decides what each actor gets and when.
Every call returns a small *meta* dict first (status, the in-flight change for
the loops, the output ports that ended, figures, log records), then one list of
items per output port, so the driver reads the meta and passes the item lists
on as object references without looking inside them.  Items travel as messages
of the codec, made and read here, their big buffers (arrays, large ``bytes``)
beside the message: Ray stores those in its object store as they are, and a
reader on any node maps them without a copy.

This module is imported by the Ray worker processes and never imports ray itself.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
import time
import traceback
from typing import Any

import dill

from .._core.codec import Codec, Message, encode_beside, unsendable
from .._core.machine import RUNNING, Machine
from .._core.records import portable, portable_error, route_logging
from ..errors import StageError

__all__ = ["StageActor"]

LINGER = 0.005  # seconds a source may spend filling one batch
FIRST_BYTES = 1 << 20  # a batch of big items stops growing here, before they are measured


class StageActor:
    """Worker ``worker`` of one stage.  ``code`` is the stage's node and its loop
    weights as dill bytes; ``paths`` are the driver's ``sys.path`` entries (as a
    spawned process inherits them), so stages defined in scripts and test modules
    can be found."""

    def __init__(self, code: bytes, worker: int, paths: list[str], levels: dict[str, int]) -> None:
        self.code, self.worker, self.levels = code, worker, levels
        for path in paths:
            if path not in sys.path:
                sys.path.append(path)
        self.records: list[logging.LogRecord] = []
        self.machine: Machine | None = None
        self.origin = (0, worker)
        self.codec = Codec(None)
        self.error: Any = None
        self.busy = 0.0
        self.cost = 0.0  # seconds per item of the last call
        self.item_bytes = 0.0  # serialised size of an output item, last measured
        self.restarted = False  # a new life after a death: opened by its first call
        self.place: dict[str, Any] = {}  # this life's pid and node, sent with every reply
        self.termed = False  # local_term has run
        self.life = os.urandom(6).hex()  # tells this life from one Ray restarted
        self._capture_logging()

    # -- calls from the driver: one event of the machine each -------------------------
    def open(self) -> Any:
        """Unpickle the stage and run ``local_init`` (a gate lets its seed in);
        an actor whose stage has ended stays so."""
        if not self.termed:
            self._open()
        return self._reply()

    def pull(self, n: int) -> Any:
        """A source's next batch: up to ``n`` items, or what came within ``LINGER``."""
        m = self._machine()
        t = time.perf_counter()
        chunk, taken = 1, 0
        try:
            while taken < n and m.status is RUNNING:
                taken += m.pull(min(chunk, n - taken))
                if taken == chunk == 1:  # the first item: a big one makes small batches
                    n = min(n, max(1, FIRST_BYTES // max(1, _buffer_bytes(m.out))))
                chunk *= 2
                if time.perf_counter() - t > LINGER:
                    break
        except BaseException as exc:
            self._fail(exc)
        self.busy += time.perf_counter() - t
        return self._reply()

    def process(self, port: int, *batches: Message) -> Any:
        """The items of ``batches`` arrive on input ``port``."""
        m = self._machine()
        t = time.perf_counter()
        items: list[Any] = []
        try:
            items = [x for b in batches for x in self.codec.decode(b)]
            m.feed(port, items)
        except BaseException as exc:
            self._fail(exc)
        dt = time.perf_counter() - t
        self.busy += dt
        if items and m.status is RUNNING:
            self.cost = dt / len(items)
        return self._reply()

    def recover(self, port: int, attempts: int, reason: str, batch: Message) -> Any:
        """A replacement actor: the one item of ``batch`` was in hand when its
        predecessor died or ran past the stage's timeout (``reason``); it runs
        again while retries are left, or fails through the error policy."""
        m = self._machine()
        t = time.perf_counter()
        try:
            (x,) = self.codec.decode(batch)
            if m.recover(port, x, attempts, reason):
                m.feed(port, [x])
        except BaseException as exc:
            self._fail(exc)
        self.busy += time.perf_counter() - t
        return self._reply()

    def end(self, port: int) -> Any:
        """Input ``port`` has ended (a Regulator flushes, the outputs may end)."""
        return self._event(self._machine().end, port)

    def stop(self) -> Any:
        """Stop early: a term flag is set, nobody reads the outputs, or the flow stops."""
        return self._event(self._machine().stop)

    def idle(self, count: int) -> Any:
        """A gate: ``count`` items are in flight in its loop."""
        return self._event(self._machine().idle, count)

    def terminate(self) -> Any:
        """The run is being cancelled: ``local_term`` if it has not run yet."""
        self._term()
        return self._meta()

    # -- helpers ---------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            node, loops, names = dill.loads(self.code)
            self.origin = (node.id, self.worker)
            self.codec = Codec(None, self.origin, names=names, where=f"stage {node.name!r}")
            self.machine = Machine(node, self.worker, loops=loops)
            self.machine.open()
        except BaseException as exc:
            self._fail(exc)

    def _machine(self) -> Machine:
        if self.machine is None:  # Ray restarted this actor: a stateless stage, open it
            self._open()  # what it logs and makes goes out with this call's reply
            self.restarted = True
        assert self.machine is not None
        return self.machine

    def _event(self, method: Any, *args: Any) -> Any:
        t = time.perf_counter()
        try:
            method(*args)
        except BaseException as exc:
            self._fail(exc)
        self.busy += time.perf_counter() - t
        return self._reply()

    def _term(self) -> None:
        """``local_term``, once: when the machine has ended, or at teardown."""
        if self.machine is None or self.termed:
            return
        self.termed = True
        try:
            self.machine.close()
        except BaseException as exc:
            if self.error is None:
                self._fail(exc)

    @property
    def stage(self) -> str:
        """The name of its stage ("?" before ``open`` has loaded it)."""
        return getattr(getattr(self.machine, "node", None), "name", "?")

    def _fail(self, exc: BaseException) -> None:
        if self.error is not None:
            return
        if isinstance(exc, KeyboardInterrupt):  # raised by the stage: as on Ctrl-C
            self.error = "interrupt"
            return
        if not isinstance(exc, StageError):
            wrapped = StageError(
                self.stage,
                None,
                self.worker,
                traceback.format_exc(),
                f"internal error: {type(exc).__name__}: {exc}",
            )
            wrapped.__cause__ = exc
            exc = wrapped
        self.error = portable_error(exc)

    def _reply(self) -> Any:
        """The meta, then each output port's items as codec bytes.  The in-flight
        change travels in the meta, which the driver applies before it hands the
        items on."""
        m = self.machine
        if m is None:
            return self._meta()
        data = [self._encode(o) for o in m.out]
        counts = [len(o) for o in m.out]
        for o in m.out:
            o.clear()
        if m.status is not RUNNING:
            self._term()  # local_term as soon as the stage has ended
        meta = self._meta()
        meta.update(
            counts=counts,
            delta=m.take_delta(),
            closed=m.take_closed(),
            running=m.status is RUNNING,
            stop_flow=m.stop_flow,
            spent=m.spent,
        )
        return (meta, *data) if data else meta  # one return value is not a tuple

    def _encode(self, items: list[Any]) -> Message:
        """Serialise one port's output here, so an item that cannot travel is this
        stage's error (Ray would only fail the consumer's call)."""
        if not items:
            return b""
        try:
            data = encode_beside(items, self.origin)
        except Exception as exc:
            assert self.machine is not None
            error = unsendable(self.machine.node.name, self.worker, items, exc)
            error.__cause__ = exc
            self._fail(error)
            return b""
        message, buffers = data if isinstance(data, tuple) else (data, ())
        size = len(message) + sum(b.raw().nbytes for b in buffers)
        self.item_bytes = size / len(items)
        return data

    def _meta(self) -> dict[str, Any]:
        m = self.machine
        figures = (0, 0, 0) if m is None else m.figures
        tail = (0, 0, 0, 0, 0) if m is None else m.tail
        busy = self.busy if m is None else m.busy(self.busy)
        meta = {
            "error": self.error,
            "figures": (*figures, busy, 0.0, 0.0, *tail),
            "cost": self.cost,
            "item_bytes": self.item_bytes,
            "logs": self.records,
            "restarted": self.restarted,
            "life": self.life,
        }
        # in every reply, as any of them may be the first the driver reads of a life
        # Ray restarted: teardown waits for the process it names
        if not self.place:
            self.place = {"pid": (socket.gethostname(), os.getpid()), "node": _node()}
        meta.update(self.place)
        self.records = []
        self.restarted = False
        return meta

    def _capture_logging(self) -> None:
        """Records made here travel to the driver in the replies, which hands them
        to its own handlers (as the process executor does)."""
        route_logging(_Collect(self), self.levels)


def _buffer_bytes(out: list[list[Any]]) -> int:
    """The size of the first item made, if it is a buffer (an array, ``bytes``)."""
    first = next((items[0] for items in out if items), None)
    try:
        return memoryview(first).nbytes  # type: ignore[arg-type]
    except TypeError:
        return 0


def _node() -> tuple[str, str] | None:
    """The id and address of the Ray node this actor runs on, for the driver's
    messages about it (Ray is imported here: this runs in a Ray worker)."""
    try:
        import ray

        address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        return ray.get_runtime_context().get_node_id(), address
    except Exception:  # not in a Ray worker (a unit test), or Ray changed
        return None


class _Collect(logging.Handler):
    def __init__(self, actor: StageActor) -> None:
        super().__init__()
        self.actor = actor

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record = portable(record, self.actor.stage, self.actor.worker)
            pickle.dumps(record)  # fails here, not in the reply
            self.actor.records.append(record)
        except Exception:
            self.handleError(record)
