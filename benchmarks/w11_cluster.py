"""W11: the ray executor on a Ray cluster of three nodes, against a Ray actor
chain written by hand doing the same work with the same placement, in one run.

The cluster (``_ray.cluster``) is a head that runs no actor and nodes ``a`` and
``b``, each with its own raylet and object store; every stage is pinned to a
node, so every hop between ``a`` and ``b`` crosses nodes:

- arrays: 8 MB numpy arrays, source on ``a`` → identity on ``b`` → a sink on
  ``a`` that checks them (W3 across nodes, in MB/s);
- ints: tiny ints, source on ``a`` → +1 on ``b`` → *2 on ``a`` → the driver sums
  (W1 across nodes);
- cpu: ~1 ms of pure Python per item, source on ``a`` → two workers on ``b``
  (W2 across nodes).

Starting the cluster is not timed; starting and stopping the actors is, on both
sides.
"""

from __future__ import annotations

import functools
import time

import _ray
import w1_tiny_ints
import w2_cpu_bound
import w3_arrays
from _common import Case


def _rate(key: str, amount: float, t0: float) -> dict[str, float]:
    seconds = time.perf_counter() - t0
    return {key: amount / seconds, "seconds": seconds}


# -- arrays: source (a) -> identity (b) -> check (a) ----------------------------------------
def arrays_flowdsl(n: int) -> dict[str, float]:
    from flowdsl import RayExecutor, sink, source, transform

    executor = RayExecutor(
        stage_options={
            "arrays": _ray.pinned("a"),
            "identity": _ray.pinned("b"),
            "check": _ray.pinned("a"),
        }
    )
    with _ray.cluster():
        t0 = time.perf_counter()
        flow = source(w3_arrays.arrays)(n) >> transform(w3_arrays.identity) >> sink(w3_arrays.check)
        report = flow.run(executor=executor)
        assert report["check"].items_in == n
        return _rate("mb_per_s", n * w3_arrays.ITEMS * 8 / 1e6, t0)


def _checked(x):
    w3_arrays.check(x)
    return 1


def arrays_by_hand(n: int) -> dict[str, float]:
    with _ray.cluster():
        t0 = time.perf_counter()
        chain = _ray.chain(
            lambda: w3_arrays.arrays(n),
            w3_arrays.identity,
            _checked,
            batch=1,  # 8 MB items one at a time, as flowdsl sends them
            source_options=_ray.pinned("a"),
            options=(_ray.pinned("b"), _ray.pinned("a")),
        )
        count = sum(sum(batch) for batch in chain)
        assert count == n
        return _rate("mb_per_s", n * w3_arrays.ITEMS * 8 / 1e6, t0)


# -- ints: source (a) -> +1 (b) -> *2 (a) -> the driver sums ---------------------------------
def ints_flowdsl(n: int) -> dict[str, float]:
    from flowdsl import RayExecutor, source, transform

    executor = RayExecutor(
        stage_options={
            "numbers": _ray.pinned("a"),
            "add1": _ray.pinned("b"),
            "mul2": _ray.pinned("a"),
        }
    )
    with _ray.cluster():
        t0 = time.perf_counter()
        flow = (
            source(w1_tiny_ints.numbers)(n)
            >> transform(w1_tiny_ints.add1)
            >> transform(w1_tiny_ints.mul2)
        )
        total = sum(flow.iterate(executor=executor))
        assert total == n * (n + 1)
        return _rate("items_per_s", n, t0)


def ints_by_hand(n: int) -> dict[str, float]:
    with _ray.cluster():
        t0 = time.perf_counter()
        chain = _ray.chain(
            lambda: w1_tiny_ints.numbers(n),
            w1_tiny_ints.add1,
            w1_tiny_ints.mul2,
            source_options=_ray.pinned("a"),
            options=(_ray.pinned("b"), _ray.pinned("a")),
        )
        total = sum(sum(batch) for batch in chain)
        assert total == n * (n + 1)
        return _rate("items_per_s", n, t0)


# -- cpu: source (a) -> burn, 2 workers (b) --------------------------------------------------
def cpu_flowdsl(n: int, loops: int) -> dict[str, float]:
    from flowdsl import RayExecutor, source, transform

    executor = RayExecutor(stage_options={"numbers": _ray.pinned("a"), "burn": _ray.pinned("b")})
    with _ray.cluster():
        t0 = time.perf_counter()
        flow = source(w2_cpu_bound.numbers)(n) >> transform(w2_cpu_bound.burn, workers=2)(
            loops=loops
        )
        count = sum(1 for _ in flow.iterate(executor=executor))
        assert count == n
        return _rate("items_per_s", n, t0)


def cpu_by_hand(n: int, loops: int) -> dict[str, float]:
    with _ray.cluster():
        t0 = time.perf_counter()
        chain = _ray.chain(
            lambda: w2_cpu_bound.numbers(n),
            functools.partial(w2_cpu_bound.burn, loops=loops),
            workers=(2,),
            batch=8,  # as in W2: 1 ms items, shared evenly by two workers
            source_options=_ray.pinned("a"),
            options=(_ray.pinned("b"),),
        )
        count = sum(len(batch) for batch in chain)
        assert count == n
        return _rate("items_per_s", n, t0)


def cases(quick: bool, loops: int = 0) -> list[Case]:
    arrays, ints, cpu = (12, 20_000, 200) if quick else (150, 1_000_000, 2000)
    out = []
    for work, size, extra in (
        ("arrays", arrays, {}),
        ("ints", ints, {}),
        ("cpu", cpu, {"loops": loops}),
    ):
        for who, label in (("flowdsl", "flowdsl-ray"), ("by_hand", "ray-by-hand")):
            out.append(
                Case(
                    f"{work}: {label}",
                    label,
                    f"{work}_{who}",
                    {"n": size, **extra},
                    timeout=240,
                    note="three-node cluster (benchmarks/_ray.py)" if who == "by_hand" else "",
                )
            )
    return out
