"""minipipe's "Introduction to PipeSystems" example, in the decorator DSL.

Two sources are merged, each array is split into batches of two by a generator
transform, each batch is summed, and each sum goes to one of two sinks.  Where
the explicit API uses a two-output "switch", the DSL broadcasts to two branches
that each keep what they want (a transform that returns ``None`` filters).

A stateful variant shows batching *across* items: a class transform buffers
items in the worker, and a ``Regulator`` does the same but also flushes its last,
partial batch at end of stream.  The explicit-API version is
``examples/minipipe/pipesystem.py``.
"""

import numpy as np

from flowdsl import Regulator, Sentinel, merge, sink, source, transform


@source
def gen_rand(n=5, seed=None):
    rng = np.random.default_rng(seed)  # a seed per source: no duplicated data
    for _ in range(n):
        yield rng.random(4)


@transform
def split(x, batch_size=2):  # a generator transform emits every item it yields
    for i in range(len(x) // batch_size):
        yield x[i * batch_size : (i + 1) * batch_size]


@transform
def sum_batch(x):
    return float(x.sum())


@transform
def above(x, limit=1):
    return x if x > limit else None


@transform
def below(x, limit=1):
    return x if x <= limit else None


@sink
def show(x, prefix=""):
    print(f"{prefix} {x:.4f}", flush=True)


@transform
class Batch:
    """Batching across items with state kept in the worker.  A trailing partial
    batch is dropped: a plain transform cannot emit after its last item."""

    def __init__(self, size):
        self.size = size

    def local_init(self):
        self.items = []

    def run(self, x):
        self.items.append(x)
        if len(self.items) == self.size:
            yield self.items
            self.items = []


def batcher(batch_size=2):
    """A Regulator coroutine: Sentinel is thrown in at end of stream to flush."""
    items = []
    try:
        while True:
            items.append((yield))
            if len(items) == batch_size:
                yield items
                items = []
    except Sentinel:
        if items:
            yield items


@source
def numbers(n):
    yield from range(n)


if __name__ == "__main__":
    sums = merge(gen_rand(5, seed=1), gen_rand(5, seed=2)) >> split >> sum_batch
    flow = sums >> [above >> show(prefix="1 <"), below >> show(prefix="1 >")]
    report = flow.run()
    print(report)

    print((numbers(7) >> Batch(3)).collect())  # [[0, 1, 2], [3, 4, 5]]
    regulator = Regulator(batcher, init_kwargs={"batch_size": 3})
    print((numbers(7) >> regulator).collect())  # [[0, 1, 2], [3, 4, 5], [6]]
