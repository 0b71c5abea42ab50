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
