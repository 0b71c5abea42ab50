"""Stages: the nodes of a flow, as plain configuration.

A stage holds *what* to run (a function, a generator, or an object with a ``run``
method) and *how* (name, workers, buffer, ordering).  It never runs anything
itself: executors turn stages into runners (see ``_core/runner.py``).

The three kinds share one class hierarchy with the minipipe-style explicit API:
``Source``, ``Transform`` and ``Sink`` accept minipipe's positional arguments
(``functor_obj, name, upstreams, downstreams, ...``) and the DSL's keyword
options alike; the decorators ``source``, ``transform`` and ``sink`` make them.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeVar, overload

from ._flow import DEAD_LETTER, Composable, Edge, Flow, In, Node, Nothing, Out, refuse_stop_flow
from ._types import hints_of
from .errors import GraphError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Iterator
    from typing import Concatenate, ParamSpec

    from typing_extensions import Self, Unpack

    from ._typing import (
        BatchedSinkDecorator,
        BatchedSinkOptions,
        BatchedTransformDecorator,
        BatchedTransformOptions,
        Produces,
        Runs,
        SinkDecorator,
        SinkFunction,
        SinkOptions,
        SourceDecorator,
        SourceFunction,
        SourceOptions,
        TransformDecorator,
        TransformFunction,
        TransformOptions,
    )

    P = ParamSpec("P")
    # a decorated class keeps its type: type checkers see its instances as the
    # objects with run() that '>>' takes (mypy ignores what class decorators return)
    _R = TypeVar("_R", bound=Runs[Any, Any])
    _P = TypeVar("_P", bound=Produces[Any])
A = TypeVar("A")
B = TypeVar("B")
_F = TypeVar("_F")

__all__ = [
    "Regulator",
    "Sink",
    "Source",
    "Stage",
    "StageClass",
    "Transform",
    "as_stage",
    "sink",
    "source",
    "transform",
]


# What each stage option means, written once: the docstrings of the decorators
# and of the stage classes take their ``Args:`` entries from here.
OPTION_DOCS = {
    "name": "The stage's name in reports, errors and diagrams (default: the function's or\n"
    "class's name). A stage used twice in one flow is two stages, named ``double_0``\n"
    "and ``double_1`` in reports, errors and executor options.",
    "workers": "How many worker processes (or Ray actors) run the stage (default 1; a\n"
    "source has exactly one).",
    "buffer": "The most items waiting in front of the stage (default 4096; a source has\n"
    "nothing in front of it, and its consumers' buffers hold it back). Big items are\n"
    "held to fewer: a queue holds at most 8 MB of them (64 MB on Ray).",
    "ordered": "Whether outputs keep the input order when several calls run at once\n"
    "(``workers > 1`` or ``concurrency > 1``; default True; False lets each result\n"
    "go as soon as it is ready).",
    "on_error": 'What an item whose call raised (after ``retries``) becomes: ``"raise"``\n'
    '(the default) stops the flow with a :class:`~flowdsl.StageError`, ``"skip"`` logs\n'
    "and counts it, and a stage receives a :class:`~flowdsl.Failure` describing it: a\n"
    "dead-letter sink, or (for a transform) a transform whose results join this\n"
    "stage's output, in arrival order, so the stage no longer keeps order.",
    "retries": "How many times a failing item is tried again before ``on_error`` decides.",
    "concurrency": "Items in flight in each worker, for stages that wait on IO: an\n"
    "``async def`` function runs on the worker's event loop, a plain function on\n"
    "that many threads (default 1).",
    "timeout": "Seconds a call may take: past it the item is abandoned, its worker\n"
    "replaced, and the item fails with :class:`~flowdsl.StageTimeout` (through\n"
    "``retries`` and ``on_error``).",
    "restarts": "How many times a worker that dies is replaced during a run. The item it\n"
    "held fails through ``retries`` and ``on_error`` (by default a ``StageError``\n"
    "caused by the death); one death more stops the flow with\n"
    ":class:`~flowdsl.WorkerDied` (default 0: the first death does).",
    "max_items_per_worker": "Replace each worker after this many items (bounds a leak).\n"
    "``timeout``, ``restarts`` and this option make items reach the stage one at a\n"
    "time, and are refused on sources, async or concurrent stages and regulators.",
    "batch": "Call the function with lists of up to this many items (for a transform,\n"
    "what it returns is spread into items again; see :func:`~flowdsl.batch`).",
    "check_types": "Check, in the workers, every item and result against the\n"
    "annotations; one that does not fit fails its call with ``TypeError``.",
    "ignore_exceptions": "minipipe's option: exception types logged and skipped (as\n"
    '``on_error="skip"`` for just these).',
    "init_kwargs": "minipipe's option: keyword arguments for an object's ``local_init``\n"
    "(or for a regulator's coroutine); a plain function ignores them.",
    "upstreams": "minipipe's explicit wiring: the streams this stage reads.",
    "downstreams": "minipipe's explicit wiring: the streams this stage writes.",
    "args": "Arguments bound after the item(s), as ``stage(...)`` binds them.",
    "kwargs": "Keyword arguments bound after the item(s).",
}


def with_options(*names: str) -> Callable[[_F], _F]:
    """Fill the ``<options>`` line of a docstring's ``Args:`` section with the
    entries of ``names`` from :data:`OPTION_DOCS`; without names, those of the
    options the function (or class) takes, in its signature's order."""

    def document(obj: _F) -> _F:
        chosen = names or [p for p in inspect.signature(obj).parameters if p in OPTION_DOCS]  # type: ignore[arg-type]
        entries = "".join(
            f"        {name}: " + OPTION_DOCS[name].replace("\n", "\n            ") + "\n"
            for name in chosen
        )
        obj.__doc__ = (obj.__doc__ or "").replace("        <options>\n", entries)
        return obj

    return document


@with_options()
class Stage(Composable[In, Out]):
    """A node of a flow: user code plus how to run it.

    What :func:`source`, :func:`transform` and :func:`sink` return. A stage only
    holds configuration; executors run it. Calling a stage returns a configured
    copy: for a source the call binds the generator's arguments, for a transform
    or sink it binds extra arguments passed after the item(s). The binding is
    checked against the signature at once.

    Args:
        functor_obj: What runs: a function, a generator function, or an object
            with a ``run`` method (and optional ``local_init``/``local_term``).
        <options>

    Raises:
        TypeError: ``functor_obj`` is already a stage, or a stage class not yet
            called.
        GraphError: An option is invalid (a ``ValueError``).

    Examples:
        >>> from flowdsl import Stage, transform
        >>> @transform
        ... def scale(x, factor=2):
        ...     return x * factor
        >>> isinstance(scale, Stage), scale.name, scale.workers
        (True, 'scale', 1)
        >>> scale.func(3)  # the function itself, for unit tests
        6
        >>> scale(factor=10).kwargs, scale.options(workers=4).workers
        ({'factor': 10}, 4)
    """

    kind: ClassVar[str] = "stage"
    _default_name: ClassVar[str] = "Stage"
    # whether the callable's annotations are the item types (not a regulator's)
    annotated_items: ClassVar[bool] = True
    _ref: tuple[str, str] | None = None  # where a decorated stage lives, for pickle

    def __init__(
        self,
        functor_obj: Any,
        name: str | None = None,
        upstreams: list[Any] | None = None,
        downstreams: list[Any] | None = None,
        ignore_exceptions: Iterable[type[BaseException]] | None = None,
        init_kwargs: dict[str, Any] | None = None,
        *,
        workers: int = 1,
        buffer: int | None = None,
        ordered: bool = True,
        on_error: Any = "raise",
        retries: int = 0,
        concurrency: int | None = None,
        timeout: float | None = None,
        restarts: int = 0,
        max_items_per_worker: int | None = None,
        batch: int | None = None,
        check_types: bool = False,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        refuse_stop_flow(functor_obj, f"a {self.kind}")
        if isinstance(functor_obj, Stage):
            raise TypeError(f"{functor_obj!r} is already a stage; it cannot be wrapped again")
        if isinstance(functor_obj, StageClass):
            raise TypeError(
                f"{functor_obj.name!r} is a stage class: call it to build a stage, "
                f"e.g. {functor_obj.name}(...)"
            )
        self.functor_obj = functor_obj
        self.name = name or _name_of(functor_obj) or self._default_name
        self.upstreams = list(upstreams or [])
        self.downstreams = list(downstreams or [])
        self.ignore_exceptions = tuple(ignore_exceptions or ())
        self.init_kwargs = dict(init_kwargs or {})
        self.workers = workers
        self.buffer = buffer
        self.ordered = ordered
        self.on_error = on_error
        self.retries = retries
        self.concurrency: int = concurrency  # type: ignore[assignment]  # checked below
        self.timeout = timeout
        self.restarts = restarts
        self.max_items_per_worker = max_items_per_worker
        self.batch = batch
        self.check_types = check_types
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.term_flag: Any = None
        self._check_options()

    def _check_options(self) -> None:
        """Every option checked against its type and against what the stage is:
        a bad value is a ``GraphError`` naming the stage and the option."""
        # each option on its own first, then how they fit the stage and each other
        if self.concurrency is None:
            self.concurrency = 1
        for option, minimum, optional in _WHOLE:
            _whole(self, option, minimum, optional)
        t = self.timeout
        if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool) or not t > 0):
            raise GraphError(
                f"{self.kind} {self.name!r}: timeout must be a number of seconds > 0, got {t!r}"
            )
        for flag in ("ordered", "check_types"):
            if not isinstance(getattr(self, flag), bool):
                raise GraphError(
                    f"{self.kind} {self.name!r}: {flag} must be True or False, "
                    f"got {getattr(self, flag)!r}"
                )
        self.on_error = _check_on_error(self.name, self.kind, self.on_error)
        if self.kind == "source" and self.workers != 1:
            raise GraphError(f"source {self.name!r}: a source runs in exactly one worker")
        _check_concurrency(self)
        _check_resilience(self)
        _check_batch(self)
        if self.check_types and self.kind == "source":
            raise GraphError(
                f"source {self.name!r}: check_types applies to what a stage "
                f"takes and makes: set it on the stages that read the source"
            )
        if self.check_types:
            hints_of(self)  # evaluated here, in the driver, and sent with the stage

    # -- introspection -------------------------------------------------------------
    @property
    def func(self) -> Any:
        """The user's original function (or object), for unit tests."""
        return self.functor_obj

    @property
    def callable(self) -> Callable[..., Any]:
        """What is called per item: ``run`` of an object, else the object itself."""
        run: Callable[..., Any] = callable_of(self.functor_obj)
        return run

    def hook(self, name: str) -> Callable[..., Any] | None:
        """``local_init`` / ``local_term`` of an object functor, if it has them."""
        hook: Callable[..., Any] | None = hook_of(self.functor_obj, name)
        return hook

    @property
    def is_generator(self) -> bool:
        """True when the callable is a generator function (a flat-map transform)."""
        return inspect.isgeneratorfunction(_unwrap(self.callable))

    @property
    def supervised(self) -> bool:
        """True when a worker of this stage may be replaced during a run
        (``timeout``, ``restarts`` or ``max_items_per_worker``): its items then
        reach it one at a time, so a worker never holds more than the one item it
        runs."""
        return (
            self.timeout is not None or self.restarts > 0 or self.max_items_per_worker is not None
        )

    @property
    def is_async_generator(self) -> bool:
        """True when the callable is an async generator function."""
        return inspect.isasyncgenfunction(_unwrap(self.callable))

    @property
    def is_async(self) -> bool:
        """True when the callable is a coroutine or async generator function: the
        stage runs on an event loop in each worker (hooks may be async too)."""
        f = _unwrap(self.callable)
        return inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)

    def signature(self) -> inspect.Signature | None:
        """The signature of what is called per item (None where Python has none)."""
        try:
            return inspect.signature(self.callable)
        except (TypeError, ValueError):
            return None

    def _as_flow(self) -> Flow:
        node = Node(self)
        inlets = () if self.kind == "source" else (node,)
        outlets: tuple[tuple[tuple[Node, int], ...], ...] = (
            () if self.kind == "sink" else (((node, 0),),)
        )
        flow = Flow((node,), (), inlets, outlets)
        if isinstance(self.on_error, Stage):  # failed items go to a dead-letter stage
            letters = self.on_error._as_flow()
            edges = tuple(Edge(node, DEAD_LETTER, n, 0) for n in letters.inlets)
            if letters.outlets:  # a dead-letter transform: what it makes rejoins the stream
                outlets = _rejoin(self, outlets, letters.outlets)
            flow = Flow.union([flow, letters], inlets, outlets, edges)
        return flow

    # -- configuration -------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Self:
        """Return a copy of this stage with ``args``/``kwargs`` bound."""
        new = self.options()
        new.args = self.args + args
        new.kwargs = {**self.kwargs, **kwargs}
        new._check_binding()
        return new

    def options(self, **changes: Any) -> Self:
        """Return a copy with options changed, e.g. ``square.options(workers=4)``.

        Args:
            **changes: New values for any option of :func:`transform` (and
                minipipe's ``ignore_exceptions`` and ``init_kwargs``).

        Raises:
            TypeError: An option is unknown.
            GraphError: A value is invalid for this stage.
        """
        new = copy.copy(self)
        new.upstreams, new.downstreams = list(self.upstreams), list(self.downstreams)
        for key, value in changes.items():
            if key not in _OPTIONS:
                raise TypeError(f"stage {self.name!r}: unknown option {key!r}")
            setattr(new, key, value)
        new.ignore_exceptions = tuple(new.ignore_exceptions or ())
        new.init_kwargs = dict(new.init_kwargs or {})
        new._check_options()
        return new

    def _check_binding(self) -> None:
        """Raise ``TypeError`` naming the stage if the bound arguments cannot fit."""
        if self.bind_error(None) is not None:
            raise TypeError(self.bind_error(None))

    def bind_error(self, n_items: int | None) -> str | None:
        """Why the stage cannot be called with ``n_items`` items (any count if None)."""
        sig = self.signature()
        if sig is None:
            return None
        counts = (
            [0]
            if self.kind == "source"
            else ([n_items] if n_items is not None else range(1, _max_positional(sig) + 1))
        )
        last = ""
        for n in counts:
            try:
                sig.bind(*([None] * n), *self.args, **self.kwargs)
                return None
            except TypeError as exc:
                last = str(exc)
        what = (
            ""
            if self.kind == "source"
            else (f" with {n_items} item argument(s)" if n_items is not None else " with an item")
        )
        return f"{self.kind} {self.name!r} cannot be called{what}: {last}"

    # -- data model ----------------------------------------------------------------
    def __repr__(self) -> str:
        extra = f", workers={self.workers}" if self.workers != 1 else ""
        return f"{type(self).__name__}({self.name!r}{extra})"

    def __copy__(self) -> Stage:
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __reduce__(self) -> Any:
        # A decorated module-level stage pickles by reference, like a function.
        ref = self.__dict__.get("_ref")
        if ref is not None and _lookup(*ref) is self:
            return _lookup, ref
        return super().__reduce__()

    # minipipe API ---------------------------------------------------------------
    def set_term_flag(self, term_flag: Any) -> None:
        """Stop this stage when ``term_flag`` (an ``Event``) is set."""
        self.term_flag = term_flag

    def set_upstreams(self, upstreams: list[Any]) -> None:
        """minipipe's wiring: read from these :class:`~flowdsl.Stream` objects."""
        self.upstreams = list(upstreams)

    def set_downstreams(self, downstreams: list[Any]) -> None:
        """minipipe's wiring: write to these :class:`~flowdsl.Stream` objects."""
        self.downstreams = list(downstreams)

    def get_upstreams(self) -> list[Any]:
        """The streams this stage reads (minipipe's wiring)."""
        return self.upstreams

    def get_downstreams(self) -> list[Any]:
        """The streams this stage writes (minipipe's wiring)."""
        return self.downstreams


@with_options()
class Source(Stage[NoReturn, Out]):
    """A stage that produces items: a generator, an iterable, or an object whose
    ``run()`` returns one.

    minipipe's class, for the explicit API; :func:`source` makes the same stage
    from a decorator.

    Args:
        functor_obj: A generator function, a function returning an iterable, or
            an object whose ``run()`` returns one.
        <options>
        **options: The stage options of :func:`source`.

    Examples:
        >>> from flowdsl import Source
        >>> def numbers():
        ...     yield from range(3)
        >>> Source(numbers, name="numbers").collect()
        [0, 1, 2]
    """

    kind = "source"
    _default_name = "Source"

    def __init__(
        self,
        functor_obj: Any,
        name: str | None = None,
        downstreams: list[Any] | None = None,
        ignore_exceptions: Iterable[type[BaseException]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(functor_obj, name, None, downstreams, ignore_exceptions, **options)


@with_options()
class Transform(Stage[In, Out]):
    """A stage that maps each item to zero, one or many items.

    minipipe's class, for the explicit API; :func:`transform` makes the same
    stage from a decorator.

    Args:
        functor_obj: A function, a generator function, or an object with a
            ``run`` method.
        <options>

    Examples:
        >>> from flowdsl import Source, Transform
        >>> def numbers():
        ...     yield from range(3)
        >>> (Source(numbers) >> Transform(lambda x: x + 1)).collect()
        [1, 2, 3]
    """

    kind = "transform"
    _default_name = "Transform"


@with_options()
class Sink(Stage[In, Nothing]):
    """A stage that consumes items; its return value is ignored.

    minipipe's class, for the explicit API; :func:`sink` makes the same stage
    from a decorator.

    Args:
        functor_obj: A function or an object with a ``run`` method.
        <options>
        **options: The stage options of :func:`sink`.

    Examples:
        >>> from flowdsl import Sink, Source
        >>> def numbers():
        ...     yield from range(3)
        >>> report = (Source(numbers) >> Sink(print)).run(executor="serial")
        0
        1
        2
    """

    kind = "sink"
    _default_name = "Sink"

    def __init__(
        self,
        functor_obj: Any,
        name: str | None = None,
        upstreams: list[Any] | None = None,
        ignore_exceptions: Iterable[type[BaseException]] | None = None,
        init_kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            functor_obj, name, upstreams, None, ignore_exceptions, init_kwargs, **options
        )


@with_options(
    "name",
    "upstreams",
    "downstreams",
    "ignore_exceptions",
    "init_kwargs",
    "workers",
    "buffer",
    "ordered",
    "on_error",
    "retries",
    "args",
    "kwargs",
)
class Regulator(Transform[Any, Any]):
    """A transform driven by a coroutine, for batching or splitting items.

    minipipe's class. The coroutine function is called with ``init_kwargs`` in
    the worker; each item is sent to it and everything it yields until it next
    waits is emitted. At end of stream :class:`Sentinel` is thrown into it, so
    one that buffers can flush by catching it and yielding what it holds.
    (:func:`batch` does this for the common case.) ``concurrency``, ``batch``,
    ``timeout``, ``restarts`` and ``max_items_per_worker`` are refused: a
    coroutine holds state from one item to the next.

    Args:
        functor_obj: A generator function used as a coroutine: ``item = yield
            output`` (yield ``None`` to emit nothing).
        <options>

    Examples:
        >>> from flowdsl import Regulator, Sentinel, Source
        >>> def pairs():
        ...     held = []
        ...     try:
        ...         while True:
        ...             held.append((yield))
        ...             if len(held) == 2:
        ...                 yield tuple(held)
        ...                 held = []
        ...     except Sentinel:
        ...         if held:
        ...             yield tuple(held)
        >>> def numbers():
        ...     yield from range(5)
        >>> (Source(numbers) >> Regulator(pairs)).collect(executor="serial")
        [(0, 1), (2, 3), (4,)]
    """

    kind = "transform"
    _default_name = "Regulator"
    annotated_items = False  # its coroutine's annotations say nothing of the items

    @property
    def is_generator(self) -> bool:
        """False: a regulator's function is its coroutine's factory, not a flat map."""
        return False


_OPTIONS = {
    "name",
    "workers",
    "buffer",
    "ordered",
    "ignore_exceptions",
    "init_kwargs",
    "on_error",
    "retries",
    "concurrency",
    "timeout",
    "restarts",
    "max_items_per_worker",
    "batch",
    "check_types",
}


class StageClass:
    """What a stage decorator returns for a class: calling it constructs the
    instance (in the driver) and returns a stage wrapping it."""

    def __init__(self, stage_type: type[Stage], cls: type, options: dict[str, Any]) -> None:
        refuse_stop_flow(cls, f"@{stage_type.kind}")
        if not callable(getattr(cls, "run", None)):
            raise TypeError(f"{stage_type.kind} class {cls.__name__!r} needs a run() method")
        self.stage_type, self.cls, self.options = stage_type, cls, options
        self.name = options.get("name") or cls.__name__
        functools.update_wrapper(self, cls, updated=())
        self._ref = _reroute(cls, "cls")

    def __reduce__(self) -> Any:
        if self._ref is not None and _lookup(*self._ref) is self:
            return _lookup, self._ref
        return super().__reduce__()

    def __call__(self, *args: Any, **kwargs: Any) -> Stage:
        try:
            instance = self.cls(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.stage_type.kind} {self.name!r}: {exc}") from exc
        return self.stage_type(instance, **{"name": self.name, **self.options})

    def __repr__(self) -> str:
        return f"<{self.stage_type.kind} class {self.name}>"


def _decorate(stage_type: type[Stage], obj: Any, options: dict[str, Any]) -> Any:
    """What ``@source``/``@transform``/``@sink`` do, bare or with options."""
    options = {k: v for k, v in options.items() if v is not None or k == "buffer"}
    if obj is None:
        return lambda o: _decorate(stage_type, o, options)
    if inspect.isclass(obj):
        return StageClass(stage_type, obj, options)
    if not callable(obj):
        raise TypeError(f"@{stage_type.kind} needs a function or a class, got {obj!r}")
    stage = stage_type(obj, **options)
    functools.update_wrapper(stage, obj, updated=())
    stage._ref = _reroute(obj, "func")
    return stage


@overload
def source(obj: None = None, /, **options: Unpack[SourceOptions]) -> SourceDecorator: ...
@overload
def source(obj: type[_P], /, **options: Unpack[SourceOptions]) -> type[_P]: ...
@overload
def source(
    obj: Callable[P, AsyncIterator[B]], /, **options: Unpack[SourceOptions]
) -> SourceFunction[P, B]: ...
@overload
def source(
    obj: Callable[P, Iterable[B]], /, **options: Unpack[SourceOptions]
) -> SourceFunction[P, B]: ...


@with_options()
def source(
    obj: Any = None, *, name: str | None = None, workers: int = 1, buffer: int | None = None
) -> Any:
    """Make a source: the stage that starts a flow.

    It wraps a generator function (or an async generator function, run on an
    event loop in its worker), a function returning an iterable, or a class whose
    ``run()`` returns one. Usable bare (``@source``) or with options
    (``@source(name=...)``). Calling the result binds the function's arguments:
    ``numbers(10)``. A source runs in exactly one worker; a ``None`` it yields is
    dropped, as a transform's ``None`` is.

    Args:
        obj: The function or class (given when used bare, as ``@source``).
        <options>

    Returns:
        A source stage, or, for a class, a callable that builds one per call.

    Raises:
        GraphError: ``workers`` is not 1 (a source runs in exactly one worker), or
            ``buffer`` is not a positive integer; a ``ValueError``.
        TypeError: The bound arguments do not fit the function's signature.

    Examples:
        >>> from flowdsl import source
        >>> @source
        ... def numbers(n):
        ...     yield from range(n)
        >>> numbers(3).collect()
        [0, 1, 2]
    """
    return _decorate(Source, obj, {"name": name, "workers": workers, "buffer": buffer})


@overload
def transform(obj: None = None, /, **options: Unpack[TransformOptions]) -> TransformDecorator: ...
@overload
def transform(
    obj: None = None, /, **options: Unpack[BatchedTransformOptions]
) -> BatchedTransformDecorator: ...
@overload
def transform(obj: type[_R], /, **options: Unpack[TransformOptions]) -> type[_R]: ...  # type: ignore[overload-overlap]
@overload
def transform(
    obj: Callable[Concatenate[A, P], Iterator[B]], /, **options: Unpack[TransformOptions]
) -> TransformFunction[A, B, P]: ...
@overload
def transform(
    obj: Callable[Concatenate[A, P], AsyncIterator[B]], /, **options: Unpack[TransformOptions]
) -> TransformFunction[A, B, P]: ...
@overload
def transform(
    obj: Callable[Concatenate[A, P], Coroutine[Any, Any, B | None]],
    /,
    **options: Unpack[TransformOptions],
) -> TransformFunction[A, B, P]: ...
@overload
def transform(
    obj: Callable[Concatenate[A, P], None],
    /,
    **options: Unpack[TransformOptions],
) -> TransformFunction[A, Nothing, P]: ...
@overload
def transform(
    obj: Callable[Concatenate[A, P], B | None], /, **options: Unpack[TransformOptions]
) -> TransformFunction[A, B, P]: ...
@overload
def transform(
    obj: Callable[P, Runs[list[A], Iterable[B]]],
    /,
    **options: Unpack[BatchedTransformOptions],
) -> Callable[P, Transform[A, B]]: ...
@overload
def transform(
    obj: Callable[Concatenate[list[A], P], Iterable[B]],
    /,
    **options: Unpack[BatchedTransformOptions],
) -> TransformFunction[A, B, P]: ...


@with_options()
def transform(
    obj: Any = None,
    *,
    name: str | None = None,
    workers: int = 1,
    buffer: int | None = None,
    ordered: bool = True,
    on_error: Any = "raise",
    retries: int = 0,
    concurrency: int | None = None,
    timeout: float | None = None,
    restarts: int = 0,
    max_items_per_worker: int | None = None,
    batch: int | None = None,
    check_types: bool = False,
) -> Any:
    """Make a transform: one item in, one result out.

    A result of ``None`` emits nothing (a filter); a generator function emits
    everything it yields (a flat map). ``workers`` processes run it; with
    ``ordered`` (the default) outputs keep the input order; ``buffer`` bounds the
    queue in front of it, in items. Calling the result binds arguments passed
    after the item: ``scale(factor=3)``. Usable bare (``@transform``) or with
    options (``@transform(workers=4)``), on functions, generator functions, async
    functions and classes with a ``run`` method (``local_init`` and
    ``local_term`` run once in each worker).

    Failures go through ``retries`` and then ``on_error``, whatever caused them:
    an exception, a call past its ``timeout``, a worker that died. Edges whose
    two ends are annotated are checked when the flow is built, whatever
    ``check_types`` says.

    Args:
        obj: The function or class (given when used bare, as ``@transform``).
        <options>

    Returns:
        A transform stage, or, for a class, a callable that builds one per call.

    Raises:
        GraphError: An option is invalid for this stage (``workers < 1``, an
            unknown ``on_error``, ``concurrency`` on a generator, ...); a
            ``ValueError``.
        TypeError: The bound arguments do not fit the function's signature.

    Examples:
        >>> from flowdsl import source, transform
        >>> @source
        ... def numbers(n):
        ...     yield from range(n)
        >>> @transform(workers=2)
        ... def square(x):
        ...     return x * x
        >>> (numbers(5) >> square).collect()
        [0, 1, 4, 9, 16]
        >>> @transform
        ... def evens(x):
        ...     return x if x % 2 == 0 else None
        >>> (numbers(5) >> evens).collect(executor="serial")
        [0, 2, 4]
    """
    return _decorate(
        Transform,
        obj,
        {
            "name": name,
            "workers": workers,
            "buffer": buffer,
            "ordered": ordered,
            "on_error": on_error,
            "retries": retries,
            "concurrency": concurrency,
            "timeout": timeout,
            "restarts": restarts,
            "max_items_per_worker": max_items_per_worker,
            "batch": batch,
            "check_types": check_types,
        },
    )


@overload
def sink(obj: None = None, /, **options: Unpack[SinkOptions]) -> SinkDecorator: ...
@overload
def sink(obj: None = None, /, **options: Unpack[BatchedSinkOptions]) -> BatchedSinkDecorator: ...
@overload
def sink(obj: type[_R], /, **options: Unpack[SinkOptions]) -> type[_R]: ...  # type: ignore[overload-overlap]
@overload
def sink(
    obj: Callable[Concatenate[A, P], object], /, **options: Unpack[SinkOptions]
) -> SinkFunction[A, P]: ...
@overload
def sink(  # type: ignore[overload-overlap]
    obj: Callable[P, Runs[list[A], object]],
    /,
    **options: Unpack[BatchedSinkOptions],
) -> Callable[P, Sink[A]]: ...
@overload
def sink(
    obj: Callable[Concatenate[list[A], P], object], /, **options: Unpack[BatchedSinkOptions]
) -> SinkFunction[A, P]: ...


@with_options()
def sink(
    obj: Any = None,
    *,
    name: str | None = None,
    workers: int = 1,
    buffer: int | None = None,
    on_error: Any = "raise",
    retries: int = 0,
    concurrency: int | None = None,
    timeout: float | None = None,
    restarts: int = 0,
    max_items_per_worker: int | None = None,
    batch: int | None = None,
    check_types: bool = False,
) -> Any:
    """Make a sink: the stage that ends a flow, consuming items.

    Its return value is ignored. The options mean what they mean for
    :func:`transform` (``batch=n``: the sink gets lists of up to n items, for
    bulk writes). A class sink's ``local_term`` runs once per worker at the end,
    where it can flush or report.

    Args:
        obj: The function or class (given when used bare, as ``@sink``).
        <options>

    Returns:
        A sink stage, or, for a class, a callable that builds one per call.

    Raises:
        GraphError: An option is invalid for this stage (a ``ValueError``).
        TypeError: The bound arguments do not fit the function's signature.

    Examples:
        >>> from flowdsl import sink, source
        >>> @source
        ... def words():
        ...     yield from ["to", "be"]
        >>> @sink
        ... def show(word):
        ...     print(word)
        >>> report = (words() >> show).run(executor="serial")
        to
        be
        >>> report["show"].items_in
        2
    """
    return _decorate(
        Sink,
        obj,
        {
            "name": name,
            "workers": workers,
            "buffer": buffer,
            "on_error": on_error,
            "retries": retries,
            "concurrency": concurrency,
            "timeout": timeout,
            "restarts": restarts,
            "max_items_per_worker": max_items_per_worker,
            "batch": batch,
            "check_types": check_types,
        },
    )


def as_stage(obj: Any) -> Stage:
    """Wrap an undecorated thing met inside a flow: functions and objects with a
    ``run`` method become transforms."""
    if isinstance(obj, Stage):
        return obj
    refuse_stop_flow(obj, "a stage")
    if isinstance(obj, StageClass):
        raise TypeError(
            f"{obj.name!r} is a stage class, not a stage: call it to build one, "
            f"e.g. {obj.name}(...)"
        )
    if inspect.isclass(obj):
        raise TypeError(
            f"class {obj.__name__!r} was given where a stage is needed: pass an instance "
            f"({obj.__name__}(...)) or decorate the class"
        )
    if inspect.isgenerator(obj):
        raise TypeError(
            f"generator object {obj.__name__!r} was given where a stage is needed: pass the "
            f"generator function and decorate it with @source"
        )
    if callable(getattr(obj, "run", None)) or callable(obj):
        return Transform(obj)
    raise TypeError(f"{obj!r} is not a stage, a function or an object with a run() method")


# -- helpers -------------------------------------------------------------------------


def callable_of(functor: Any) -> Any:
    """What is called per item: ``run`` of an object, else the object itself."""
    run = getattr(functor, "run", None)
    if run is not None and callable(run) and not inspect.isfunction(functor):
        return run
    return functor


def hook_of(functor: Any, name: str) -> Any:
    """``local_init`` / ``local_term`` of an object functor, or None."""
    if inspect.isfunction(functor) or inspect.isgenerator(functor):
        return None
    hook = getattr(functor, name, None)
    return hook if callable(hook) else None


def _name_of(obj: Any) -> str | None:
    name = getattr(obj, "__name__", None)
    if name is None and not inspect.isfunction(obj):
        name = type(obj).__name__ if hasattr(obj, "run") else None
    if name == "<lambda>":
        return "lambda"
    return name


def _unwrap(func: Any) -> Any:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.unwrap(func) if callable(func) else func


def _max_positional(sig: inspect.Signature) -> int:
    kinds = [p.kind for p in sig.parameters.values()]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return max(1, len(kinds))
    return max(
        1,
        sum(
            k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for k in kinds
        ),
    )


# the options that take a whole number: their least value, and whether None (not
# set) is allowed
_WHOLE = (
    ("workers", 1, False),
    ("buffer", 1, True),
    ("retries", 0, False),
    ("concurrency", 1, False),
    ("restarts", 0, False),
    ("max_items_per_worker", 1, True),
    ("batch", 1, True),
)


def _whole(stage: Stage, option: str, minimum: int, optional: bool) -> None:
    """Refuse ``stage.<option>`` unless it is an integer >= ``minimum`` (or None,
    where ``optional``)."""
    n = getattr(stage, option)
    if n is None and optional:
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < minimum:
        raise GraphError(
            f"{stage.kind} {stage.name!r}: {option} must be an integer >= {minimum}, got {n!r}"
        )


def _check_on_error(name: str, kind: str, on_error: Any) -> Any:
    refuse_stop_flow(on_error, f"on_error of stage {name!r}")
    if on_error in ("raise", "skip"):
        if on_error == "skip" and kind == "source":
            raise GraphError(
                f"source {name!r}: a generator that raised cannot go on, so "
                f"on_error='skip' is for transforms and sinks"
            )
        return on_error
    if isinstance(on_error, Stage) and on_error.kind == "transform" and kind == "sink":
        raise GraphError(
            f"sink {name!r}: what a dead-letter transform makes would rejoin "
            f"the sink's output, and a sink has none; use a sink for on_error"
        )
    if isinstance(on_error, Stage) and on_error.kind in ("transform", "sink"):
        return on_error
    raise GraphError(
        f"{kind} {name!r}: on_error must be 'raise', 'skip' or a sink or "
        f"transform stage to receive the failures, got {on_error!r}"
    )


def _rejoin(
    stage: Stage, outlets: tuple[tuple[Any, ...], ...], letters: tuple[tuple[Any, ...], ...]
) -> tuple[tuple[Any, ...], ...]:
    """The outputs of ``stage`` merged with those of its dead-letter transform, so a
    replacement made for a failed item goes on downstream like a result."""
    if len(outlets) != 1 or len(letters) != 1:
        raise GraphError(
            f"stage {stage.name!r} has {len(outlets)} outputs: the results of "
            f"its dead-letter transform cannot rejoin them; use a sink for "
            f"on_error"
        )
    return ((*outlets[0], *letters[0]),)


def _check_concurrency(stage: Stage) -> None:
    """``concurrency`` checked against what the stage is."""
    n, name, kind = stage.concurrency, stage.name, stage.kind
    is_async = stage.is_async
    if n > 1 and kind == "source":
        raise GraphError(
            f"source {name!r}: a source is one generator, which yields one item "
            f"at a time; concurrency is for transforms and sinks"
            + (
                ""
                if is_async
                else " (an async generator source runs on its worker's event loop without it)"
            )
        )
    if n > 1 and stage.is_generator:
        raise GraphError(
            f"transform {name!r}: concurrency runs calls on threads, and a "
            f"generator's items are made as it is iterated; make it an async "
            f"generator (async def ... yield) to keep several in flight"
        )
    if n > 1 and isinstance(stage, Regulator):
        raise GraphError(
            f"Regulator {name!r}: one coroutine sees every item in turn; "
            f"it cannot have calls in flight at once"
        )
    if not is_async:
        for hook in ("local_init", "local_term"):
            if inspect.iscoroutinefunction(stage.hook(hook)):
                raise GraphError(
                    f"{kind} {name!r}: {hook} is a coroutine function but run "
                    f"is not; make run async too (both run on the worker's "
                    f"event loop)"
                )


def _check_batch(stage: Stage) -> None:
    """``batch=n``: lists of up to n items per call, for transforms and sinks."""
    n, kind, name = stage.batch, stage.kind, stage.name
    if n is None:
        return
    if kind == "source" or isinstance(stage, Regulator):
        raise GraphError(
            f"{kind} {name!r}: batch=n is for transforms and sinks (a source "
            f"can yield lists itself)"
        )
    if stage.concurrency > 1:
        raise GraphError(
            f"{kind} {name!r}: batch and concurrency cannot be combined yet; "
            f"put batch(n) before a concurrent stage that takes lists"
        )


def _check_resilience(stage: Stage) -> None:
    """``timeout``, ``restarts`` and ``max_items_per_worker``, checked against
    each other and against what the stage is."""
    name, kind = stage.name, stage.kind
    if not stage.supervised:
        return
    if kind == "source":
        raise GraphError(
            f"source {name!r}: a source's generator cannot be resumed in a new "
            f"process, so timeout, restarts and max_items_per_worker are for "
            f"transforms and sinks"
        )
    if stage.concurrency > 1 or stage.is_async:
        raise GraphError(
            f"{kind} {name!r}: a concurrent stage has many calls in flight, "
            f"not one item in hand, so it cannot be given timeout, restarts or "
            f"max_items_per_worker yet"
        )
    if isinstance(stage, Regulator):
        raise GraphError(
            f"Regulator {name!r}: its coroutine holds items between calls, "
            f"which a replaced worker would lose"
        )


def _reroute(obj: Any, attr: str) -> tuple[str, str] | None:
    """Keep a decorated module-level function or class picklable by reference.

    The module name now refers to the stage, so pickle could no longer find the
    original under its own name; pointing its ``__qualname__`` through the stage
    (``numbers.func``) lets the standard pickle find it again.  Returns where the
    stage itself lives, or None when it is not at module level.
    """
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if (
        not module
        or module == "__main__"
        or "<locals>" in qualname
        or _lookup(module, qualname) is obj
    ):
        return None  # nested, or still reachable by its name: pickle finds it as it is
    try:
        obj.__qualname__ = f"{qualname}.{attr}"
    except (AttributeError, TypeError):  # a builtin: pickles by its own name anyway
        return None
    return module, qualname


def _lookup(module: str, qualname: str) -> Any:
    try:
        obj: Any = importlib.import_module(module)
    except ImportError:
        return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    return obj
