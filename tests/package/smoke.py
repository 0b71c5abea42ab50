"""Run by ``make package`` with the wheel installed in a fresh virtual
environment outside the checkout: the installed package imports, ships its
``py.typed``, runs the README's first screen, and runs a flow under spawn."""

from __future__ import annotations

import pathlib
import sys

import flowdsl
from flowdsl import ProcessExecutor, source, transform

HERE = pathlib.Path(flowdsl.__file__).resolve().parent


@source
def numbers(n: int):
    yield from range(n)


@transform(workers=2)
def square(x: int) -> int:
    return x * x


def main() -> None:
    checkout = pathlib.Path(sys.argv[1]).resolve()
    assert checkout not in HERE.parents, f"flowdsl imported from the checkout: {HERE}"
    assert (HERE / "py.typed").is_file(), "py.typed is missing from the wheel"
    assert (numbers(10) >> square).collect() == [x * x for x in range(10)]
    spawned = (numbers(20) >> square).collect(executor=ProcessExecutor("spawn"), timeout=60)
    assert spawned == [x * x for x in range(20)]
    print(f"flowdsl {flowdsl.__version__} from {HERE}: README screen and spawn run OK")


if __name__ == "__main__":
    main()
