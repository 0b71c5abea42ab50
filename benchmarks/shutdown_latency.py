"""How long a run takes to return once something goes wrong.

For each fault, the time from the fault to the driver getting control back:

- ``raise``: a stage raises; from the raise to ``StageError`` in the driver;
- ``kill``: a worker is killed by SIGKILL; from the kill to ``WorkerDied``;
- ``exit``: a worker calls ``os._exit``; from the exit to ``WorkerDied``;
- ``hang``: a stage blocks forever; from the ``timeout`` deadline to ``FlowTimeout``;
- ``ctrl-c``: SIGINT to the driver's process group, as a terminal sends it; from
  the signal to the driver printing that it caught ``KeyboardInterrupt``;
- ``stuck-term``: a stage raises while another's ``local_term`` never returns; from
  the raise to ``StageError`` (bounded by the 1 s grace period).

The flow is ``numbers >> fault(workers=2) >> inc(workers=2) >> sink`` over an
endless source, so every stage is busy when the fault fires.  Run it as
``python benchmarks/shutdown_latency.py [--runs N] [--methods fork,spawn]``; it
prints the median and the worst latency per fault and start method.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from flowdsl import (
    FlowTimeout,
    ProcessExecutor,
    StageError,
    WorkerDied,
    sink,
    source,
    transform,
)

AT = 2000  # the item at which the fault fires
HANG_TIMEOUT = 3.0


@source
def numbers():
    i = 0
    while True:
        yield i
        i += 1


@transform(workers=2)
def inc(x):
    return x + 1


@sink
def ignore(x):
    pass


def _stamp(path):
    """Record when the fault fires (CLOCK_MONOTONIC is the same in every process)."""
    with open(path, "w") as f:
        f.write(repr(time.monotonic()))


@transform(workers=2)
def fault(x, kind, path):
    if x == AT:
        if kind == "hang":
            time.sleep(3600)  # the fault: a call that never returns
        _stamp(path)
        if kind == "raise" or kind == "stuck-term":
            raise RuntimeError("injected")
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "exit":
            os._exit(3)
    return x


@sink
class StuckTerm:
    def run(self, x):
        pass

    def local_term(self):
        time.sleep(3600)  # the fault: a hook that never returns


EXPECTED = {
    "raise": StageError,
    "stuck-term": StageError,
    "kill": WorkerDied,
    "exit": WorkerDied,
    "hang": FlowTimeout,
}


def in_process(kind: str, method: str) -> float:
    """One run with a fault inside the flow; seconds from the fault to the return."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fired")
        stage = fault(kind=kind, path=path)
        end = StuckTerm() if kind == "stuck-term" else ignore
        flow = numbers >> stage >> inc >> end
        timeout = HANG_TIMEOUT if kind == "hang" else 60
        start = time.monotonic()
        try:
            flow.run(executor=ProcessExecutor(method), timeout=timeout)
        except EXPECTED[kind]:
            returned = time.monotonic()
        else:
            raise AssertionError(f"{kind}: the run did not fail")
        if kind == "hang":
            return returned - (start + timeout)
        with open(path) as f:
            return returned - float(f.read())


CTRL_C = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {here!r})
    from shutdown_latency import numbers, inc, ignore
    from flowdsl import ProcessExecutor, transform

    @transform(workers=2)
    class Busy:
        def local_init(self):
            os.write(1, b"running\\n")

        def run(self, x):
            return x

    try:
        (numbers >> Busy() >> inc >> ignore).run(executor=ProcessExecutor({method!r}))
    except KeyboardInterrupt:
        print(repr(time.monotonic()), flush=True)
""")


def ctrl_c(method: str) -> float:
    """Seconds from SIGINT to the process group until the driver has caught it."""
    code = CTRL_C.format(here=os.path.dirname(os.path.abspath(__file__)), method=method)
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            for _ in range(2):
                assert proc.stdout.readline().strip() == "running"
            sent = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return float(out.strip().splitlines()[-1]) - sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--methods", default="fork,spawn")
    args = parser.parse_args()
    kinds = ["raise", "kill", "exit", "hang", "stuck-term", "ctrl-c"]
    worst = 0.0
    print(f"{'fault':<11} {'method':<7} {'median s':>9} {'worst s':>8}  ({args.runs} runs)")
    for method in args.methods.split(","):
        for kind in kinds:
            runs = [
                ctrl_c(method) if kind == "ctrl-c" else in_process(kind, method)
                for _ in range(args.runs)
            ]
            worst = max(worst, max(runs))
            print(
                f"{kind:<11} {method:<7} {statistics.median(runs):>9.3f} {max(runs):>8.3f}",
                flush=True,
            )
    print(f"worst: {worst:.3f} s")


if __name__ == "__main__":
    main()
