import os
import sys

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


# The processes of a local Ray instance that outlive every run: its servers, its
# agents and its pool of idle workers.  A worker hosting an actor is titled
# "ray::<ActorClass>" and must be gone when a run ends.
_RAY_SERVICES = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _ray_service(cmd: list[str]) -> bool:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or not cmd:
        return False
    if cmd[0] in _RAY_SERVICES:
        return True
    # servers (gcs_server, raylet), helper scripts, and workers still starting
    # (before they set their title) all run from the ray package
    package = os.path.dirname(ray.__file__) + os.sep
    return any(part.startswith(package) for part in cmd)


def _children() -> list[psutil.Process]:
    kids = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            argv, name = p.cmdline(), p.name()
        except psutil.Error:
            continue
        cmd = " ".join(argv)
        if "forkserver" in cmd or "resource_tracker" in cmd:
            continue  # long-lived helpers of the standard start methods
        if _ray_service(argv) or _ray_service([name]):
            continue
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
