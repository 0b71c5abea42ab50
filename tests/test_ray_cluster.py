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
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from helpers import numbers

from flowdsl import GraphError, RayExecutor, Transform, WorkerDied, loop, source, transform
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


@pytest.fixture(scope="module")
def pinned(cluster):
    """Two more nodes, ``a`` and ``b``, each with a resource of its own, kept for
    the placement tests (no CPU: only stages pinned there run there)."""
    nodes = {name: cluster.add_node(num_cpus=0, resources={name: 4}) for name in "ab"}
    cluster.wait_for_nodes()
    yield {name: node.node_id for name, node in nodes.items()}
    for node in nodes.values():
        cluster.remove_node(node)


def on(*names):
    """Executor options pinning each named stage to the node of the same name."""
    where = {"left": "a", "right": "b", "body": "a", "pair": "b", "reader": "b"}
    return RayExecutor(
        stage_options={n: {"num_cpus": 0, "resources": {where[n]: 1}} for n in names}
    )


def node_id():
    return ray.get_runtime_context().get_node_id()


@transform(name="left")
def left(x):
    return x, node_id()


@transform(name="right")
def right(pair):
    x, first = pair
    return x, first, node_id()


def test_each_stage_runs_on_the_node_its_resources_pin_it_to(pinned):
    got = (numbers(20) >> left >> right).collect(executor=on("left", "right"), timeout=60)
    assert [x for x, _, _ in got] == list(range(20))
    assert {(a, b) for _, a, b in got} == {(pinned["a"], pinned["b"])}


@source
def arrays(n, megabytes=8):
    import numpy as np

    for i in range(n):
        yield np.full(megabytes * 2**20 // 8, float(i))


def mapping_of(address):
    """The file mapped at ``address`` in this process (``/proc/self/maps``)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return fields[5].strip() if len(fields) > 5 else "[anonymous]"
    return None


@transform(name="reader")
def reader(a):
    """What a stage on another node sees of an array: its values, the memory it
    lies in (the object store's shared memory, not a copy of it), and whether
    it is writable."""
    return float(a[0]), float(a[-1]), mapping_of(a.ctypes.data), a.flags.writeable, node_id()


def test_arrays_cross_nodes_as_read_only_views_of_the_object_store(pinned):
    got = (arrays(12) >> reader).collect(executor=on("reader"), timeout=60)
    assert [(first, last) for first, last, *_ in got] == [(float(i), float(i)) for i in range(12)]
    assert all("plasma" in memory for _, _, memory, _, _ in got), got[0]
    assert {(writable, node) for *_, writable, node in got} == {(False, pinned["b"])}


@transform(name="body")
def body(x):
    return x + 1


@transform(name="pair")
def pair(a, b):
    return a, b, node_id()


def test_a_loop_and_a_zip_whose_stages_are_on_different_nodes(pinned):
    looped = numbers(10) >> loop(body, until=lambda x: x % 5 == 0)
    got = ([looped, numbers(10)] >> pair).collect(executor=on("body", "pair"), timeout=60)
    serial = ([looped, numbers(10)] >> pair).collect(executor="serial")
    # the loop lets items out as they are done, so the pairs may differ in order
    assert sorted(a for a, _, _ in got) == sorted(a for a, _, _ in serial) == [5] * 5 + [10] * 5
    assert [b for _, b, _ in got] == list(range(10))
    assert {node for *_, node in got} == {pinned["b"]}


def test_a_stage_no_node_can_host_is_an_error_when_the_run_starts(pinned):
    executor = RayExecutor(stage_options={"left": {"resources": {"gpu_h100": 1}}})
    start = time.monotonic()
    with pytest.raises(GraphError, match=r"stage 'left' asks Ray for \{'gpu_h100': 1\}"):
        (numbers(3) >> left).collect(executor=executor, timeout=60)
    assert time.monotonic() - start < 5
    too_big = RayExecutor(stage_options={"left": {"num_cpus": 0, "resources": {"a": 5}}})
    with pytest.raises(GraphError, match="no node of the cluster has that"):
        (numbers(3) >> left).collect(executor=too_big, timeout=60)


def test_a_worker_lost_with_its_node_names_the_stage_and_the_node(cluster, tmp_path):
    """Without restarts the run fails, within seconds, saying which stage lost a
    worker, on which node, and that the node went."""
    doomed = cluster.add_node(num_cpus=0, resources={"slot": 1})
    cluster.wait_for_nodes()
    executor = RayExecutor(stage_options={"OnNode": {"num_cpus": 0, "resources": {"slot": 1}}})
    inside = tmp_path / "inside"
    lost = []

    def lose_the_node():  # once item 5 is inside (its batch holds the items before it)
        _until(lambda: inside.exists() and inside.read_text(), limit=60)
        lost.append(time.monotonic())
        cluster.remove_node(doomed, allow_graceful=False)
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(inside.read_text()), signal.SIGKILL)

    thread = threading.Thread(target=lose_the_node, daemon=True)
    thread.start()
    with pytest.raises(WorkerDied) as info:
        (numbers(12) >> Transform(OnNode(str(tmp_path), hang=5))).collect(
            executor=executor, timeout=60
        )
    assert time.monotonic() - lost[0] < 10
    thread.join(timeout=10)
    error = info.value
    assert (error.stage, error.worker, error.node_lost) == ("OnNode", 0, True)
    assert error.node.startswith(doomed.node_id[:12])
    assert str(error) == (
        f"worker 0 of stage 'OnNode' was lost with its node, {error.node}, which left the cluster"
    )


DRIVER = """
import sys, time
import ray
from flowdsl import sink, source

@source
def forever():
    i = 0
    while True:
        yield i
        i += 1

@sink(workers=2)
def slow(x, marker):
    if x == 20:
        open(marker, "w").close()
    time.sleep(0.01)

ray.init(address=sys.argv[1], log_to_driver=False)
(forever() >> slow(marker=sys.argv[2])).run(executor="ray")
"""


def _alive_stage_actors():
    """The run's actors still alive, from the cluster's own table of actors
    (the GCS's: the state API's HTTP server needs the dashboard, off here)."""
    from ray._private import state

    return [
        a
        for a in state.actors().values()
        if a["ActorClassName"] == "StageActor" and a["State"] != "DEAD"
    ]


def _actor_processes():
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.name().startswith("ray::StageActor"):
                found.append(p)
    return found


def test_a_driver_killed_mid_run_leaves_no_actor_on_the_cluster(cluster, tmp_path):
    script, running, log = tmp_path / "driver.py", tmp_path / "running", tmp_path / "driver.log"
    script.write_text(textwrap.dedent(DRIVER))
    with log.open("w") as out:
        driver = subprocess.Popen(
            [sys.executable, str(script), cluster.address, str(running)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _until(lambda: running.exists() or driver.poll() is not None, limit=60)
        assert driver.poll() is None, log.read_text()[-3000:]
        assert len(_alive_stage_actors()) == 3  # the source and two sink workers
        driver.kill()
        driver.wait(timeout=10)
        _until(lambda: not _alive_stage_actors(), limit=30)
        _until(lambda: not _actor_processes(), limit=30)  # and their processes are gone
    finally:
        driver.kill()
        driver.wait(timeout=10)
