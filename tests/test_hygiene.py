"""Many runs in a row leave no process, file descriptor or shared memory behind."""

import gc
import os

import numpy as np
import psutil
import pytest
from conftest import _children, start_method
from helpers import fail_on, identity, ignore, inc, numbers

from flowdsl import StageError, source, transform
from flowdsl._core.shm import SHM_DIR


def _fds():
    return psutil.Process().num_fds()


def _shm():
    """Shared-memory files this process has mapped (all of /dev/shm would also see
    other programs on the machine)."""
    with open(f"/proc/{os.getpid()}/maps") as maps:  # the path is the sixth field
        return {
            line.split(None, 5)[5].strip().removesuffix(" (deleted)")
            for line in maps
            if "/dev/shm/" in line
        }


def _segments():
    """The segments of this process's runs in /dev/shm (``flowdsl-<pid>-…``)."""
    return [n for n in os.listdir(SHM_DIR) if n.startswith(f"flowdsl-{os.getpid()}-")]


@source
def big_arrays(n):
    for i in range(n):
        yield np.full(1 << 14, i, dtype=np.float64)  # 128 KiB: through shared memory


@transform
def first_value(x):
    return float(x[0])


# Enough runs to see a leak of one descriptor or mapping per run; fewer when every
# worker is a fresh interpreter.
RUNS = 300 if start_method() == "fork" else 30


@pytest.mark.timeout(120)
def test_runs_of_every_kind_leave_nothing_behind():
    (numbers(10) >> inc >> ignore).run()  # warm up lazily created resources
    fds, shm = _fds(), _shm()
    moved = 0
    for i in range(RUNS):
        kind = i % 4
        if kind == 0:
            (numbers(50) >> inc.options(workers=2) >> ignore).run()
        elif kind == 1:
            with pytest.raises(StageError):
                (numbers(50) >> fail_on(bad=7) >> ignore).run()
        elif kind == 2:
            for x in (numbers(10**9) >> inc).iterate():
                if x > 20:
                    break
        else:  # big items through shared memory, some kept past the run
            kept = (big_arrays(20) >> identity).collect()
            moved += bool(_shm() - shm)  # the kept arrays live in segments it maps
            assert [first_value.func(x) for x in kept] == list(range(20))
            del kept
    assert moved  # shared memory was used
    gc.collect()  # runs that failed are kept alive by their tracebacks' cycles until now
    assert _fds() <= fds
    assert _shm() <= shm
    assert _segments() == []
    assert not _children()
