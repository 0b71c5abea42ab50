"""W6: memory over a long stream.  W1's pipeline (source → +1 → *2 → sum) over a
stream of N and of 10·N ints; psutil samples the summed RSS of the whole process
tree (driver and workers) every 20 ms and keeps the peak.  A library whose
queues are bounded shows the same peak for both lengths; one that buffers
without bound grows with the stream.  Each library gets an N that fits the time
budget for its speed (see W1).
"""

from __future__ import annotations

import w1_tiny_ints
from _common import Case, PeakRSS

LIBRARIES = [  # label, W1 function, N (the long run is 10·N), extra kwargs
    ("serial", "serial", 1_000_000, {}),
    ("raw", "raw", 1_000_000, {}),
    ("flowdsl", "flowdsl", 1_000_000, {}),
    ("minipipe", "minipipe", 5_000, {}),
    ("pypeln", "pypeln", 1_000, {}),
    ("mpire", "mpire", 10_000, {}),
    ("Pool", "pool", 200_000, {}),
]


def peak_rss(function: str, n: int, **kwargs) -> dict[str, float]:
    with PeakRSS() as rss:
        seconds = getattr(w1_tiny_ints, function)(n=n, **kwargs)["seconds"]
    return {"peak_mb": rss.peak, "seconds": seconds}


def cases(quick: bool) -> list[Case]:
    out = []
    for label, fn, n, kwargs in LIBRARIES:
        if quick:
            n = max(1000, n // 50)
        for length, size in (("N", n), ("10N", 10 * n)):
            out.append(
                Case(
                    f"{label} {length}",
                    label,
                    "peak_rss",
                    {"function": fn, "n": size, **kwargs},
                    timeout=60,
                    note=f"{length}={size:,}",
                )
            )
    return out
