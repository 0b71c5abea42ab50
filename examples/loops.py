"""Loops: cycles built with ``loop(body, seed=..., until=..., max_iterations=...)``.

Every output of the body goes back into it, until ``until(output)`` is true (the
item then leaves the loop), until it has made ``max_iterations`` passes, or until
a stage raises ``StopFlow``, which ends the whole flow cleanly.
"""

from flowdsl import StopFlow, loop, sink, source, transform


# 1. Fibonacci: a loop fed only by its seed, ended by StopFlow.
@transform
def fib(a, b):  # a body with two parameters receives each pair unpacked
    print(a, flush=True)
    if b >= 1000:
        raise StopFlow
    return b, a + b


# 2. Collatz: items come from upstream and leave when `until` says so.
@source
def starts(n):
    for k in range(2, n + 1):
        yield k, k, 0  # (start, current value, steps so far)


@transform
def collatz_step(start, n, steps):
    return start, (n // 2 if n % 2 == 0 else 3 * n + 1), steps + 1


def reached_one(item):
    return item[1] == 1


@sink
def show_steps(item):
    start, _, steps = item
    print(f"{start} reaches 1 after {steps} steps", flush=True)


# 3. Newton's method: `until` stops at convergence, `max_iterations` bounds the work.
@source
def squares(values):
    for a in values:
        yield a, float(a)  # (a, first guess of sqrt(a))


@transform
def newton(a, x):
    return a, (x + a / x) / 2


def converged(item):
    a, x = item
    return abs(x * x - a) < 1e-12 * a


if __name__ == "__main__":
    report = loop(fib, seed=[(0, 1)]).run()  # prints 0 1 1 2 3 5 ... 987
    print("stopped by StopFlow:", report.stopped)

    (starts(10) >> loop(collatz_step, until=reached_one) >> show_steps).run()

    roots = squares([2, 10, 1e6]) >> loop(newton, until=converged, max_iterations=50)
    for a, x in sorted(roots.collect()):
        print(f"sqrt({a:g}) = {x:.12g}")

    # Only max_iterations: every item leaves after exactly three passes.
    print(sorted((squares([2, 10]) >> loop(newton, max_iterations=3)).collect()))
