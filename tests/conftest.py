import os
import sys

import multiprocess
import psutil
import pytest
from hypothesis import HealthCheck, settings

START_METHODS = ("fork", "spawn", "forkserver")
EXECUTORS = ["serial", "process"]

settings.register_profile(
    "flowdsl",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# Without fork every worker is a fresh interpreter (a few hundred ms to start):
# fewer examples keep a pass under another start method within minutes.
settings.register_profile(
    "flowdsl-fresh-interpreters", parent=settings.get_profile("flowdsl"), max_examples=5
)
# ``make soak`` (FLOWDSL_SOAK=1): twenty times the examples everywhere, for hours-long
# hunts that CI has no time for.
SOAK = bool(os.environ.get("FLOWDSL_SOAK"))
SOAK_FACTOR = 20
settings.register_profile(
    "flowdsl-soak", parent=settings.get_profile("flowdsl"), max_examples=50 * SOAK_FACTOR
)


def pytest_addoption(parser):
    parser.addoption(
        "--start-method",
        choices=START_METHODS,
        default=None,
        help="start method of the process executor for the whole run (sets "
        "FLOWDSL_START_METHOD; default: the platform's)",
    )


def pytest_configure(config):
    method = config.getoption("--start-method")
    if method is not None:
        os.environ["FLOWDSL_START_METHOD"] = method  # worker, subprocess and kernel alike
    if SOAK:
        settings.load_profile("flowdsl-soak")
    else:
        settings.load_profile(
            "flowdsl" if start_method() == "fork" else "flowdsl-fresh-interpreters"
        )


def start_method():
    """The start method the process executor uses by default in this run."""
    return os.environ.get("FLOWDSL_START_METHOD") or multiprocess.get_all_start_methods()[0]


def examples(n):
    """How many hypothesis examples a test draws that sets its own budget: ``n``
    under fork, a fifth (at least 3) when every worker is a fresh interpreter,
    twenty times more in a soak."""
    if SOAK:
        return n * SOAK_FACTOR
    return n if start_method() == "fork" else max(3, n // 5)


def pytest_report_header(config):
    return f"flowdsl start method: {start_method()}"


def pytest_collection_modifyitems(config, items):
    """Under another start method than fork, only what that changes is run: the
    serial executor's cases are deselected, fork-only tests are skipped."""
    method = start_method()
    if method == "fork":
        return
    kept, dropped = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        if params is not None and params.params.get("executor") == "serial":
            dropped.append(item)
            continue
        marker = item.get_closest_marker("fork_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
            item.add_marker(pytest.mark.skip(reason=f"fork only: {reason}"))
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


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


# A flow a test runs without a timeout of its own gets this one: a hang then fails
# in seconds, as a FlowTimeout raised where the test waits, not at the 60 s limit
# of pytest-timeout.
RUN_TIMEOUT = 20


@pytest.fixture(autouse=True)
def runs_time_out(monkeypatch):
    import flowdsl._flow

    real = flowdsl._flow._provided["execute"]

    def execute(flow, *, timeout=None, **options):
        return real(flow, timeout=RUN_TIMEOUT if timeout is None else timeout, **options)

    if not SOAK:
        monkeypatch.setitem(flowdsl._flow._provided, "execute", execute)


@pytest.fixture(params=EXECUTORS)
def executor(request):
    return request.param


@pytest.fixture
def mp_context():
    """The ``multiprocess`` context of this run's start method: locks, events and
    barriers made from it can be shared with workers under every start method."""
    return multiprocess.get_context(start_method())
