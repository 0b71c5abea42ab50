"""minipipe's "Introduction to PipeLine" toy example, in the decorator DSL.

Load, transform and save run as a pipeline of processes; ``workers=2`` gives the
slowest stage two processes (``ordered=True``, the default, keeps the order).
The explicit-API version is ``examples/minipipe/toy_pipeline.py``.
"""

import time

from flowdsl import sink, source, transform


@source
def loader(n=10):
    for i in range(n):
        time.sleep(0.005)  # simulate loading
        yield i


@transform
def square(x):
    time.sleep(0.01)  # simulate an expensive transformation
    return x**2


@sink
def save(x):
    time.sleep(0.005)  # simulate saving
    print(f"x = {x}", flush=True)


if __name__ == "__main__":
    flow = loader(10) >> square >> save
    print(flow.run())  # a RunReport: items and busy seconds per stage

    fast = loader(10) >> square.options(workers=2) >> save
    print(fast.diagram().source)  # one "square" node, marked with its 2 workers
    report = fast.run()
    print(f"bottleneck: {report.bottleneck}, {report.seconds:.3f} s")
