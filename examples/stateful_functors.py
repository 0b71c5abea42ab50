"""minipipe's "Stateful Functors" page in the decorator DSL.

State kept in a class: a random walk (the source remembers its last step) and a
moving average (the sink keeps a window of values), both living in their worker
process; the sink plots the result in ``local_term`` and saves it to
``moving_average.png``.  State kept in a loop: the Fibonacci numbers, carried
from one pass of ``fib`` to the next, until ``StopFlow``.

The page itself, on the explicit API, is ``examples/minipipe/stateful_functors.py``.
"""

import matplotlib.pyplot as plt
import numpy as np

from flowdsl import StopFlow, loop, sink, source, transform


@source
class RandomWalk:
    def __init__(self, n_steps=100, seed=None):
        self.n_steps = n_steps
        self.seed = seed

    def local_init(self):  # in the worker process
        self.rng = np.random.default_rng(self.seed)
        self.last_step = 0.0

    def run(self):
        for _ in range(self.n_steps):
            self.last_step += self.rng.standard_normal()
            yield self.last_step


@sink
class MovingAverage:
    def __init__(self, window_size=10, path="moving_average.png"):
        self.window_size = window_size
        self.path = path

    def local_init(self):
        self.queue = []
        self.values = []
        self.means = []

    def run(self, value):
        self.queue = [*self.queue, value][-self.window_size :]
        self.values.append(value)
        self.means.append(sum(self.queue) / len(self.queue))

    def local_term(self):  # once, after the last item: plot what was seen
        steps = range(len(self.values))
        plt.plot(steps, self.values, label="Random Walk")
        plt.plot(steps, self.means, label="Smoothed Walk")
        plt.title("Simple Moving Average")
        plt.xlabel("Steps")
        plt.legend()
        plt.savefig(self.path)
        plt.close()
        print(f"saved {self.path} ({len(self.values)} steps)", flush=True)


@transform
def fib(a, b):
    print(a, flush=True)
    if b >= 1000:
        raise StopFlow
    return b, a + b


if __name__ == "__main__":
    (RandomWalk(100, seed=0) >> MovingAverage(10)).run()
    loop(fib, seed=[(0, 1)]).run()  # 0 1 1 2 3 5 ... 987
