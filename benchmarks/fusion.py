"""Would fusing adjacent single-worker stages into one process pay?

Runs two flows as separate stages and hand-fused (one stage doing both steps):
tiny items (W1's +1 and *2) and two CPU-bound steps of 0.5 ms each.  Fusion saves
a hop's serialisation but gives up running the two steps on two cores at once.

    .bench-venv/bin/python benchmarks/fusion.py
"""

from __future__ import annotations

import statistics
import time

from w1_tiny_ints import add1, add1_mul2, mul2, numbers

from flowdsl import source, transform


def spin(x):
    end = time.perf_counter() + 0.0005
    while time.perf_counter() < end:
        pass
    return x


def spin_spin(x):
    return spin(spin(x))


def rate(flow, n: int) -> float:
    t0 = time.perf_counter()
    for _ in flow.iterate():
        pass
    return n / (time.perf_counter() - t0)


def compare(title: str, n: int, steps: list, fused) -> None:
    apart, together = [], []
    for _ in range(3):
        flow = source(numbers)(n)
        for step in steps:
            flow = flow >> transform(step)
        apart.append(rate(flow, n))
        together.append(rate(source(numbers)(n) >> transform(fused), n))
    a, b = statistics.median(apart), statistics.median(together)
    print(
        f"{title:<28} separate {a:>12,.0f} items/s   fused {b:>12,.0f} items/s   "
        f"fused/separate {b / a:.2f}x"
    )


if __name__ == "__main__":
    compare("tiny ints (+1, *2)", 2_000_000, [add1, mul2], add1_mul2)
    compare("2 x 0.5 ms of Python", 2_000, [spin, spin], spin_spin)
