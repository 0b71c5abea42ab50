"""Helpers shared by the workload modules (they run inside one case's subprocess)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

#: every library at its documented default start method on Linux, made explicit
START_METHOD = "fork"


@dataclass
class Case:
    """One measured configuration: ``function(**kwargs)`` of a workload module,
    run in a fresh subprocess, killed after ``timeout`` seconds."""

    label: str  # row label in the table, e.g. "flowdsl" or "flowdsl w=2"
    library: str  # serial, raw, flowdsl, minipipe, pypeln, mpire, Pool
    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: float = 60.0
    note: str = ""


def flowdsl_executor() -> Any:
    from flowdsl import ProcessExecutor

    return ProcessExecutor(START_METHOD)


def rate(items: float, seconds: float) -> float:
    return items / seconds


class PeakRSS:
    """Sample the summed RSS of this process and all its descendants with psutil
    (every ``interval`` s, from a thread) and keep the peak, in MB."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self.proc = psutil.Process(os.getpid())
        self.interval = interval
        self.peak = 0.0
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # it exited since the listing
                total += p.memory_info().rss
        return total / 1e6

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.is_set():
            mb = self._sample()
            self.samples.append((time.perf_counter() - t0, mb))
            self.peak = max(self.peak, mb)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
