"""Typed flows: annotations checked when the flow is built, in the workers, and as
a property test.  Run it with ``python examples/typed_flows.py``."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import strategies as st

from flowdsl import GraphError, source, transform
from flowdsl.testing import check_flow


@source
def readings(n: int) -> Iterator[float]:
    """Sensor readings, one of them a bad record (a string)."""
    for i in range(n):
        yield "n/a" if i == 3 else 20.0 + i / 2  # type: ignore[misc]


@transform
def to_fahrenheit(celsius: float) -> float:
    return celsius * 9 / 5 + 32


@transform
def label(fahrenheit: float) -> str:
    return f"{fahrenheit:.1f} F"


@transform
def shout(text: str) -> str:
    return text.upper()


if __name__ == "__main__":
    # 1. a type error is caught when the flow is built, before any worker starts
    try:
        readings(6) >> to_fahrenheit >> shout
    except GraphError as exc:
        print("caught before running:", str(exc).split(".")[0])

    # 2. data the annotations cannot promise: every item checked in the workers
    checked = to_fahrenheit.options(check_types=True, on_error="skip")
    print("labels:", (readings(6) >> checked >> label).collect())

    # 3. the types become a property test: inputs drawn from the annotations
    check_flow(to_fahrenheit >> label, max_examples=20)
    check_flow(readings >> label.options(name="ok"), n=st.integers(0, 3))
    print("property test passed: process and serial agree with plain Python")
