"""Static types of flows, checked by mypy --strict and by basedpyright (see
tests/test_typing.py).  ``assert_type`` lines must hold; each line marked with
``type: ignore[...]`` (mypy) and ``pyright: ignore[...]`` must be an error, as
both checkers are run so that an ignore with no error to ignore fails."""

# pyright: reportUnknownLambdaType=false, reportUnknownArgumentType=false
# pyright: reportUnknownParameterType=false, reportUnknownVariableType=false
# (what is untyped stays unknown: strict pyright reports it, as it should)

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

from typing_extensions import assert_type

from flowdsl import Flow, Sink, Source, Transform, loop, merge, sink, source, transform
from flowdsl._flow import Nothing


@source
def numbers(n: int) -> Iterator[int]:
    yield from range(n)


@source
def words(n: int) -> Iterator[str]:
    yield from map(str, range(n))


@transform
def square(x: int) -> int:
    return x * x


@transform
def takes_str(s: str) -> str:
    return s.upper()


@transform
def scale(x: float, factor: float = 2.0) -> float:
    return x * factor


@transform
def odd(x: int) -> int | None:
    return x if x % 2 else None


@transform
def letters(s: str) -> Iterator[str]:
    yield from s


@transform(workers=2, ordered=False)
async def fetch(x: int) -> bytes:
    return bytes(x)


@transform(concurrency=4)
async def chunks(data: bytes) -> AsyncIterator[int]:
    for b in data:
        yield b


@transform(batch=64)
def lengths(xs: list[str]) -> list[int]:
    return [len(x) for x in xs]


@sink
def store(x: float) -> None:
    pass


@transform
class Doubler:
    def __init__(self, factor: int = 2) -> None:
        self.factor = factor

    def run(self, x: int) -> int:
        return x * self.factor


@transform
class Spelled:
    def run(self, x: int) -> Iterator[str]:
        yield from str(x)


@transform
class NonZero:
    def run(self, x: int) -> int | None:
        return x or None


@transform
def log_it(x: int) -> None:
    pass


@transform(batch=8)
class Model:
    def run(self, xs: list[int]) -> list[float]:
        return [x / 2 for x in xs]


def plain_opt(x: int) -> str | None:
    return str(x) if x else None


async def plain_async(x: int) -> str:
    return str(x)


# -- stages and flows carry their item types ----------------------------------------------
assert_type(numbers(10), Source[int])
assert_type(numbers(10) >> square, Flow[NoReturn, int])  # nothing enters a source
assert_type((numbers(10) >> square).collect(), list[int])
assert_type((numbers(10) >> odd).collect(), list[int])  # None filters
assert_type((numbers(10) >> square >> scale(factor=3)).collect(), list[float])
assert_type(list(numbers(10) >> square), list[int])
assert_type((numbers(3) >> fetch >> chunks).collect(), list[int])
assert_type((numbers(3) >> square >> Doubler(3)).collect(), list[int])
assert_type(numbers(3) >> store, Flow[NoReturn, Nothing])  # nothing leaves a sink
for item in (numbers(3) >> square).iterate(executor="serial"):
    assert_type(item, int)

# generators, batches and merges make their element types
assert_type((numbers(3) >> square >> (lambda x: str(x)) >> letters).collect(), list[str])
assert_type((words(3) >> lengths).collect(), list[int])
assert_type(merge(numbers(3), numbers(4) >> square).collect(), list[int])
assert_type((numbers(3) >> loop(square, until=lambda x: x > 100)).collect(), list[int])

# class stages and plain functions are read as transforms read them
assert_type((numbers(3) >> Spelled() >> takes_str).collect(), list[str])
assert_type((numbers(3) >> NonZero()).collect(), list[int])
assert_type((numbers(3) >> plain_opt).collect(), list[str])
assert_type((numbers(3) >> plain_async).collect(), list[str])
assert_type((numbers(3) >> square.options(workers=4)).collect(), list[int])
assert_type((numbers(3) >> loop(NonZero(), until=lambda x: x > 2)).collect(), list[int])
assert_type((numbers(3) >> log_it).collect(), list[Nothing])
# mypy keeps a decorated class's own type, whose run() takes the lists
_ = numbers(3) >> Model()  # type: ignore[operator]

# lambdas and unannotated functions keep working
with_lambda = numbers(3) >> (lambda x: x + 1) >> square


def untyped(x):  # type: ignore[no-untyped-def]  # pyright: ignore[reportMissingParameterType]
    return x


with_untyped = numbers(3) >> transform(untyped) >> square
explicit: Transform[Any, Any] = Transform(untyped)

# zips and broadcasts are built from lists: their items are Any
assert_type([numbers(3), numbers(3)] >> square, Flow[Any, int])
assert_type(numbers(3) >> [square, square], Flow[NoReturn, Any])

# -- what does not fit is an error --------------------------------------------------------
_ = numbers(10) >> takes_str  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
_ = numbers(10) >> letters  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
_ = numbers(10) >> scale >> takes_str  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
_ = numbers(10) >> fetch >> square  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
_ = scale(facter=3)  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
_ = scale(factor="3")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
_ = numbers("10")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
_ = Doubler(factor="2")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
_ = transform(square.func, workers="2")  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue, reportArgumentType]
_ = numbers(3) >> takes_str.options(workers=2)  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
_ = numbers(3) >> store >> square  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
_ = numbers(3) >> NonZero() >> takes_str  # type: ignore[operator]  # pyright: ignore[reportOperatorIssue]
wrong: list[str] = (numbers(3) >> square).collect()  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
sink_only: Sink[str] = store  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
