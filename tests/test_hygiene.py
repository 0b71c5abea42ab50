"""Many runs in a row leave no process, file descriptor or shared memory behind."""

import os

import psutil
import pytest
from conftest import _children, start_method
from helpers import fail_on, ignore, inc, numbers

from flowdsl import StageError


def _fds():
    return psutil.Process().num_fds()


def _shm():
    """Shared-memory files this process has mapped (all of /dev/shm would also see
    other programs on the machine)."""
    with open(f"/proc/{os.getpid()}/maps") as maps:
        return {line.split()[-1] for line in maps if "/dev/shm/" in line}


# Enough runs to see a leak of one descriptor or mapping per run; fewer when every
# worker is a fresh interpreter.
RUNS = 300 if start_method() == "fork" else 30


@pytest.mark.timeout(120)
def test_runs_of_every_kind_leave_nothing_behind():
    (numbers(10) >> inc >> ignore).run()  # warm up lazily created resources
    fds, shm = _fds(), _shm()
    for i in range(RUNS):
        kind = i % 3
        if kind == 0:
            (numbers(50) >> inc.options(workers=2) >> ignore).run()
        elif kind == 1:
            with pytest.raises(StageError):
                (numbers(50) >> fail_on(bad=7) >> ignore).run()
        else:
            for x in (numbers(10 ** 9) >> inc).iterate():
                if x > 20:
                    break
    assert _fds() <= fds
    assert _shm() <= shm
    assert not _children()
