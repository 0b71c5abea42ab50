"""flowdsl.testing: run_inline, assert_equivalent, strategies and fault injection."""

import os

import pytest
from conftest import examples
from helpers import add, double, evens, ignore, inc, numbers, pid_of, scale, twice
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdsl import (
    FlowError,
    GraphError,
    ProcessExecutor,
    Regulator,
    StageError,
    WorkerDied,
    loop,
    merge,
    transform,
)
from flowdsl.testing import (
    FAULT_KINDS,
    InjectedFault,
    assert_equivalent,
    inject_fault,
    keeps_order,
    run_inline,
)
from flowdsl.testing.strategies import flows, streams

# -- run_inline --------------------------------------------------------------------------


def test_run_inline_feeds_items_into_a_flow_without_source():
    assert run_inline(inc >> double, [1, 2, 3]) == [4, 6, 8]


def test_run_inline_runs_a_complete_flow_in_this_process():
    assert run_inline(numbers(3) >> pid_of) == [os.getpid()] * 3


def test_run_inline_refuses_items_for_a_flow_with_a_source():
    with pytest.raises(GraphError, match="starts with a source"):
        run_inline(numbers(3) >> inc, [1])


def test_run_inline_needs_items_for_a_flow_without_source():
    with pytest.raises(GraphError, match="give the items"):
        run_inline(inc >> double)


# -- keeps_order and assert_equivalent ---------------------------------------------------


@pytest.mark.parametrize(
    "flow, ordered",
    [
        (inc >> double.options(workers=3), True),
        (inc >> [double, twice] >> add, True),  # a zip pairs by position
        (merge(inc >> [double, twice]), False),
        (inc >> double.options(workers=2, ordered=False), False),
        (inc >> double.options(concurrency=4), True),
        (inc >> double.options(concurrency=4, ordered=False), False),  # calls finish in any order
        (loop(inc, until=lambda x: x > 3), False),
    ],
)
def test_keeps_order(flow, ordered):
    assert keeps_order(flow) is ordered


def test_assert_equivalent_returns_the_reference_results():
    assert assert_equivalent(inc >> double.options(workers=2), range(5)) == [2, 4, 6, 8, 10]


def test_assert_equivalent_compares_as_multiset_when_order_is_free():
    flow = merge(inc >> [double, twice.options(workers=2, ordered=False)])
    assert sorted(assert_equivalent(flow, range(50))) == sorted(
        [2 * (x + 1) for x in range(50)] + [x + 1 for x in range(50)] * 2
    )


def test_assert_equivalent_detects_a_difference():
    with pytest.raises(AssertionError, match="'process' gave"):
        assert_equivalent(pid_of, [1, 2])


def test_assert_equivalent_runs_every_executor_on_all_of_a_one_shot_iterable():
    assert assert_equivalent(inc, (x for x in range(5))) == [1, 2, 3, 4, 5]
    with pytest.raises(AssertionError, match="'process' gave"):
        assert_equivalent(pid_of, iter([1, 2]))


def test_assert_equivalent_counts_what_each_sink_receives():
    driver = os.getpid()

    @transform
    def only_in_the_driver(x):
        return x if os.getpid() == driver else None

    assert assert_equivalent(inc >> [double, ignore], range(3)) == [2, 4, 6]
    with pytest.raises(
        AssertionError,
        match=r"delivered \{'ignore': 0\} item\(s\) to its "
        r"sinks, 'serial' \{'ignore': 3\}",
    ):
        assert_equivalent(only_in_the_driver >> ignore, range(3))


def test_assert_equivalent_keeps_its_message_short_on_long_results():
    with pytest.raises(AssertionError) as info:
        assert_equivalent(pid_of, range(1000))
    message = str(info.value)
    assert "1000 and 1000 items, first difference at index 0" in message
    assert len(message) < 400


def test_assert_equivalent_says_what_is_missing_from_a_multiset():
    with pytest.raises(AssertionError, match=rf"lacks \[{os.getpid()}, {os.getpid()}\]"):
        assert_equivalent(pid_of, [1, 2], ordered=False)


def test_assert_equivalent_accepts_a_strategy():
    assert_equivalent(inc >> evens.options(workers=2), st.lists(st.integers()), max_examples=5)


def test_assert_equivalent_with_a_strategy_reports_the_failing_input():
    @transform
    def breaks_on_parallel(x):
        return os.getpid() if x == 7 else x

    with pytest.raises(AssertionError, match="gave"):
        assert_equivalent(breaks_on_parallel, st.just([1, 7]), max_examples=1)


def test_assert_equivalent_requires_the_same_failing_stage():
    failing = inc >> inject_fault(double, "double", at=2)
    assert assert_equivalent(failing, range(10), expect_failure=True) == []


def test_assert_equivalent_raises_the_error_of_a_flow_failing_everywhere():
    failing = inc >> inject_fault(double, "double", at=2)
    with pytest.raises(StageError, match="double"):
        assert_equivalent(failing, range(10))
    with pytest.raises(AssertionError, match="expected the flow to fail"):
        assert_equivalent(inc, range(3), expect_failure=True)


# -- strategies ------------------------------------------------------------------------


@settings(max_examples=examples(15))
@given(flow=flows([inc, double, evens, twice]), items=streams(max_size=20, long_size=600))
def test_random_flows_of_our_stages_agree_with_the_reference(flow, items):
    assert_equivalent(flow, items, timeout=20)


@given(flow=flows([inc, double], ordered=True))
def test_ordered_flows_keep_order(flow):
    assert keeps_order(flow)


@given(flow=flows([inc, double, evens, scale(factor=3)]))
def test_drawn_flows_show_the_expression_that_builds_them(flow):
    names = {"inc": inc, "double": double, "evens": evens, "scale": scale, "merge": merge}
    rebuilt = eval(repr(flow), names)
    assert sorted(run_inline(rebuilt, range(20))) == sorted(run_inline(flow, range(20)))


def test_flows_refuses_sources_and_sinks():
    with pytest.raises(ValueError, match="transforms"):
        flows([numbers, inc])


def test_flows_refuses_transforms_that_do_not_take_one_item():
    with pytest.raises(ValueError, match="take one item; transform 'add' cannot be called"):
        flows([inc, add])


@given(streams(st.text(max_size=3), max_size=5, long_size=50))
def test_streams_are_lists_of_the_given_elements(items):
    assert isinstance(items, list) and all(isinstance(x, str) for x in items)


# -- fault injection -------------------------------------------------------------------

DEADLY = {"kill": -9, "exit": 70, "segfault": -11}


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS.keys() - {"hang"}))
def test_every_fault_kind_has_the_documented_effect(kind):
    flow = inject_fault(numbers(100) >> inc >> double >> ignore, "double", at=5, kind=kind)
    expected = WorkerDied if kind in DEADLY else StageError
    with pytest.raises(expected) as info:
        flow.run(timeout=20)
    assert info.value.stage == "double"
    if kind in DEADLY:
        assert info.value.exitcode == DEADLY[kind]
    elif kind != "unpicklable":
        assert isinstance(info.value.__cause__, InjectedFault)
        assert f"{kind!r} fault" in str(info.value)


def test_injected_fault_reports_its_public_home():
    import pickle

    assert InjectedFault.__module__ == "flowdsl.testing"
    assert type(pickle.loads(pickle.dumps(InjectedFault("x")))) is InjectedFault
    with pytest.raises(StageError) as info:
        inject_fault(numbers(3) >> inc, "inc").collect(timeout=20)
    assert "flowdsl.testing.InjectedFault: injected 'raise' fault" in info.value.remote_traceback


def test_unpicklable_fault_fails_serialisation_of_the_output():
    with pytest.raises(StageError, match="cannot be serialised"):
        inject_fault(numbers(10) >> inc, "inc", at=1, kind="unpicklable").collect(timeout=20)


def test_hang_fault_runs_into_the_timeout():
    from flowdsl import FlowTimeout

    with pytest.raises(FlowTimeout):
        inject_fault(numbers(10) >> inc, "inc", at=1, kind="hang").collect(timeout=0.5)


def test_raise_fault_fires_at_the_chosen_item():
    with pytest.raises(StageError) as info:
        inject_fault(numbers(10) >> inc, "inc", at=4).collect(executor="serial")
    assert info.value.item == "4"


def test_source_fault_fires_before_the_chosen_item():
    flow = inject_fault(numbers(10) >> inc, "numbers", at=3)
    got = []
    with pytest.raises(StageError, match="stage 'numbers'"):
        for x in flow.iterate(executor="serial"):
            got.append(x)
    assert got == [1, 2, 3]


def test_a_fault_past_the_end_never_fires(executor):
    flow = inject_fault(numbers(5) >> inc, "inc", at=5, kind="raise")
    assert flow.collect(executor=executor) == [1, 2, 3, 4, 5]


def test_deadly_faults_refuse_to_end_the_serial_caller():
    flow = inject_fault(numbers(5) >> inc, "inc", at=0, kind="kill")
    with pytest.raises(StageError, match="would end the calling process") as info:
        flow.collect(executor="serial")
    assert isinstance(info.value.__cause__, FlowError)


def test_fault_only_in_the_chosen_worker():
    # worker 1 of a two-worker stage fails in local_init; worker 0 alone is fine
    flow = numbers(10) >> inc.options(workers=2)
    with pytest.raises(StageError) as info:
        inject_fault(flow, "inc", worker=1, kind="init").collect(timeout=20)
    assert info.value.worker == 1


def test_faults_keep_hooks_signatures_and_flat_maps(executor):
    @transform
    class Offset:
        def local_init(self):
            self.k = 10

        def run(self, x):
            return x + self.k

    @transform
    def pair_sum(a, b):  # a loop body taking two parameters gets tuples unpacked
        return (a + b, b)

    flow = (
        numbers(3)
        >> Offset()
        >> twice
        >> transform(lambda x: (x, 1))
        >> loop(pair_sum, until=lambda t: t[0] > 30)
        >> transform(lambda t: t[0])
    )
    faulty = flow
    for name in ("Offset", "twice", "pair_sum"):
        faulty = inject_fault(faulty, name, at=1000)
    assert sorted(faulty.collect(executor=executor)) == sorted(flow.collect(executor=executor))


def test_faults_compose_and_leave_the_original_flow_alone():
    flow = numbers(10) >> inc >> double
    faulty = inject_fault(inject_fault(flow, "inc", at=8), "double", at=3)
    with pytest.raises(StageError, match="stage 'double'"):
        faulty.collect(executor="serial")
    assert flow.collect(executor="serial") == [2 * (x + 1) for x in range(10)]


def test_faults_work_under_spawn():
    flow = inject_fault(numbers(10) >> inc >> ignore, "inc", at=2, kind="exit")
    with pytest.raises(WorkerDied):
        flow.run(executor=ProcessExecutor("spawn"), timeout=30)


def test_faults_address_stages_by_their_unique_names():
    flow = numbers(10) >> inc >> inc
    with pytest.raises(StageError, match="stage 'inc_1'"):
        inject_fault(flow, "inc_1", at=0).collect(executor="serial")


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda f: inject_fault(f, "nope"), GraphError, "no stage named 'nope'.*numbers, inc"),
        (lambda f: inject_fault(f, "inc", kind="melt"), ValueError, "unknown fault kind"),
        (lambda f: inject_fault(f, "inc", at=-1), ValueError, "at must be"),
        (lambda f: inject_fault(f, "inc", worker=1), GraphError, "no worker 1"),
        (lambda f: inject_fault(f >> ignore, "ignore", kind="unpicklable"), GraphError, "sink"),
        (lambda f: inject_fault(f >> Regulator(_pairs), "Regulator"), GraphError, "Regulator"),
    ],
)
def test_fault_injection_rejects_bad_requests(call, error, match):
    with pytest.raises(error, match=match):
        call(numbers(3) >> inc)


def _pairs():
    while True:
        a = yield
        b = yield
        yield (a, b)
