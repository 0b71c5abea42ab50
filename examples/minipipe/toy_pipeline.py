"""minipipe's "Introduction to PipeLine" toy example, on flowdsl's explicit API.

Three stages simulate loading, transforming and saving data. The sleeps are
100 times shorter than in the original page (0.5 s -> 0.005 s, 1 s -> 0.01 s),
so the timings below show the same ratios in a fraction of a second:

* a plain serial loop takes about 10 x (0.005 + 0.01 + 0.005) s;
* a PipeLine overlaps the three stages: about 10 x 0.01 s, the slowest stage;
* two processes on the transform halve that again.
"""

import time

import flowdsl as mp


# 'loads' data
def loader(n=10):
    for i in range(n):
        time.sleep(0.005)
        yield i


# performs square transformation to data
def transform(x):
    time.sleep(0.01)
    return x**2


# 'saves' data
def save(x):
    time.sleep(0.005)
    print(f"x = {x}", flush=True)


def serial():
    for data in loader():
        save(transform(data))


def pipeline(n_processes=1):
    pline = mp.PipeLine()
    pline.add(mp.Source(loader(), name="load"))  # the generator is initialised
    pline.add(mp.Transform(transform, name="trans"), n_processes=n_processes)
    pline.add(mp.Sink(save, name="save"))
    pline.build(log_lvl="WARNING")  # "INFO" (the default) logs each stage's end
    return pline


def timed(label, run):
    start = time.perf_counter()
    run()
    print(f"{label}: {time.perf_counter() - start:.3f} s\n")


def run_and_close(pline):
    pline.run()
    pline.close()


if __name__ == "__main__":
    timed("serial loop", serial)

    pline = pipeline()
    print(pline.diagram().source)
    timed("PipeLine", lambda: run_and_close(pline))

    pline = pipeline(n_processes=2)
    # one stage with two worker processes, which compete for one stream
    print(pline.diagram(draw_streams=True).source)
    timed("PipeLine, 2 processes on trans", lambda: run_and_close(pline))
