"""The static types of decorated stages, for type checkers (mypy, pyright).

Nothing here runs: a decorated function *is* a :class:`~flowdsl.Source`,
:class:`~flowdsl.Transform` or :class:`~flowdsl.Sink`.  These classes only tell
a type checker more about it: what it takes and makes (from the function's
annotations) and which arguments calling it binds (the function's own
parameters after the item, through ``ParamSpec``), so ``scale(factor=3)`` is
checked like a call of ``scale`` and ``numbers(10) >> takes_str`` is an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypedDict, TypeVar, overload

from ._flow import Nothing
from ._stages import Sink, Source, Transform

if TYPE_CHECKING:
    from typing import Concatenate

    from typing_extensions import NotRequired, Required

__all__ = ["SinkFunction", "SourceFunction", "TransformFunction"]

P = ParamSpec("P")
A = TypeVar("A")
B = TypeVar("B")
_A = TypeVar("_A", contravariant=True)
_B = TypeVar("_B", covariant=True)


class SourceFunction(Source[B], Generic[P, B]):
    """A decorated source function: calling it binds the function's arguments."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Source[B]:  # type: ignore[override]
        raise NotImplementedError  # (the runtime object is a Source)


class TransformFunction(Transform[A, B], Generic[A, B, P]):
    """A decorated transform function: calling it binds the arguments after the item."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Transform[A, B]:  # type: ignore[override]
        raise NotImplementedError


class SinkFunction(Sink[A], Generic[A, P]):
    """A decorated sink function: calling it binds the arguments after the item."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Sink[A]:  # type: ignore[override]
        raise NotImplementedError


class Runs(Protocol[_A, _B]):
    """An object whose ``run(item)`` is called per item."""

    def run(self, item: _A, /) -> _B: ...


class Produces(Protocol[_B]):
    """An object whose ``run()`` returns the items of a source."""

    def run(self) -> Iterable[_B]: ...


_R = TypeVar("_R", bound=Runs[Any, Any])  # a stage class: it keeps its type
_P = TypeVar("_P", bound=Produces[Any])


class SourceOptions(TypedDict, total=False):
    name: str | None
    workers: int
    buffer: int | None


class _Options(TypedDict, total=False):
    name: str | None
    workers: int
    buffer: int | None
    on_error: Any
    retries: int
    concurrency: int | None
    timeout: float | None
    restarts: int
    max_items_per_worker: int | None
    check_types: bool


class TransformOptions(_Options, total=False):
    ordered: bool
    batch: NotRequired[None]


class BatchedTransformOptions(_Options, total=False):
    ordered: bool
    batch: Required[int]


class SinkOptions(_Options, total=False):
    batch: NotRequired[None]


class BatchedSinkOptions(_Options, total=False):
    batch: Required[int]


class TransformDecorator(Protocol):
    """What ``@transform(...)`` returns when given options only."""

    @overload
    def __call__(self, obj: type[_R], /) -> type[_R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(
        self, obj: Callable[Concatenate[A, P], Iterator[B]], /
    ) -> TransformFunction[A, B, P]: ...
    @overload
    def __call__(
        self, obj: Callable[Concatenate[A, P], AsyncIterator[B]], /
    ) -> TransformFunction[A, B, P]: ...
    @overload
    def __call__(
        self, obj: Callable[Concatenate[A, P], Coroutine[Any, Any, B | None]], /
    ) -> TransformFunction[A, B, P]: ...
    @overload
    def __call__(
        self, obj: Callable[Concatenate[A, P], None], /
    ) -> TransformFunction[A, Nothing, P]: ...
    @overload
    def __call__(
        self, obj: Callable[Concatenate[A, P], B | None], /
    ) -> TransformFunction[A, B, P]: ...


class BatchedTransformDecorator(Protocol):
    """What ``@transform(batch=n, ...)`` returns: the function takes lists."""

    @overload
    def __call__(
        self, obj: Callable[P, Runs[list[A], Iterable[B]]], /
    ) -> Callable[P, Transform[A, B]]: ...

    @overload
    def __call__(
        self, obj: Callable[Concatenate[list[A], P], Iterable[B]], /
    ) -> TransformFunction[A, B, P]: ...
    @overload
    def __call__(
        self, obj: Callable[Concatenate[list[A], P], Coroutine[Any, Any, Iterable[B]]], /
    ) -> TransformFunction[A, B, P]: ...
    @overload
    def __call__(self, obj: Callable[..., Any], /) -> TransformFunction[Any, Any, ...]: ...


class SinkDecorator(Protocol):
    """What ``@sink(...)`` returns when given options only."""

    @overload
    def __call__(self, obj: type[_R], /) -> type[_R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, obj: Callable[Concatenate[A, P], object], /) -> SinkFunction[A, P]: ...


class BatchedSinkDecorator(Protocol):
    """What ``@sink(batch=n, ...)`` returns: the function takes lists."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, obj: Callable[P, Runs[list[A], object]], /
    ) -> Callable[P, Sink[A]]: ...
    @overload
    def __call__(self, obj: Callable[Concatenate[list[A], P], object], /) -> SinkFunction[A, P]: ...


class SourceDecorator(Protocol):
    """What ``@source(...)`` returns when given options only."""

    @overload
    def __call__(self, obj: type[_P], /) -> type[_P]: ...
    @overload
    def __call__(self, obj: Callable[P, AsyncIterator[B]], /) -> SourceFunction[P, B]: ...
    @overload
    def __call__(self, obj: Callable[P, Iterable[B]], /) -> SourceFunction[P, B]: ...
