"""The Ray side of the ray executor: one actor per worker of a stage.

An actor only runs user code, through a :class:`~flowdsl._core.runner.Runner`; the
driver decides what each actor gets and when.  Every call returns a small *meta*
dict (status, figures, log records) first, then one list of items per output port,
so the driver reads the meta and passes the item lists on as object references
without looking inside them.  Items travel as bytes of the executors' codec
(pickle, dill when pickle cannot), made and read here.

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
from collections import deque
from typing import Any

import dill

from .._core.codec import decode, encode, find_unpicklable
from .._core.records import portable, route_logging
from .._core.runner import Runner, StageDone
from ..errors import StageError, StopFlow

__all__ = ["StageActor"]

LINGER = 0.005  # seconds a source may spend filling one batch


class StageActor:
    """Worker ``worker`` of one stage.  ``code`` is the stage's node as dill bytes;
    ``paths`` are the driver's ``sys.path`` entries (as a spawned process inherits
    them), so stages defined in scripts and test modules can be found."""

    def __init__(self, code: bytes, worker: int, paths: list[str],
                 levels: dict[str, int]) -> None:
        self.code, self.worker, self.levels = code, worker, levels
        for path in paths:
            if path not in sys.path:
                sys.path.append(path)
        self.records: list[logging.LogRecord] = []
        self.runner: Runner | None = None
        self.status = "ok"  # "stop", "flowstop", "ended" or "error" once it has happened
        self.busy = 0.0
        self.cost = 0.0  # seconds per item of the last call
        self.leftover = 0  # zip: items that will never be paired
        self.item_bytes = 0.0  # serialised size of an output item, last measured
        self.restarted = False  # a new life after a death: opened by its first call
        self._capture_logging()

    # -- calls from the driver -----------------------------------------------------------
    def open(self) -> dict[str, Any]:
        """Unpickle the stage and run ``local_init``."""
        try:
            self.node = dill.loads(self.code)
            node = self.node
            self.runner = Runner(node.stage, node.name, node.arity, len(node.outputs),
                                 self.worker, envelope=node.envelope,
                                 dead_letter=node.dead_letter)
            self.pending: list[deque[Any]] = [deque() for _ in node.inputs]
            self.ended_ports: set[int] = set()
            self.runner.open()
        except BaseException as exc:
            self._fail(exc)
        return {**self._meta(), "pid": (socket.gethostname(), os.getpid())}

    def pull(self, n: int) -> Any:
        """A source's next batch: up to ``n`` items, or what came within ``LINGER``."""
        out = self._out()
        if self.status == "ok":
            assert self.runner is not None
            if not hasattr(self, "items"):
                self.items = self.runner.iterate()
            t = time.perf_counter()
            self._guarded(self._fill, out, n, t)
            self.busy += time.perf_counter() - t
        return self._reply(out)

    def _fill(self, out: list[list[Any]], n: int, start: float) -> None:
        runner = self.runner
        assert runner is not None
        split = runner.n_outputs > 1  # several downstreams split each tuple
        for count, x in enumerate(self.items, 1):
            if split:
                for _ in runner.split(iter([x]), out):
                    pass
            elif out:
                out[0].append(x)
            if count >= n or time.perf_counter() - start > LINGER:
                return
        self.status = "ended"

    def process(self, port: int, ended: bool, *batches: bytes) -> Any:
        """Apply the stage to the items of ``batches`` (from input ``port``); with
        ``ended`` that input has no more items after these."""
        if self.runner is None:  # Ray restarted this actor: a stateless stage, open it
            self.open()
            self.restarted = True
        out = self._out()
        items = [x for b in batches for x in decode(b)]
        if self.status != "ok":  # stopped or ended: what still arrives is dropped
            self.leftover += len(items)
            return self._reply(out)
        assert self.runner is not None
        if self.node.loop is not None:
            return self._gate(port, items, out)
        if len(self.pending) > 1:
            items = self._pair(port, ended, items)
        t = time.perf_counter()
        if items:
            self._guarded(self.runner.process, items, out)
        dt = time.perf_counter() - t
        self.busy += dt
        if items:
            self.cost = dt / len(items)
        if len(self.pending) > 1 and self.status == "ok" and self._exhausted():
            self.status = "ended"
            self.leftover += sum(map(len, self.pending))
            for q in self.pending:
                q.clear()
        return self._reply(out)

    def _gate(self, port: int, items: list[Any], out: list[list[Any]]) -> Any:
        """A loop gate: items from upstream (port 0, the seed too) enter the body;
        what the body gives back (port 1) is routed back in or out of the loop."""
        runner = self.runner
        assert runner is not None
        gate = self.node.gate
        t = time.perf_counter()
        if port == 0:
            out[0].extend(gate.enter(items))
        else:
            runner.items_in += len(items)
            self._guarded(self._route, items, out)
        dt = time.perf_counter() - t
        self.busy += dt
        if items and port == 1:
            self.cost = dt / len(items)
        return self._reply(out)

    def _route(self, items: list[Any], out: list[list[Any]]) -> None:
        assert self.runner is not None
        back, leaving = self.runner.route(items)
        out[0].extend(back)
        out[1].extend(leaving)

    def _pair(self, port: int, ended: bool, items: list[Any]) -> list[Any]:
        """A zip: queue ``items`` on their port; return the tuples now complete."""
        self.pending[port].extend(items)
        if ended:
            self.ended_ports.add(port)
        n = min(map(len, self.pending))
        return [tuple(q.popleft() for q in self.pending) for _ in range(n)]

    def _exhausted(self) -> bool:
        return any(not self.pending[p] for p in self.ended_ports)

    def finish(self) -> Any:
        """End of input: flush (a Regulator), then ``local_term``."""
        out = self._out()
        runner = self.runner
        if runner is not None and self.status in ("ok", "ended") and \
                self.node.kind not in ("source", "loop"):
            self._guarded(runner.finish, out)
        self._close()
        return self._reply(out)

    def terminate(self) -> dict[str, Any]:
        """The run is being cancelled: ``local_term`` if it has not run yet."""
        self._close()
        return self._meta()

    # -- helpers ---------------------------------------------------------------------------
    def _close(self) -> None:
        if self.runner is None or not self.runner.opened:
            return
        try:
            self.runner.close()
        except BaseException as exc:
            if self.status != "error":
                self._fail(exc)

    def _guarded(self, f: Any, *args: Any) -> None:
        try:
            f(*args)
        except StageDone:
            self.status = "stop"
        except StopFlow:
            self.status = "flowstop"
        except BaseException as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.status = "error"
        if not isinstance(exc, StageError):
            name = getattr(getattr(self, "node", None), "name", "?")
            wrapped = StageError(name, None, self.worker, traceback.format_exc(),
                                 f"internal error: {type(exc).__name__}: {exc}")
            wrapped.__cause__ = exc
            exc = wrapped
        cause = exc.__cause__
        try:
            pickle.loads(pickle.dumps(cause))
        except Exception:
            cause = None  # cannot be rebuilt: the traceback text still travels
        self.error = (exc, cause)

    def _out(self) -> list[list[Any]]:
        node = getattr(self, "node", None)
        return [[] for _ in (node.outputs if node is not None else ())]

    def _reply(self, out: list[list[Any]]) -> Any:
        if self.runner is not None:
            dead = self.runner.dead_letter
            self.runner.items_out += sum(len(o) for p, o in enumerate(out) if p != dead)
        data = [self._encode(o) for o in out]
        meta = self._meta()
        meta["counts"] = [len(o) for o in out]
        return (meta, *data) if out else meta  # one return value is not a tuple

    def _encode(self, items: list[Any]) -> bytes:
        """Serialise one port's output here, so an item that cannot travel is this
        stage's error (Ray would only fail the consumer's call)."""
        if not items:
            return b""
        try:
            data = encode(items)
        except Exception as exc:
            bad = find_unpicklable(items)
            if self.status != "error":
                self._fail(StageError(
                    self.node.name, repr(bad)[:200], self.worker, traceback.format_exc(),
                    f"output cannot be serialised to send downstream: "
                    f"{type(exc).__name__}: {exc}"))
            return b""
        self.item_bytes = len(data) / len(items)
        return data

    def _meta(self) -> dict[str, Any]:
        r = self.runner
        figures = (0, 0, 0, self.busy) if r is None else (r.items_in, r.items_out, r.errors,
                                                          self.busy)
        meta = {"status": self.status, "figures": figures, "cost": self.cost,
                "item_bytes": self.item_bytes,
                "leftover": self.leftover, "logs": self.records,
                "restarted": self.restarted}
        self.records = []
        self.restarted = False
        self.leftover = 0
        if self.status == "error":
            meta["error"] = self.error
        return meta

    def _capture_logging(self) -> None:
        """Records made here travel to the driver in the replies, which hands them
        to its own handlers (as the process executor does)."""
        route_logging(_Collect(self), self.levels)


class _Collect(logging.Handler):
    def __init__(self, actor: StageActor) -> None:
        super().__init__()
        self.actor = actor

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record = portable(record, self.actor.worker)
            pickle.dumps(record)  # fails here, not in the reply
            self.actor.records.append(record)
        except Exception:
            self.handleError(record)
