import os

import psutil
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "flowdsl",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("flowdsl")

EXECUTORS = ["serial", "process"]


def _children() -> list[psutil.Process]:
    kids = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "forkserver" in cmd or "resource_tracker" in cmd:
            continue  # long-lived helpers of the standard start methods
        kids.append(p)
    return kids


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Every test must leave no worker process behind."""
    yield
    left = _children()
    for p in left:
        p.kill()
    assert not left, f"worker processes left behind: {left}"


@pytest.fixture(params=EXECUTORS)
def executor(request):
    return request.param
