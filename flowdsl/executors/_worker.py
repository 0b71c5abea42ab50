"""The body of a worker process: read batches, run the stage, write batches.

Batches adapt on both sides.  A worker processes its input in chunks sized so one
chunk takes about a millisecond, and flushes an output batch when it is full,
when an item would otherwise wait longer than ``LINGER`` seconds, or before it
blocks on input.  Each channel carries the measured per-item cost of its
consumers, and producers size batches so one batch is a few milliseconds of the
consumer's work: cheap stages get big batches, slow ones get items one by one and
spread over all their workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import dill

from .._core.codec import EOS, Codec, encode, unsendable
from .._core.machine import RUNNING, STOPPED, Machine
from .._core.records import portable, portable_error, route_logging
from .._core.runner import Cancelled
from .._plan import NodeSpec
from .._report import FIGURES
from .._waits import readable
from ..errors import StageError
from ._channel import TICK, Cancel, Channel, ControlPipe, Notice

__all__ = ["LINGER", "Job", "Ordering", "read_journal", "worker_main"]

LINGER = 0.005  # seconds an item may wait in a batch
PUBLISH = 0.05  # seconds between updates of the live counters
BATCH_WORK = 0.01  # seconds of consumer work one batch should hold: few wake-ups, fair shares
MAX_HELD = 2  # done batches an ordered worker holds while it takes the next
HOLD_WORK = 0.003  # ... when a batch takes less than this: it waits at most that long
MAX_BATCH = 1024  # items per message, at most: a message costs tens of microseconds
MESSAGE_BYTES = 1 << 20  # batches aim below this size
_CHUNK_TIME = 0.001


@dataclass
class Ordering:
    """Shared state that lets the workers of one ordered stage emit in input order."""

    lock: Any  # taken to read a batch and number it
    seq: Any  # Value: number of the next batch read
    turn: Any  # Condition over next_emit
    next_emit: Any  # Value: number of the batch whose outputs go out next


@dataclass
class Job:
    """Everything a worker needs; pickled for spawn, inherited under fork."""

    node: NodeSpec
    worker: int
    inputs: list[Channel]
    outputs: list[list[Channel]]
    control: ControlPipe
    cancel: Cancel  # set by the driver to stop the run
    ordering: Ordering | None
    log_levels: dict[str, int] = field(default_factory=dict)
    # loops: the machine's weights, and per loop gate the in-flight counter and
    # the channel that wakes the gate when the count hits zero (None: its own)
    loops: Any = ()
    counters: dict[int, tuple[Any, Channel | None]] = field(default_factory=dict)
    stop: Any = None  # Event: a stage raised StopFlow, sources end their streams
    shm_prefix: str | None = None  # names of the run's shared-memory segments, if any
    stats: Any = None  # RawArray of doubles: this worker publishes FIGURES at ``slot``
    slot: int = 0
    names: tuple[str, ...] = ()  # of every node: an unreadable batch names its producer
    # the driver's end of the lifeline reads end-of-file once the driver is gone;
    # under fork a worker inherits the other end too, and closes it
    lifeline: Any = None
    lifeline_writer: Any = None
    # a supervised stage's (timeout, restarts, max_items_per_worker): the file that
    # holds the item in hand, the start time of the call in progress (0: none) at
    # ``slot`` of ``calls``, and why this worker replaces another (None: it does not)
    journal: str | None = None
    calls: Any = None
    recover: str | None = None


def worker_main(job: Job) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # The driver cancels through ``job.cancel``, never by a signal: any signal that
    # ends a worker (a user's kill, the OOM reaper's SIGTERM) is its death.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _watch_driver(job)
    os.register_at_fork(before=_before_fork, after_in_child=_forked_from_worker)
    _forward_logging(job)
    if _Worker(job).run():
        # threads the stage left running would keep the process from exiting
        # (multiprocess waits for them): finish what the exit would, then leave
        from multiprocess import util

        util._exit_function()
        os._exit(0)


class _Worker:
    """Transport for one machine: reads its input channels, feeds the machine,
    and sends what it makes, in adaptive batches."""

    def __init__(self, job: Job) -> None:
        self.job = job
        node = job.node
        self.node = node
        # A concurrent stage keeps calls in flight while it waits for input, unless
        # its workers take turns to emit (ordered): then each batch's calls finish
        # before its turn.
        self.machine = Machine(
            node,
            job.worker,
            loops=job.loops,
            check=job.cancel.check,
            streaming=job.ordering is None,
        )
        self.out = self.machine.out
        self.since: list[float | None] = [None] * len(node.outputs)
        self.per_item = 0.0
        self.held_since: float | None = None  # a batch's partial list: its first item's
        # an ordered stage's batches done before their turn: (seq, outputs per port)
        self.held_out: deque[tuple[int, list[list[Any]]]] = deque()
        self.chunk = 1
        self.max_chunk = MAX_BATCH  # lowered when items are big: see _send_batch
        self.item_bytes = [0.0] * len(node.outputs)
        self.busy = 0.0
        self.blocked_in = 0.0  # seconds waiting for input
        self.blocked_out = 0.0  # seconds waiting for room downstream
        self.published = 0.0
        self.closed_ports: set[int] = set()
        self.told_stop = False
        self.codec = Codec(
            job.shm_prefix, (node.id, job.worker), names=job.names, where=f"stage {node.name!r}"
        )
        self.supervised = job.journal is not None
        # a replacement goes on from the figures of the worker it replaces
        k = len(FIGURES)
        self.base = (
            list(job.stats[job.slot * k : (job.slot + 1) * k])
            if job.recover is not None and job.stats is not None
            else [0.0] * k
        )

    # -- lifecycle -------------------------------------------------------------------
    def run(self) -> bool:
        """Run the stage to its end; True if it left threads running that would
        keep the process from exiting."""
        status, report = "ok", None
        m = self.machine
        retired = False
        try:
            m.open()
            self._after()
            if self.job.recover is not None:
                self._recover()
            if m.status is RUNNING:
                if self.node.kind == "source":
                    self._run_source()
                elif m.gate:
                    self._run_gate()
                else:
                    self._run_consumer()
            self._emit_held(block=True)
            self._flush_all()
            for port in range(len(self.out)):
                self._close_port(port)
            if not m.gate:  # a gate's inputs belong to its reader threads
                self._drain_inputs()
        except _Retire:  # max_items_per_worker: a fresh worker takes over the inputs
            retired = True
        except Cancelled:
            status = "cancelled"
        except KeyboardInterrupt:  # raised by the stage: Ctrl-C, whoever raised it
            status = "interrupted"
            self._send(Notice.INTERRUPT)
        except StageError as exc:
            status, report = "error", exc
        except BaseException as exc:  # a bug of ours: report it like user code
            status, report = (
                "error",
                StageError(
                    self.node.name,
                    None,
                    self.job.worker,
                    traceback.format_exc(),
                    f"internal error: {type(exc).__name__}: {exc}",
                ),
            )
        # From here the worker finishes on its own: local_term is bounded only by
        # the driver's SIGKILL after the grace period.
        if report is not None:
            self._send(Notice.ERROR, portable_error(report))
        self._publish()  # in case local_term outlasts the grace period
        try:
            m.close()
        except StageError as exc:
            if status == "ok":
                self._send(Notice.ERROR, portable_error(exc))
        with contextlib.suppress(OSError):
            self.codec.close()
        strays = _stray_threads()
        if strays:
            logging.getLogger("flowdsl").warning(
                "the stage left %d thread(s) running after local_term (%s): the worker "
                "exits without waiting for them",
                len(strays),
                ", ".join(repr(t.name) for t in strays),
                extra={"stage": self.node.name, "worker": self.job.worker},
            )
        for stream in (sys.stdout, sys.stderr):  # what the stage printed goes out first
            with contextlib.suppress(Exception):
                stream.flush()
        self._publish()
        self._send(Notice.RETIRED if retired else Notice.DONE)
        return bool(strays)

    def _after(self) -> None:
        """After every event of the machine: its in-flight change is applied to
        the loops' counts before any of its outputs can be sent; a StopFlow is
        passed on to the driver; an early stop releases the other workers."""
        m = self.machine
        if m.loops:
            self._commit()
        if m.status is not RUNNING and not self.told_stop:
            self.told_stop = True
            if m.stop_flow:
                self._send(Notice.STOP)
            ordering = self.job.ordering
            if m.status is STOPPED and ordering is not None:
                # let the other workers emit without waiting for us
                with ordering.turn:
                    ordering.next_emit.value = 1 << 62
                    ordering.turn.notify_all()

    def _commit(self) -> None:
        """Apply the machine's in-flight change to the counters of its loops; a
        count that reaches zero wakes that loop's gate."""
        for gate, delta in self.machine.take_delta():
            counter, wake = self.job.counters[gate]
            with counter.get_lock():
                counter.value += delta
                idle = counter.value == 0
            if idle and wake is not None:
                wake.put(encode([]))  # an empty batch: the gate re-checks the count

    def _publish(self) -> None:
        """Write this worker's figures where the driver reads them (progress, report)."""
        stats = self.job.stats
        if stats is None:
            return
        base = self.job.slot * len(FIGURES)
        m = self.machine
        mine = [*m.figures, m.busy(self.busy), self.blocked_in, self.blocked_out, *m.tail]
        stats[base : base + len(FIGURES)] = [a + b for a, b in zip(self.base, mine, strict=True)]
        self.published = time.perf_counter()

    def _send(self, notice: Notice, payload: Any = None) -> None:
        self.job.control.send(notice, self.node.id, self.job.worker, payload)

    # -- sources ---------------------------------------------------------------------
    def _run_source(self) -> None:
        m, stop, cancel = self.machine, self.job.stop, self.job.cancel
        while True:
            cancel.check()
            if stop.is_set():
                m.stop()
            k = self.chunk
            t = time.perf_counter()
            n = m.pull(k)
            dt = time.perf_counter() - t
            self.busy += dt
            self._adapt(n or 1, dt)
            if m.status is not RUNNING:
                self._after()
                return
            self._maybe_flush(t)
            if t - self.published > PUBLISH:
                self._publish()

    def _close_port(self, port: int) -> None:
        """End the stream of one output port (once)."""
        if port not in self.closed_ports:
            self.closed_ports.add(port)
            for ch in self.job.outputs[port]:
                ch.producer_done()

    # -- loop gates --------------------------------------------------------------------
    def _run_gate(self) -> None:
        """Feed upstream items and seeds into the body, route what comes back.

        Two threads read the upstream and feedback channels into one event queue,
        so the gate never blocks the body: feedback is always drained (the only
        unbounded buffer of a flow: what is in flight inside a loop), upstream is
        read one batch ahead.
        """
        m, (counter, _) = self.machine, self.job.counters[self.node.id]
        events: queue.Queue[tuple[int, bytes]] = queue.Queue()
        credit = threading.Semaphore(1)
        feedback = len(self.job.inputs) - 1
        for port, ch in enumerate(self.job.inputs):
            _pump(ch, port, events, None if port == feedback else credit)
        cancel = self.job.cancel
        while True:
            m.idle(counter.value)
            for port in m.take_closed():  # port 0: nothing in flight, the body's input ends
                self._flush_all()
                self._close_port(port)
            if m.status is not RUNNING:
                return
            if any(self.out) and events.empty():
                self._flush_all()
            while True:
                try:
                    port, data = events.get(timeout=TICK)
                    break
                except queue.Empty:
                    cancel.check()
            if data == EOS:
                m.end(port)
            else:
                items = self.codec.decode(data)
                t = time.perf_counter()
                m.feed(port, items)
                self.busy += time.perf_counter() - t
                if port != feedback:
                    credit.release()
            self._after()
            if port == feedback:
                self._flush_all()
            if time.perf_counter() - self.published > PUBLISH:
                self._publish()

    # -- transforms and sinks ----------------------------------------------------------
    def _run_consumer(self) -> None:
        if len(self.job.inputs) > 1:
            self._run_zip()
            return
        (ch,) = self.job.inputs
        shared = ch.consumers > 1
        ordering = self.job.ordering
        m = self.machine
        wait = getattr(self.node.stage, "wait", None)  # a batch's, for its partial list
        while m.status is RUNNING:
            if any(self.out) and (shared or not ch.ready()) and not m.in_flight:
                self._flush_all()
            if m.in_flight and not ch.ready() and self._calls_first([ch.reader]):
                continue
            if wait is not None and self.held_since is not None and not ch.ready():
                left = self.held_since + wait - time.perf_counter()
                if left <= 0 or not self.job.cancel.wait([ch.reader], left):
                    m.flush()
                    self.held_since = None
                    self._after()
                    self._flush_all()
                    continue
            t = time.perf_counter()
            data: bytes | None
            if ordering is None:
                data, seq = ch.get(), None
            else:
                # never wait for input holding outputs, nor for the worker that
                # waits for it: what they feed may be what the input waits for
                if self.held_out and not ordering.lock.acquire(False):
                    self._emit_held(block=True)
                    continue
                if not self.held_out:
                    self.job.cancel.acquire(ordering.lock)
                try:
                    data = None if self.held_out and not ch.ready() else ch.get()
                    seq = ordering.seq.value
                    if data is not None and data != EOS:
                        ordering.seq.value = seq + 1
                finally:
                    ordering.lock.release()
                if data is None:
                    self._emit_held(block=True)
                    continue
            self.blocked_in += time.perf_counter() - t
            if data == EOS:
                m.end(0)
                self._after()
                return
            held, came = m.holding, time.perf_counter()
            self._process(0, self.codec.decode(data), seq)
            if wait is not None:  # the partial list's first item came now, or before
                self.held_since = (
                    None
                    if not m.holding
                    else came
                    if self.held_since is None or m.holding <= held
                    else self.held_since
                )

    def _run_zip(self) -> None:
        """Feed the machine from whichever input has data, not the one it waits for.

        The inputs of a zip often share an upstream (a diamond), and with bounded
        queues waiting on the slower branch would block the faster one, and so
        the common upstream, forever.  The price is memory: what one input runs
        ahead of the other waits in the machine (which warns when that grows large).
        """
        chans, m = self.job.inputs, self.machine
        while m.status is RUNNING:
            open_inputs = [i for i in range(len(chans)) if i not in m.ended_inputs]
            ready = [i for i in open_inputs if chans[i].ready()]
            if not ready:
                self._flush_all()
                waiting = {chans[i].reader: i for i in open_inputs}
                if m.in_flight and self._calls_first(list(waiting)):
                    continue
                t = time.perf_counter()
                ready = [waiting[r] for r in self.job.cancel.wait(list(waiting))]
                self.blocked_in += time.perf_counter() - t
            for i in ready:
                data = chans[i].get()
                if data == EOS:
                    m.end(i)
                    self._after()
                else:
                    self._process(i, self.codec.decode(data), None)
                if m.status is not RUNNING:
                    return

    def _calls_first(self, readers: list[Any]) -> bool:
        """Wait for input on ``readers`` or for a call in flight to finish; True
        if a call finished first (its results are then in ``out``)."""
        m = self.machine
        start = time.perf_counter()
        # results wait to fill a batch, for LINGER at most
        ready = self.job.cancel.wait([*readers, m.wakeup], LINGER if any(self.out) else None)
        if not ready:
            self._flush_all()
            return True
        if m.wakeup not in ready:
            return False
        m.collect()
        self._after()
        self._maybe_flush(start)
        return True

    def _drain_inputs(self) -> None:
        """The machine has ended before some input did (a stop, or a zip whose
        other input ran out): tell upstream to stop feeding us, then read those
        inputs to their end, so no producer is left blocked; the machine counts
        what it drops.  Whichever input has data is read first: inputs that share
        an upstream (a diamond) would block it, and so each other, if one were
        read to its end before the next."""
        m, chans = self.machine, self.job.inputs
        live = [i for i in range(len(chans)) if i not in m.ended_inputs]
        for i in live:
            chans[i].reader_gone()
        while live:
            ready = [i for i in live if chans[i].ready()]
            if not ready:
                waiting = {chans[i].reader: i for i in live}
                ready = [waiting[r] for r in self.job.cancel.wait(list(waiting))]
            for i in ready:
                data = chans[i].get()
                if data == EOS:
                    m.end(i)
                    live.remove(i)
                else:
                    m.feed(i, self.codec.decode(data))
                self._after()

    def _process(self, port: int, batch: list[Any], seq: int | None) -> None:
        if self.supervised:
            self._process_supervised(port, batch, seq)
            return
        i, n = 0, len(batch)
        m, cancel = self.machine, self.job.cancel
        began = time.perf_counter()
        while i < n:
            cancel.check()
            k = n if m.concurrent else self.chunk  # (calls in flight wait on their own)
            t = time.perf_counter()
            m.feed(port, batch if (i == 0 and k >= n) else batch[i : i + k])
            dt = time.perf_counter() - t
            self.busy += dt
            self._adapt(min(k, n - i), dt)
            i += k
            self._after()  # the in-flight change is counted before anything is sent
            if m.status is not RUNNING:
                if i < n:
                    m.feed(port, batch[i:])  # dropped, and counted as such
                    self._after()
                break
            if seq is None or self.job.ordering.next_emit.value == seq:  # type: ignore[union-attr]
                self._maybe_flush(t)
        for ch in self.job.inputs:  # producers size their batches by it
            ch.cost.value = self.per_item
        if seq is not None:
            self._hold(seq, quick=time.perf_counter() - began < HOLD_WORK)
        if time.perf_counter() - self.published > PUBLISH:
            self._publish()

    # -- supervised stages -------------------------------------------------------------
    def _process_supervised(
        self, port: int, batch: list[Any], seq: int | None, attempts: int = 0
    ) -> None:
        """One item at a time, each written to the journal before its call and
        its outputs sent after it: a worker that dies or is stopped mid-call has
        that one item in hand, which its replacement finds in the journal."""
        m, job = self.machine, self.job
        for i, x in enumerate(batch):
            job.cancel.check()
            if m.status is not RUNNING:
                m.feed(port, batch[i:])  # dropped, and counted as such
                self._after()
                break
            _write_journal(job.journal, (port, x, seq, attempts))
            t = time.perf_counter()
            job.calls[job.slot] = time.monotonic()
            try:
                m.feed(port, [x])
            finally:
                job.calls[job.slot] = 0.0
            self.busy += time.perf_counter() - t
            self._after()
            if seq is None:
                self._flush_all()
            attempts = 0
        if seq is not None:
            self._emit_in_turn(seq)
        _write_journal(job.journal, None)
        self._publish()
        if m.spent:
            raise _Retire

    def _recover(self) -> None:
        """Replacing a worker: the item it had in hand fails through the error
        policy (or is tried again, while retries are left)."""
        held = read_journal(self.job.journal)
        if held is None:
            return
        port, x, seq, attempts = held
        m = self.machine
        if m.recover(port, x, attempts, self.job.recover or ""):
            self._process_supervised(port, [x], seq, attempts + 1)
            return
        self._after()
        if seq is None:
            self._flush_all()
        else:
            self._emit_in_turn(seq)
        _write_journal(self.job.journal, None)
        self._publish()

    def _hold(self, seq: int, quick: bool) -> None:
        """An ordered worker's batch ``seq`` is done: when batches are ``quick``,
        its outputs wait for their turn while the worker goes on with its next
        batch (it waits for the turn when it holds MAX_HELD batches, or before it
        would wait for input).  Slow batches wait for their turn at once: held
        behind a slow batch, they would hold up every later one."""
        self.held_out.append((seq, [o[:] for o in self.out]))
        for o in self.out:
            o.clear()
        self._emit_held(block=not quick or len(self.held_out) > MAX_HELD)

    def _emit_held(self, block: bool) -> None:
        """Send the held batches whose turn has come, in order; with ``block``,
        all of them, waiting for each one's turn."""
        ordering = self.job.ordering
        if not self.held_out or ordering is None:
            return
        current = [o[:] for o in self.out]  # what comes after them waits
        for o in self.out:
            o.clear()
        while self.held_out:
            seq, outs = self.held_out[0]
            if not block and ordering.next_emit.value < seq:
                break
            self.held_out.popleft()
            for o, held in zip(self.out, outs, strict=True):
                o.extend(held)
            self._emit_in_turn(seq)
        for o, later in zip(self.out, current, strict=True):
            o.extend(later)

    def _emit_in_turn(self, seq: int) -> None:
        ordering = self.job.ordering
        assert ordering is not None
        cancel = self.job.cancel
        t = time.perf_counter()
        cancel.acquire(ordering.turn)
        try:
            while ordering.next_emit.value < seq:
                ordering.turn.wait(TICK)
                cancel.check()
            self.blocked_out += time.perf_counter() - t  # waiting for our turn to emit
            self._flush_all()
            if ordering.next_emit.value == seq:  # not if a worker stopped: order is moot
                ordering.next_emit.value = seq + 1
            ordering.turn.notify_all()
        finally:
            ordering.turn.release()

    # -- batching ----------------------------------------------------------------------
    def _adapt(self, n: int, dt: float) -> None:
        self.per_item = dt / n
        if dt < _CHUNK_TIME / 2 and self.chunk < self.max_chunk:
            self.chunk = min(self.chunk * 2, self.max_chunk)
        elif dt > _CHUNK_TIME * 4 and self.chunk > 1:
            self.chunk //= 2

    def _maybe_flush(self, chunk_start: float) -> None:
        now = time.perf_counter()
        for port, items in enumerate(self.out):
            if not items:
                continue
            since = self.since[port]
            if since is None:
                since = self.since[port] = chunk_start
            limit = self._batch_limit(port)
            if len(items) >= limit or now - since + self.per_item >= LINGER:
                self._flush(port)

    def _batch_limit(self, port: int) -> int:
        limit = self.max_chunk
        for ch in self.job.outputs[port]:
            cost = ch.cost.value
            by_cost = int(BATCH_WORK / cost) if cost > 0 else MAX_BATCH
            limit = min(limit, ch.batch_limit, max(1, by_cost, ch.min_batch))
        return limit

    def _flush_all(self) -> None:
        for port in range(len(self.out)):
            if self.out[port]:
                self._flush(port)

    def _flush(self, port: int) -> None:
        items = self.out[port]
        self.since[port] = None
        chans = self.job.outputs[port]
        m = self.machine
        if chans and m.status is RUNNING and all(ch.closed for c in self.job.outputs for ch in c):
            m.stop()  # nobody reads any output: stop, and tell upstream
            self._after()
        # What was made is sent even where nobody processes it any more: a reader
        # that has ended still reads to the end of its input, and counts it (a
        # zip's left over), so no item is lost from the figures.
        if not chans:
            items.clear()
            return
        # a message never exceeds a buffer, nor about BATCH_WORK of its reader's
        # work: a chunk of items made at once still spreads over the readers
        limit = self._batch_limit(port)
        start = 0
        if not self.item_bytes[port] and len(items) > 1:
            # the first message of a port: one item tells how big they are (a stage
            # may have made many big ones before it first flushes)
            self._send_batch(port, items[:1])
            start = 1
        while start < len(items):
            size = min(limit, self.max_chunk)
            self._send_batch(
                port, items if start == 0 and len(items) <= size else items[start : start + size]
            )
            start += size
        items.clear()

    def _send_batch(self, port: int, batch: list[Any]) -> None:
        chans = self.job.outputs[port]
        try:
            messages, nbytes = self.codec.encode(batch, len(chans))
        except Exception as exc:
            raise unsendable(self.node.name, self.job.worker, batch, exc) from exc
        if self.job.stats is not None:  # before the items can be counted downstream
            self.job.stats[self.job.slot * len(FIGURES) + 1] = self.machine.items_out
        # big items travel in small messages, so stages overlap and memory stays
        # low; the bytes counted include those in shared memory
        self.item_bytes[port] = nbytes / len(batch)
        self.max_chunk = max(1, min(MAX_BATCH, int(MESSAGE_BYTES / max(self.item_bytes))))
        self.chunk = min(self.chunk, self.max_chunk)
        t = time.perf_counter()
        for ch, data in zip(chans, messages, strict=True):
            ch.fit(nbytes)
            ch.put(data)
        self.blocked_out += time.perf_counter() - t


def _watch_driver(job: Job) -> None:
    """Die as soon as the driver process is gone.

    The lifeline is a pipe whose writing end only the driver holds: it reaches
    end-of-file when the driver exits or is killed, whichever of its threads
    started the run (Linux's parent-death signal would fire when that thread
    exits, with the driver alive).  The kernel turns that end-of-file into a
    SIGKILL for this process (``O_ASYNC``), so no thread has to wait for it and a
    call that holds the GIL dies too.  Where that cannot be set up, a thread
    waits on the pipe instead."""
    if job.lifeline_writer is not None:
        job.lifeline_writer.close()  # inherited by fork: only the driver keeps it
    if _signal_on_hangup(job.lifeline.fileno()):
        return

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            job.lifeline.recv_bytes()
        os.kill(os.getpid(), signal.SIGKILL)  # nobody is left to report to

    threading.Thread(target=watch, name="flowdsl-lifeline", daemon=True).start()


def _signal_on_hangup(fd: int) -> bool:
    """Have the kernel SIGKILL this process when the pipe ``fd`` reads has no
    writer left; False where it cannot (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    import fcntl

    setsig = getattr(fcntl, "F_SETSIG", None)
    if setsig is None:
        return False
    try:
        # A description of our own: the workers share the inherited one, and a
        # description signals one owner only.
        own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.fcntl(own, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(own, setsig, signal.SIGKILL)
        fcntl.fcntl(own, fcntl.F_SETFL, fcntl.fcntl(own, fcntl.F_GETFL) | os.O_ASYNC)
        gone = readable(own, 0)  # the driver died before we asked
    except OSError:
        os.close(own)
        return False
    if gone:
        os.kill(os.getpid(), signal.SIGKILL)
    return True  # ``own`` stays open for the life of the process


def _stray_threads() -> list[Any]:
    """Threads other than ours that the interpreter would wait for at exit."""
    return [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM if the parent dies without cleaning up."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the driver's teardown is the only guard
        pass


_forking = 0  # the pid of the process that is forking, as its child sees it


def _before_fork() -> None:
    global _forking
    _forking = os.getpid()


def _forked_from_worker() -> None:
    """In a process that a stage forks (a ``Pool``'s workers, a nested flow's):
    it must die with the worker, since a worker killed after the grace period
    cannot stop what it started, and forked pool workers would otherwise wait on
    their task queue forever."""
    _die_with_parent()
    if os.getppid() != _forking:  # the parent died before we asked
        os._exit(1)


def _ignore(_: Any) -> None:
    pass


def _pump(ch: Channel, port: int, events: Any, credit: Any) -> None:
    """Read ``ch`` into ``events`` from a thread, up to and including its end."""

    def run() -> None:
        while True:
            if credit is not None:
                credit.acquire()
            data = ch.get()
            events.put((port, data))
            if data == EOS:
                return

    threading.Thread(target=run, name=f"flowdsl-in{port}", daemon=True).start()


class _ForwardHandler(logging.Handler):
    """Sends log records to the driver, which hands them to its own handlers."""

    def __init__(self, control: ControlPipe, node: NodeSpec, worker: int) -> None:
        super().__init__()
        self.control, self.node, self.worker = control, node, worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record = portable(record, self.node.name, self.worker)
            self.control.send(Notice.LOG, self.node.id, self.worker, record)
        except Exception:
            self.handleError(record)


def _forward_logging(job: Job) -> None:
    route_logging(_ForwardHandler(job.control, job.node, job.worker), job.log_levels)


class _Retire(Exception):
    """A supervised worker has run its max_items_per_worker: it hands over."""


def _write_journal(path: str | None, held: Any) -> None:
    """Note the item in hand (None: none), atomically, for a replacement."""
    if path is None:
        return
    if held is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(dill.dumps(held))
    os.replace(tmp, path)


def read_journal(path: str | None) -> Any:
    """What :func:`_write_journal` noted last: ``(port, item, seq, attempts)`` of
    the item in hand, or None."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return dill.loads(f.read())
    except FileNotFoundError:
        return None
