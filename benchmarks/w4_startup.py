"""W4: start-up.  ``flow``: W1's source → +1 → *2 over 10 items, end to end (workers
forked, results in the driver, everything joined), the first run in a fresh
process with the library already imported.  ``import``: the wall time of
``python -c "import LIB"`` (serial: ``python -c pass``, the interpreter alone),
with bytecode caching on and a first import to write it, as after ``pip install``
(which compiles every package it installs): ``PYTHONDONTWRITEBYTECODE`` would
time a source checkout compiling itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import w1_tiny_ints
from _common import Case

MODULES = {
    "serial": None,
    "raw": "multiprocessing",
    "flowdsl": "flowdsl",
    "minipipe": "minipipe",
    "pypeln": "pypeln",
    "mpire": "mpire",
    "Pool": "multiprocess",
}


def import_time(module: str | None) -> float:
    code = "pass" if module is None else f"import {module}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)  # writes the bytecode
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - t0


def startup(library: str, function: str) -> dict[str, float]:
    flow_s = getattr(w1_tiny_ints, function)(n=10)["seconds"]
    return {"flow_s": flow_s, "import_s": import_time(MODULES[library])}


def cases(quick: bool) -> list[Case]:
    return [
        Case(lib, lib, "startup", {"library": lib, "function": fn}, timeout=30)
        for lib, fn in [
            ("serial", "serial"),
            ("raw", "raw"),
            ("flowdsl", "flowdsl"),
            ("minipipe", "minipipe"),
            ("pypeln", "pypeln"),
            ("mpire", "mpire"),
            ("Pool", "pool"),
        ]
    ]
