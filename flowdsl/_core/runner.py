"""Runners: one stage's user code inside one worker.

A runner applies the call rules that every executor shares: hooks run once,
``None`` means no output, a generator transform emits everything it yields,
several output ports split a returned tuple by position, ``ignore_exceptions``
skips an item with a warning.  Executors only move batches between runners.
"""

from __future__ import annotations

import copy
import inspect
import logging
import pickle
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any

from .._batching import FLUSH, Batch, Batcher
from .._sentinel import Sentinel, is_sentinel
from .._stages import Regulator, Stage, callable_of, hook_of
from ..errors import CallTimedOut, Failure, StageError, StageTimeout, StopFlow
from .calls import Calls, EventLoop
from .typed import typed

__all__ = ["Cancelled", "Runner", "StageDone", "describe"]

log = logging.getLogger("flowdsl")


_opening: list[int] = []  # the worker whose local_init is running, if any


def opening_worker() -> int:
    """The index of the worker whose ``local_init`` is running (0 outside one)."""
    return _opening[-1] if _opening else 0


class Cancelled(BaseException):
    """Raised in a worker that the driver is stopping; never user-visible."""


class StageDone(Exception):
    """This stage stops early (it returned a Sentinel): its outputs end, its
    inputs are drained."""


# What goes through a stage's error handling untouched.  SystemExit raised by a
# stage is a failure of that stage like any other exception; KeyboardInterrupt is
# always Ctrl-C, whoever raised it, and ends the run with KeyboardInterrupt.
_PASS = (StopFlow, KeyboardInterrupt, Cancelled, StageDone)

# The types of the results that are signals, not items: Sentinel and StopFlow, as
# classes (whose type is ``type``) or instances.  One set lookup per result, then
# :func:`_ends_stage` looks closer.
_SIGNALS = frozenset({type, Sentinel, StopFlow})
_NO_SIGNAL = object()
_SPREAD_AS_IS = _SIGNALS | {type(None), tuple}  # else a batched result goes item by item

# What to do instead of raising StopFlow from a hook, by hook.
_STOP_IN_HOOK = {
    "local_init": "local_init runs before any item, and StopFlow ends a flow only from "
    "the stage's items (run(), a transform's function, a source's "
    "iteration); raise it there, on the first item, to end the flow "
    "cleanly, or raise another exception to fail the run",
    "local_term": "local_term runs once the stage has ended, when there is nothing "
    "left to stop; return normally from it",
}


class Runner:
    """Runs the user code of stage ``name`` in worker ``worker``."""

    def __init__(
        self,
        stage: Stage,
        name: str,
        arity: int,
        n_outputs: int,
        worker: int = 0,
        copy_functor: bool = False,
        envelope: bool = False,
        dead_letter: int | None = None,
        check: Any = None,
        fused_batch: int | None = None,
    ) -> None:
        self.stage = stage
        self.name = name
        self.worker = worker
        self.arity = arity
        self.dead_letter = dead_letter  # the port of failed items, if routed
        self.n_outputs = n_outputs - (dead_letter is not None)  # ports of results
        self.retries = stage.retries
        self.skip = stage.on_error == "skip"
        functor = stage.functor_obj
        if copy_functor and not (
            inspect.isfunction(functor)
            or inspect.isgenerator(functor)
            or inspect.isbuiltin(functor)
            or inspect.ismethod(functor)
        ):
            functor = copy.deepcopy(functor)  # every worker has its own instance
        self.functor = functor
        self.args = stage.args
        self.kwargs = stage.kwargs
        self.opened = False
        self.items_in = 0
        self.errors = 0
        self.ignore = stage.ignore_exceptions
        self.envelope = envelope
        self._coroutine: Any = None
        # IO-bound stages: calls in flight (see calls.py), on an event loop or threads
        self.concurrent = stage.kind != "source" and (stage.is_async or stage.concurrency > 1)
        self._agen = stage.is_async_generator  # looked up once, not per result
        self.ordered = stage.ordered
        self.check = check  # the executor's cancel, looked at while waiting for calls
        self.loop: EventLoop | None = None
        self.calls: Calls | None = None
        self.settled = 0  # calls finished and dealt with, since take_settled()
        self.unstarted = 0  # items of a batch never started (the stage stopped first)
        self._attempts: dict[int, int] = {}
        self.timeouts = 0  # calls that ran longer than the stage's timeout
        # batch=n filled here (no batch stage in front): the list being filled
        self._fused = Batcher(fused_batch) if fused_batch else None

    # -- hooks -----------------------------------------------------------------------
    def open(self) -> None:
        """Run ``local_init`` (once, in the worker)."""
        self.opened = True
        if self.stage.is_async:
            self.loop = EventLoop(self.name)
        if self.concurrent:
            self.calls = Calls(self.name, self.stage.concurrency, self.loop, self.check)
        hook = hook_of(self.functor, "local_init")
        if hook is not None:
            _opening.append(self.worker)
            try:
                self._hook(hook, **self.stage.init_kwargs)
            finally:
                _opening.pop()
        self.call = callable_of(self.functor)
        # looked up once, not per item; a transform with batch=n spreads each
        # list it returns, as a generator's items are
        self.generator = self.stage.is_generator or (
            self.stage.batch is not None and self.stage.kind == "transform"
        )
        self.fn = _bind(self.call, self.args, self.kwargs)
        if self.stage.check_types:
            self.fn = typed(self.fn, self.stage, self.arity)
        if self.stage.timeout is not None:
            self.fn = self._timed(self.fn, self.stage.timeout)
        if isinstance(self.stage, Regulator):
            self._coroutine = self._new_coroutine()
        # a batch takes whole chunks of items; a transform with batch=n spreads
        # the lists it returns
        self._batcher = self.functor if isinstance(self.stage, Batch) else None
        self._spread = self.stage.batch is not None and self.stage.kind == "transform"

    def close(self) -> None:
        """Cancel and await the calls still in flight, run ``local_term`` (once,
        after the last item), stop the event loop."""
        if not self.opened:
            return
        self.opened = False
        try:
            if self.calls is not None:
                self.calls.close()
            hook = hook_of(self.functor, "local_term")
            if hook is not None:
                self._hook(hook)
        finally:
            if self.loop is not None:
                self.loop.close()
        log.info("Local termination", extra={"stage": self.name, "worker": self.worker})

    # -- sources ---------------------------------------------------------------------
    def iterate(self) -> Iterator[Any]:
        """The items of a source, ``None`` skipped, errors wrapped."""
        functor = self.functor
        if inspect.isgenerator(functor) or (not callable(functor) and not hasattr(functor, "run")):
            it = iter(functor)
        elif self.loop is not None:  # an async generator, run on the worker's loop
            made = self._guard(self.call, None, *self.args, **self.kwargs)
            it = _blocking(made, self.loop)
        else:
            made = self._guard(self.call, None, *self.args, **self.kwargs)
            try:
                it = iter(made)
            except TypeError as exc:
                raise StageError(
                    self.name,
                    None,
                    self.worker,
                    "",
                    f"a source must give an iterable, but it returned "
                    f"{_repr(made)} ({type(made).__name__})",
                ) from exc
        # One generator, not one delegating to another: every item of every
        # source passes through this loop.
        try:
            while True:
                signal: Any = _NO_SIGNAL
                try:
                    for x in it:  # the hot path: a bare loop
                        if x is not None:
                            if type(x) in _SIGNALS:
                                signal = x
                                break
                            yield x
                except (GeneratorExit, *_PASS):
                    raise
                except BaseException as exc:
                    if self._ignored(exc, None):
                        continue
                    raise self._error(exc, None) from exc
                if signal is not _NO_SIGNAL:
                    try:
                        ended = _ends_stage(signal, "yielded")
                    except TypeError as exc:
                        raise self._error(exc, None) from exc
                    if not ended:
                        yield signal  # a class, not a signal: an item like any other
                        continue
                log.info("End of stream", extra={"stage": self.name, "worker": self.worker})
                return
        finally:  # ended early or not: the user's generator runs its finally blocks
            close = getattr(it, "close", None)
            if close is not None:
                self._guard(close, None)

    # -- transforms and sinks ----------------------------------------------------------
    def process(self, batch: list[Any], out: list[list[Any]]) -> None:
        """Apply the stage to every item of ``batch``, appending results to ``out``
        (one list per output port).  With several inputs, items are argument tuples.

        ``items_in`` counts the items taken in: all of them, or up to the one that
        ended the stage (StopFlow, a Sentinel, an error that stops the run).

        A concurrent stage starts the calls instead, waiting while ``concurrency``
        are in flight; what has finished meanwhile is in ``out`` (:meth:`settle`)."""
        if self.calls is not None:
            self._start(batch, out)
            return
        self.items_in += len(batch)
        self._reached = 0
        try:
            if self.envelope:  # inside a max_iterations loop: keep each item's pass count
                for k, (tag, x) in enumerate(batch):
                    tmp: list[list[Any]] = [[] for _ in out]
                    try:
                        self._process_from([x], 0, tmp)
                    finally:
                        self._reached = k  # the index in this batch, not in [x]
                    for port, items in zip(out, tmp, strict=False):
                        port.extend((tag, y) for y in items)
                return
            start = 0
            while start < len(batch):
                start = self._process_from(batch, start, out)
        except BaseException:
            self.items_in -= len(batch) - (self._reached + 1)
            raise

    # -- concurrent stages -------------------------------------------------------------
    def _start(self, batch: list[Any], out: list[list[Any]]) -> None:
        calls = self.calls
        assert calls is not None
        started = 0
        try:
            for x in batch:
                while calls.full:
                    calls.wait()
                    self.settle(out)
                self.items_in += 1
                calls.start(x, self._call(x))
                started += 1
        except BaseException:
            self.unstarted += len(batch) - started
            raise

    def _call(self, item: Any) -> Any:
        """What a call of ``item`` runs: a coroutine function, or a plain one."""
        f = self.fn
        x = item[1] if self.envelope else item
        args = x if self.arity > 1 else (x,)
        if self._agen:
            return lambda: _gather(f(*args))
        return lambda: f(*args)

    def settle(self, out: list[list[Any]]) -> None:
        """Deal with the calls that have finished: retry, emit, skip, route or raise
        (cancelling the others first), in input order where ``ordered``."""
        calls = self.calls
        assert calls is not None
        entries = calls.finished(self.ordered)
        for i, (key, item, future) in enumerate(entries):
            try:
                exc = future.exception()
            except CancelledError as cancelled:  # the call cancelled itself
                exc = cancelled
            if (
                exc is not None
                and not isinstance(exc, _PASS)
                and self._attempts.get(key, 0) < self.retries
            ):
                self._attempts[key] = self._attempts.get(key, 0) + 1
                if self.ordered:  # in its place: what finished after it waits for it
                    calls.again(key, item, self._call(item), entries[i + 1 :])
                    return
                calls.again(key, item, self._call(item), [])
                continue
            self._attempts.pop(key, None)
            self.settled += 1
            try:
                self._settle_one(item, exc, future, out)
            except StageError:  # the run fails: nothing else may go on running
                self._cancel_all()
                raise

    def settle_all(self, out: list[list[Any]]) -> None:
        """Wait for every call in flight, and deal with each."""
        calls = self.calls
        assert calls is not None
        while calls:
            calls.wait()
            self.settle(out)

    def _settle_one(
        self, item: Any, exc: BaseException | None, future: Any, out: list[list[Any]]
    ) -> None:
        tag, x = item if self.envelope else (None, item)
        into = [[] for _ in out] if self.envelope else out
        try:
            if exc is None:
                self._result(future.result(), into)
            elif isinstance(exc, _PASS):
                raise exc
            else:
                self._give_up(exc, x, into)
        finally:
            if self.envelope:
                for port, items in zip(out, into, strict=False):
                    port.extend((tag, y) for y in items)

    def _result(self, r: Any, out: list[list[Any]]) -> None:
        if self.stage.kind == "sink":
            if r is not None and type(r) in _SIGNALS:
                _ends_stage(r, "returned")
        elif self._agen:
            for y in r:
                self._emit(y, out, "yielded")
        elif self._spread:  # an async batch=n stage's list of results
            self._spread_out(r, out)
        elif r is not None:
            self._emit(r, out)

    def cancel_calls(self) -> int:
        """The stage stops: cancel and await its calls in flight; how many items
        they were for (with those of a batch never started), now dropped."""
        n = self._cancel_all() + self.unstarted
        self.unstarted = 0
        return n

    def _cancel_all(self) -> int:
        if self.calls is None:
            return 0
        n = len(self.calls.cancel())
        self.items_in -= n
        self._attempts.clear()
        return n

    def _timed(self, f: Any, limit: float) -> Any:
        """``f``, failing a call that returns after ``limit`` seconds (where the
        executor cannot abandon it sooner: the serial one; a worker's watchdog
        abandons it at the limit)."""

        def timed(*items: Any) -> Any:
            start = time.monotonic()
            r = f(*items)
            if time.monotonic() - start > limit:
                raise self.timed_out()
            return r

        return timed

    def timed_out(self) -> CallTimedOut:
        """The error of a call that ran too long (counted)."""
        self.timeouts += 1
        return CallTimedOut(f"the call ran longer than timeout={self.stage.timeout} s")

    def fail(self, item: Any, exc: BaseException, out: list[list[Any]]) -> None:
        """``item`` failed outside a call (its worker died running it, or ran too
        long): it goes through the error policy (skip, dead letters, or raise)."""
        self.items_in += 1
        self._settle_one(item, exc, None, out)

    def take_settled(self) -> int:
        n, self.settled = self.settled, 0
        return n

    def _process_from(
        self, batch: list[Any], start: int, out: list[list[Any]], catch: bool = True
    ) -> int:
        f = self.fn
        zipped = self.arity > 1
        i = start
        if self._fused is not None:
            for full in self._fused.take(batch if start == 0 else batch[start:]):
                self._call_list(full, out)
            return len(batch)
        try:
            if self._batcher is not None:
                full = self._batcher.take(batch if start == 0 else batch[start:])
                if out:
                    out[0].extend(full)
            elif self._coroutine is not None:
                for i in range(start, len(batch)):
                    self._regulate(batch[i], out)
            elif self.stage.kind == "sink":
                rest = _from(batch, start)
                try:
                    for x in rest:
                        r = f(*x) if zipped else f(x)
                        if r is not None and type(r) in _SIGNALS:
                            _ends_stage(r, "returned")  # a sink's result is ignored, StopFlow's not
                finally:
                    i = len(batch) - rest.__length_hint__() - 1  # the item in hand
            elif self.n_outputs <= 1 and not self.generator and not zipped:
                append = out[0].append if out else _discard
                rest = _from(batch, start)
                try:
                    for x in rest:  # the hot path: keep it lean
                        r = f(x)
                        if r is not None:
                            if type(r) in _SIGNALS and _ends_stage(r, "returned"):
                                raise StageDone
                            append(r)
                finally:
                    i = len(batch) - rest.__length_hint__() - 1  # the item in hand
            else:
                for i in range(start, len(batch)):
                    x = batch[i]
                    r = f(*x) if zipped else f(x)
                    if self._spread:
                        self._spread_out(r, out)
                    elif self.generator:
                        for y in r:
                            self._emit(y, out, "yielded")
                    elif r is not None:
                        self._emit(r, out)
        except _PASS:
            self._reached = i
            raise
        except BaseException as exc:
            self._reached = i
            if not catch:
                raise
            self._failed(exc, batch[i], out)
        else:
            return len(batch)
        return i + 1

    def _failed(self, exc: BaseException, x: Any, out: list[list[Any]]) -> None:
        """An item's call raised: retry it, then skip it, route it, or raise."""
        for _ in range(self.retries):
            tmp: list[list[Any]] = [[] for _ in out]
            try:
                if self._fused is not None:  # x is a list the stage filled
                    self._call_list(x, tmp, catch=False)
                else:
                    self._process_from([x], 0, tmp, catch=False)
            except _PASS:
                raise
            except BaseException as again:
                exc = again
            else:
                for port, items in zip(out, tmp, strict=False):
                    port.extend(items)
                return
        self._give_up(exc, x, out)

    def _give_up(self, exc: BaseException, x: Any, out: list[list[Any]]) -> None:
        """An item failed for good: skip it, route it to the dead letters, or raise."""
        if self._ignored(exc, x):
            return
        if self.dead_letter is not None:
            self.errors += 1
            log.warning(
                "sent item %s to the dead letters after %s: %s",
                _repr(x),
                type(exc).__name__,
                _text(exc),
                extra={"stage": self.name, "worker": self.worker},
            )
            out[self.dead_letter].append(_failure(self, exc, x))
            return
        raise self._error(exc, x) from exc

    def split(self, items: Iterator[Any], out: list[list[Any]]) -> Iterator[None]:
        """Route each item of a multi-port source into ``out``, yielding once per item."""
        for x in items:
            self._emit(x, out)
            yield None

    def _spread_out(self, r: Any, out: list[list[Any]]) -> None:
        """The items of a batched call's result: at once when none is a signal
        or None (checked by type, in one pass), else one by one."""
        ys = list(r)
        if out and self.n_outputs <= 1 and _SPREAD_AS_IS.isdisjoint(map(type, ys)):
            out[0].extend(ys)
            return
        for y in ys:
            self._emit(y, out, "yielded")

    def _emit(self, r: Any, out: list[list[Any]], how: str = "returned") -> None:
        if is_sentinel(r) or (type(r) in _SIGNALS and _ends_stage(r, how)):
            raise StageDone
        if self.n_outputs <= 1:
            if r is not None and out:
                out[0].append(r)
            return
        for port, value in zip(out, r, strict=False):  # split a tuple by position
            if value is not None:
                port.append(value)

    def _regulate(self, x: Any, out: list[list[Any]]) -> None:
        y = self._coroutine.send(x)
        while y is not None:
            self._emit(y, out)
            try:
                y = next(self._coroutine)
            except StopIteration:
                self._coroutine = self._new_coroutine()
                return

    def _new_coroutine(self) -> Any:
        def start() -> Any:
            coroutine = self.call(**self.stage.init_kwargs)
            next(coroutine)
            return coroutine

        return self._guard(start, None)

    @property
    def holding(self) -> int:
        """Items a batch holds for its next list (0 for other stages)."""
        if self._fused is not None:
            return len(self._fused.held)
        held = getattr(self.functor, "held", None) if isinstance(self.stage, Batch) else None
        return len(held) if held else 0

    def _call_list(self, full: list[Any], out: list[list[Any]], catch: bool = True) -> None:
        """One call of a ``batch=n`` stage on a list it filled: the list is the
        item that retries, policies and dead letters see."""
        try:
            r = self.fn(full)
            if self.stage.kind == "sink":
                if r is not None and type(r) in _SIGNALS:
                    _ends_stage(r, "returned")
            else:
                self._spread_out(r, out)
        except _PASS:
            raise
        except BaseException as exc:
            if not catch:
                raise
            self._failed(exc, full, out)

    def flush(self, out: list[list[Any]]) -> None:
        """A batch sends its partial list (its first item has waited long enough)."""
        if self.holding and self._coroutine is not None:
            self._guard(self._regulate, None, FLUSH, out)

    def finish(self, out: list[list[Any]]) -> None:
        """At end of input: log it, and let a Regulator (or a batch=n stage)
        flush what it buffers."""
        log.info("End of stream", extra={"stage": self.name, "worker": self.worker})
        if self._fused is not None and self._fused.held:
            held, self._fused.held = self._fused.held, []
            self._call_list(held, out)
        if self._coroutine is None:
            return
        try:
            y = self._coroutine.throw(Sentinel())
            while y is not None:
                self._emit(y, out)
                y = next(self._coroutine)
        except (StopIteration, Sentinel):
            pass
        except BaseException as exc:
            raise self._error(exc, None) from exc

    # -- loop gates --------------------------------------------------------------------
    def route(self, items: list[Any]) -> tuple[list[Any], list[Any]]:
        """A loop gate's decision for body outputs: (back into the body, out)."""
        try:
            return self.stage.route(items)  # type: ignore[attr-defined,no-any-return]
        except _PASS:
            raise
        except BaseException as exc:
            bad = _first_failing(self.stage, items)
            raise self._error(exc, bad, hook="until") from exc

    # -- errors ----------------------------------------------------------------------
    def _hook(self, hook: Any, **kwargs: Any) -> None:
        """Run ``local_init`` or ``local_term`` (a coroutine function on the loop):
        StopFlow there is a mistake."""
        if inspect.iscoroutinefunction(hook) and self.loop is not None:
            sync, loop = hook, self.loop

            def hook(**kw: Any) -> Any:
                return loop.run(sync(**kw))

            hook.__name__ = sync.__name__
        try:
            self._guard(hook, None, **kwargs)
        except StopFlow as exc:
            raise self._error(exc, None, hook=hook.__name__) from exc

    def _guard(self, f: Any, item: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except _PASS:
            raise
        except BaseException as exc:
            raise self._error(exc, item, hook=getattr(f, "__name__", None)) from exc

    def _ignored(self, exc: BaseException, item: Any) -> bool:
        if self.skip or (self.ignore and isinstance(exc, self.ignore)):
            self.errors += 1
            log.warning(
                "ignored %s on item %s: %s",
                type(exc).__name__,
                _repr(item),
                _text(exc),
                extra={"stage": self.name, "worker": self.worker},
            )
            return True
        return False

    def _error(self, exc: BaseException, item: Any, hook: str | None = None) -> StageError:
        self.errors += 1
        where = f" in {hook}()" if hook in ("local_init", "local_term", "until") else ""
        text = (
            _STOP_IN_HOOK.get(hook or "", _text(exc)) if isinstance(exc, StopFlow) else _text(exc)
        )
        kind = StageTimeout if isinstance(exc, CallTimedOut) else StageError
        return kind(
            self.name,
            None if item is None else _repr(item),
            self.worker,
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            f"{type(exc).__name__}{where}: {text}",
        )


def _ends_stage(r: Any, how: str) -> bool:
    """For a result whose type is in ``_SIGNALS``: True for a Sentinel (the stage
    stops), False for any other class; a TypeError for StopFlow, which ends the
    flow only when raised."""
    if r is Sentinel or isinstance(r, Sentinel):
        return True
    if isinstance(r, StopFlow) or (isinstance(r, type) and issubclass(r, StopFlow)):
        raise TypeError(
            f"{how} StopFlow instead of raising it; StopFlow is not an item: "
            f"write `raise StopFlow` to end the flow cleanly"
        )
    return False


def _failure(runner: Runner, exc: BaseException, item: Any) -> Failure:
    try:
        pickle.loads(pickle.dumps(exc))
        kept: BaseException | None = exc
    except Exception:
        kept = None  # it could not reach the dead-letter stage: keep the text
    return Failure(
        runner.name,
        item,
        f"{type(exc).__name__}: {_text(exc)}",
        kept,
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        runner.worker,
    )


def _first_failing(gate: Any, items: list[Any]) -> Any:
    for x in items:
        try:
            gate.route([x])
        except Exception:
            return x[1] if gate.enveloped else x
    return None


def _bind(f: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``f`` with its bound arguments after the item(s); ``f`` itself when there are
    none (a call with ``*args, **kwargs`` takes a slower path in CPython)."""
    if not args and not kwargs:
        return f

    def bound(*items: Any) -> Any:
        return f(*items, *args, **kwargs)

    return bound


def _from(batch: list[Any], start: int) -> Any:
    """An iterator over ``batch[start:]`` that knows its place (its length hint is
    what is left), so a loop over it needs no index to name the item in hand."""
    rest: Any = iter(batch)
    if start:
        rest.__setstate__(start)
    return rest


def _discard(_: Any) -> None:
    pass


def describe(item: Any) -> str:
    """A short ``repr`` of ``item`` for an error message, which never raises."""
    return _repr(item)


def _text(exc: BaseException) -> str:
    """``str(exc)``, or what went wrong making it: a broken ``__str__`` must not
    hide the real error, nor change how it is reported."""
    try:
        return str(exc)
    except Exception as inner:
        return f"<unprintable {type(exc).__name__}: {type(inner).__name__}: {inner}>"


def _repr(item: Any, limit: int = 200) -> str:
    """``repr(item)`` on one line (a numpy array's or a DataFrame's spans several,
    which would split the error's first line), cut at ``limit`` characters."""
    try:
        text = repr(item)
    except Exception as exc:  # a broken __repr__ (or one too deep) must not hide the error
        text = f"<unrepresentable {type(item).__name__}: {type(exc).__name__}: {_text(exc)}>"
    lines = text[: 4 * limit].splitlines()  # what is cut off would not be shown
    if len(lines) > 1:
        text = " ".join(line.strip() for line in lines if line.strip()) or text
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _gather(generator: Any) -> list[Any]:
    """Everything an async generator transform yields for one item."""
    return [y async for y in generator]


def _blocking(generator: Any, loop: EventLoop) -> Iterator[Any]:
    """An async generator's items, one at a time, each awaited on ``loop``."""
    try:
        while True:
            try:
                yield loop.run(generator.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run(generator.aclose())
