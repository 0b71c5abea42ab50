"""Fault injection over random flows: whatever fails, wherever, the caller gets the
right exception promptly and nothing is left behind (the autouse fixture checks
for leftover processes after every example)."""

import time

import pytest
from conftest import examples, start_method
from helpers import ignore, inc, numbers
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import dags

from flowdsl import Failure, StageError, WorkerDied, sink
from flowdsl._flow import as_flow
from flowdsl._plan import compile_flow
from flowdsl.testing import InjectedFault, inject_fault

KINDS = ["raise", "kill", "exit", "segfault", "init", "term", "unpicklable"]
DEADLINE = 5  # every run here is small: a slower one is a hang


def _deadline(flow):
    """Seconds a small run may take.  Without fork every worker first starts a
    fresh interpreter: allow a second each, on a loaded two-core machine."""
    if start_method() == "fork":
        return DEADLINE
    return DEADLINE + sum(n.workers for n in _stages(flow))


def _stages(flow):
    return [n for n in compile_flow(as_flow(flow)).nodes if not n.hidden]


@settings(max_examples=examples(30))
@given(dag=dags(max_leaves=3), kind=st.sampled_from(KINDS), data=st.data())
def test_a_fault_anywhere_raises_the_right_error_promptly(dag, kind, data):
    flow = dag.flow()
    node = data.draw(st.sampled_from(_stages(flow)), label="stage")
    if kind == "unpicklable" and node.kind == "sink":
        kind = "raise"
    at = data.draw(st.integers(0, 30), label="at")
    faulty = inject_fault(flow, node.name, at=at, worker=None, kind=kind)

    deadline = _deadline(flow)
    start = time.monotonic()
    try:
        got = faulty.collect(timeout=deadline * 2)
    except (StageError, WorkerDied) as exc:
        error = exc
    else:
        error = None
    assert time.monotonic() - start < deadline

    if error is None:  # the stage never reached item `at`: the results are untouched
        assert kind not in ("init", "term"), "hooks always run"
        assert sorted(got) == sorted(dag.expected())
        return
    assert error.stage == node.name, error
    if kind in ("kill", "exit", "segfault"):
        assert isinstance(error, WorkerDied)
    else:
        assert isinstance(error, StageError)
        if kind != "unpicklable":
            assert isinstance(error.__cause__, InjectedFault)


@settings(max_examples=examples(15))
@given(
    n=st.integers(0, 300),
    at=st.integers(0, 50),
    workers=st.integers(1, 3),
    executor=st.sampled_from(["serial", "process"]),
)
def test_skipped_failures_are_counted_exactly(n, at, workers, executor):
    stage = inc.options(on_error="skip", workers=workers)
    flow = inject_fault(numbers(n) >> stage >> ignore, "inc", at=at, worker=None)
    stats = flow.run(executor=executor, timeout=20)["inc"]
    assert stats.items_in == n
    assert stats.items_out + stats.errors == n
    assert stats.errors <= (workers if executor == "process" else 1)
    if executor == "serial" or workers == 1:
        assert stats.errors == (1 if n > at else 0)


@sink
def count_letters(failure, path):
    assert isinstance(failure, Failure) and isinstance(failure.exception, InjectedFault)
    with open(path, "a") as f:
        f.write(f"{failure.item}\n")


@pytest.mark.parametrize("workers", [1, 3])
def test_dead_letters_account_for_every_failure(workers, tmp_path, executor):
    letters = str(tmp_path / "letters")
    stage = inc.options(on_error=count_letters(path=letters), workers=workers)
    flow = inject_fault(numbers(500) >> stage >> ignore, "inc", at=3, worker=None)
    stats = flow.run(executor=executor, timeout=20)["inc"]
    with open(letters) as f:
        failed = f.read().split()
    assert len(failed) == stats.errors >= 1
    assert stats.items_out + stats.errors == 500
