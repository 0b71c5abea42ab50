"""W10: what resilience costs: 1,000 items of ~0.2 ms through a stage whose worker
dies on 20 of them.

`plain` runs the stage at its defaults (batched items, nothing to replace).
`supervised` gives it `restarts=20, on_error="skip"`: items then travel one at
a time and each is noted before its call, which is what being able to replace a
worker costs. `20 deaths` is the same with 20 items that end their worker with
`os._exit`: the difference from `supervised`, over 20, is the cost of one
restart (a fresh process, `local_init`, the failed item through the policy).
"""

from __future__ import annotations

import os
import time

from _common import Case, flowdsl_executor

DEATHS = 20


def work(x: int) -> int:
    total = 0
    for i in range(2000):
        total += i * x
    return total


def _dies(x: int) -> int:
    if x % 50 == 25:
        os._exit(1)
    return work(x)


def numbers(n: int):
    yield from range(n)


def _run(n: int, fn, **options) -> dict[str, float]:
    from flowdsl import source, transform

    t = time.perf_counter()
    flow = source(numbers)(n) >> transform(fn).options(**options)
    count = sum(1 for _ in flow.iterate(executor=flowdsl_executor()))
    seconds = time.perf_counter() - t
    return {"flow_s": seconds, "count": count}


def plain(n: int) -> dict[str, float]:
    return _run(n, work)


def supervised(n: int) -> dict[str, float]:
    return _run(n, work, restarts=DEATHS, on_error="skip")


def deaths(n: int) -> dict[str, float]:
    result = _run(n, _dies, restarts=DEATHS, on_error="skip")
    if result["count"] != n - n // 50:
        raise AssertionError(f"{result['count']} results of {n - n // 50}")
    return result


def cases(quick: bool) -> list[Case]:
    kwargs = {"n": 1000}
    return [
        Case("flowdsl plain", "flowdsl", "plain", kwargs, timeout=60),
        Case("flowdsl supervised", "flowdsl", "supervised", kwargs, timeout=60),
        Case("flowdsl 20 deaths", "flowdsl", "deaths", kwargs, timeout=60),
    ]
