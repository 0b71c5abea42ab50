import subprocess
import sys

import pytest

import flowdsl


def test_public_names_are_exactly_all():
    public = {n for n in dir(flowdsl) if not n.startswith("_")}
    modules = {"errors", "executors", "testing"}  # subpackages, once imported
    assert public - modules == set(flowdsl.__all__)
    assert flowdsl.__all__ == sorted(flowdsl.__all__)


def test_error_hierarchy():
    from flowdsl import FlowError, FlowTimeout, GraphError, StageError, WorkerDied

    assert issubclass(GraphError, (FlowError, ValueError))
    assert issubclass(FlowTimeout, (FlowError, TimeoutError))
    assert issubclass(StageError, FlowError) and issubclass(WorkerDied, FlowError)
    assert not issubclass(flowdsl.StopFlow, FlowError)


def test_library_logger_has_only_a_null_handler():
    import logging

    handlers = logging.getLogger("flowdsl").handlers
    assert [type(h) for h in handlers] == [logging.NullHandler]


def test_every_public_name_resolves_to_an_object_that_names_flowdsl_its_home():
    for name in flowdsl.__all__:
        obj = getattr(flowdsl, name)
        if isinstance(obj, type):
            assert obj.__module__ == "flowdsl", name
    with pytest.raises(AttributeError, match="no_such_name"):
        flowdsl.no_such_name  # noqa: B018


def _imported(code):
    """The flowdsl and executor modules a fresh interpreter has after ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return set(eval(out))


@pytest.mark.timeout(120)
def test_importing_flowdsl_or_a_worker_loads_no_executor():
    # the executors (multiprocess, the ray driver) come when a run needs them, so
    # `import flowdsl` stays quick and a Ray actor imports only the stage runtime
    heavy = {
        "multiprocess",
        "flowdsl.executors.process",
        "flowdsl.executors.ray",
        "flowdsl._diagram",
        "flowdsl._minipipe",
    }
    assert not heavy & _imported("import flowdsl")
    assert not heavy & _imported("import flowdsl.executors._actor")
    assert "flowdsl.executors.process" in _imported("from flowdsl import ProcessExecutor")
    ran = _imported("from flowdsl import source\nassert source(lambda: [1, 2]).collect() == [1, 2]")
    assert "flowdsl.executors.process" in ran
