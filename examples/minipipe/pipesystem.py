"""minipipe's "Introduction to PipeSystems" example, on flowdsl's explicit API.

Two sources share one stream (their items merge), a Regulator breaks each array
into batches of two, a transform sums each batch, and a switch sends every sum
to one of two sinks: returning ``[x, None]`` or ``[None, x]`` to two downstreams
puts ``x`` on one of them only, because ``None`` means "no output".

The decorator-DSL version is ``examples/pipesystem.py``.
"""

import numpy as np

import flowdsl as mp


def genRand(n=5):
    # generates fake data
    for _ in range(n):
        yield np.random.rand(4)


def batch(batch_size=2):
    # A coroutine for breaking data up into batches of 2
    x = yield
    for i in range(len(x) // batch_size):
        yield x[i * batch_size : (i + 1) * batch_size]


def sumBatch(x):
    # simple transform on data
    return x.sum()


def switch(x):
    # if-then switch
    return [x, None] if x > 1 else [None, x]


def output_gt_1(x):
    # sink for greater than 1
    print("1 <", x, flush=True)


def output_lt_1(x):
    # sink for less than 1
    print("1 >", x, flush=True)


if __name__ == "__main__":
    s1, s2, s3, s4, s5 = mp.Stream(), mp.Stream(), mp.Stream(), mp.Stream(), mp.Stream()

    # Order is not important: the Streams define the graph
    pipes = [
        mp.Source(genRand(), "source1", downstreams=[s1]),
        mp.Source(genRand(), "source2", downstreams=[s1]),
        mp.Regulator(batch, "batcher", upstreams=[s1], downstreams=[s2]),
        mp.Transform(sumBatch, "sum", upstreams=[s2], downstreams=[s3]),
        mp.Transform(switch, "switch", upstreams=[s3], downstreams=[s4, s5]),
        mp.Sink(output_gt_1, "print_gt_1", upstreams=[s4]),
        mp.Sink(output_lt_1, "print_lt_1", upstreams=[s5]),
    ]

    psys = mp.PipeSystem(pipes)
    psys.build()  # log_lvl="INFO": each stage logs its end on stderr
    print(psys.diagram(draw_streams=True).source)
    psys.run()
    psys.close()  # 2 sources x 5 arrays x 2 batches: 20 lines, none lost
