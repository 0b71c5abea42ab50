"""The ray executor on a Ray cluster of several nodes (``ray.cluster_utils.Cluster``:
a head and nodes started on this machine, each with its own raylet and object
store), where nodes can be lost in the middle of a run.

The cluster notices a lost node within a second here (its health checks are made
fast), so the tests measure flowdsl's recovery rather than Ray's timeouts.
"""

import builtins
import contextlib
import os
import signal
import time

import pytest
from helpers import numbers

from flowdsl import RayExecutor, Transform
from flowdsl.executors import execute

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

pytestmark = pytest.mark.timeout(90)

FAST_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 200,
    "health_check_timeout_ms": 200,
    "health_check_failure_threshold": 3,
}


@pytest.fixture(scope="module")
def cluster():
    """A head with two CPUs, for the tests to add and remove nodes to."""
    printer = builtins.print
    if ray.is_initialized():  # another module's local instance
        ray.shutdown()
    made = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False, "_system_config": FAST_CHECKS},
    )
    ray.init(address=made.address, log_to_driver=False, configure_logging=False)
    yield made
    ray.shutdown()
    made.shutdown()
    builtins.print = printer


class OnNode:
    """Gives each item with the node it ran on; item ``hang`` waits for good on
    the first node it reaches (whose loss the test brings about)."""

    def __init__(self, root, hang):
        self.root, self.hang = root, hang

    def run(self, x):
        if x == self.hang:
            with contextlib.suppress(FileExistsError):
                path = os.path.join(self.root, "inside")
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                time.sleep(60)
        return x, ray.get_runtime_context().get_node_id()


def _until(condition, limit=20.0):
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def test_a_supervised_stage_survives_the_loss_of_its_node(cluster, tmp_path):
    """Ray restarts the stage's actor on a node that is left; the item it ran
    fails through the error policy, and every other item is processed exactly
    once, in order."""
    doomed = cluster.add_node(num_cpus=0, resources={"slot": 1})
    cluster.wait_for_nodes()
    executor = RayExecutor(stage_options={"OnNode": {"num_cpus": 0, "resources": {"slot": 1}}})
    stage = Transform(OnNode(str(tmp_path), hang=5), restarts=1, on_error="skip")
    inside = tmp_path / "inside"
    got = []
    with execute(numbers(12) >> stage, executor=executor, timeout=60) as run:
        for x, node in run:
            got.append((x, node))
            if x == 4:
                spare = cluster.add_node(num_cpus=0, resources={"slot": 1})
                _until(lambda: inside.exists() and inside.read_text())
                # the machine goes: its Ray processes, then the worker that runs
                # the stage (which would outlive its raylet for a while)
                cluster.remove_node(doomed, allow_graceful=False)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(inside.read_text()), signal.SIGKILL)
    assert [x for x, _ in got] == [x for x in range(12) if x != 5]
    assert {node for x, node in got if x < 5} == {doomed.node_id}
    assert {node for x, node in got if x > 5} == {spare.node_id}
    stats = run.report["OnNode"]
    assert (stats.restarts, stats.errors, stats.items_in) == (1, 1, 12)
    cluster.remove_node(spare)
