"""The README's first example: a source, a parallel transform and a stateful sink."""

from flowdsl import sink, source, transform


@source
def numbers(n):
    yield from range(n)


@transform(workers=2)
def square(x):
    return x * x


@sink
class MovingAverage:
    def __init__(self, window=10):
        self.window = window

    def local_init(self):  # runs once, in the worker process
        self.queue = []

    def run(self, x):
        self.queue = [*self.queue, x][-self.window :]

    def local_term(self):  # runs once, at the end
        print("last moving average:", sum(self.queue) / len(self.queue))


if __name__ == "__main__":
    report = (numbers(1000) >> square >> MovingAverage(10)).run()
    print(report)
