import pytest
from helpers import add, double, ignore, inc, listed, numbers

from flowdsl import Flow, GraphError, Source, merge, transform
from flowdsl._plan import compile_flow


def plan_of(flow):
    return compile_flow(flow)


def test_chain_is_associative():
    a = plan_of((numbers(3) >> inc) >> double)
    b = plan_of(numbers(3) >> (inc >> double))
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes] == ["numbers", "inc", "double"]
    assert (numbers(3) >> (inc >> double)).collect(executor="serial") == [2, 4, 6]


def test_same_stage_twice_makes_two_nodes_with_unique_names():
    plan = plan_of(numbers(3) >> inc >> inc)
    assert [n.name for n in plan.nodes] == ["numbers", "inc_0", "inc_1"]
    assert (numbers(3) >> inc >> inc).collect(executor="serial") == [2, 3, 4]


def test_composition_does_not_mutate_operands():
    base = numbers(3) >> inc
    edges = base.edges
    base >> double
    base >> inc
    assert base.edges == edges


def test_zip_list_connects_ports_in_order():
    plan = plan_of([numbers(2), numbers(2) >> inc] >> add)
    node = plan.nodes[-1]
    assert node.name == "add" and len(node.inputs) == 2


def test_broadcast_then_zip_makes_a_diamond():
    flow = numbers(4) >> [inc, double] >> add
    assert isinstance(flow, Flow)
    assert flow.collect(executor="serial") == [x + 1 + 2 * x for x in range(4)]


def test_shared_subflow_nodes_are_shared():
    head = numbers(3) >> inc
    flow = merge(head >> double, head >> inc)
    names = [n.name for n in plan_of(flow).nodes]
    assert names.count("numbers") == 1
    assert sorted(flow.collect(executor="serial")) == [2, 2, 3, 4, 4, 6]


def test_merge_makes_one_input_shared_channel():
    plan = plan_of(merge(numbers(2), numbers(3)) >> inc)
    node = plan.nodes[-1]
    assert len(node.inputs) == 1
    assert len(plan.channels[node.inputs[0]].producers) == 2


def test_lambdas_and_run_objects_are_wrapped_as_transforms():
    class Plus:
        def run(self, x):
            return x + 10

    flow = numbers(2) >> (lambda x: x * 3) >> Plus()
    assert flow.collect(executor="serial") == [10, 13]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: inc >> numbers(2), "source cannot have an upstream"),
        (lambda: numbers(2) >> ignore >> inc, "sink cannot have a downstream"),
        (lambda: plan_of(inc >> double), "has no upstream"),
        (lambda: plan_of(numbers(2) >> add), "'add' cannot be called with 1 item"),
        (lambda: plan_of([numbers(2), numbers(2)] >> inc), "zip of 2 upstreams"),
        (lambda: numbers(2) >> 42, "42 cannot be connected"),
        (lambda: plan_of(listed >> inc), "'listed' cannot be called"),
    ],
)
def test_invalid_graphs_raise_graph_error_naming_stage(build, message):
    with pytest.raises(GraphError, match=message):
        build()


def test_cycle_outside_loop_is_rejected():
    body = inc >> double
    with pytest.raises(GraphError, match="cycle not made with loop"):
        plan_of(numbers(1) >> (body >> body))


def test_stage_class_where_instance_needed():
    @transform
    class Scale:
        def __init__(self, k):
            self.k = k

        def run(self, x):
            return x * self.k

    with pytest.raises(GraphError, match="call it"):
        numbers(2) >> Scale
    assert (numbers(2) >> Scale(3)).collect(executor="serial") == [0, 3]


def test_generator_object_where_function_needed():
    def gen():
        yield 1

    with pytest.raises(GraphError, match="generator function"):
        numbers(2) >> gen()


def test_non_callable_source_is_rejected():
    with pytest.raises(GraphError, match="neither callable nor iterable"):
        plan_of(Source(42) >> inc)


class NoRun:
    pass


@pytest.mark.parametrize(
    "build",
    [
        lambda: numbers(2) >> NoRun(),
        lambda: numbers(2) >> 5,
        lambda: numbers(2) >> "inc",
        lambda: numbers(2) >> None,
        lambda: numbers(2) >> [1, 2],
        lambda: inc >> 2.5,
        lambda: 5 >> inc,
        lambda: [1, 2] >> inc,
        lambda: range(3) >> inc,
    ],
    ids=[
        "object",
        "int",
        "str",
        "None",
        "values-right",
        "float",
        "int-left",
        "values-left",
        "range",
    ],
)
def test_an_operand_that_is_not_a_stage_is_a_graph_error_and_a_type_error(build):
    with pytest.raises(GraphError, match="not a stage") as info:
        build()
    assert isinstance(info.value, TypeError)  # as Python's operators raise


def test_values_on_the_left_are_shown_how_to_become_a_source():
    for build in (lambda: range(3) >> inc, lambda: [1, 2] >> inc):
        with pytest.raises(GraphError, match="make it a source"):
            build()
    with pytest.raises(GraphError) as info:
        numbers(2) >> range(3)  # on the right, a source cannot be meant
    assert "make it a source" not in str(info.value)


def test_a_class_that_composes_with_flows_itself_gets_the_operand():
    class Tap:
        def __rrshift__(self, flow):
            return ("tapped", flow)

    tapped, flow = numbers(2) >> Tap()
    assert tapped == "tapped" and flow.collect(executor="serial") == [0, 1]


def test_merge_accepts_a_list():
    assert sorted(merge([numbers(2), numbers(3)]).collect(executor="serial")) == [0, 0, 1, 1, 2]


def test_options_are_checked_like_decorator_options():
    with pytest.raises(ValueError, match="exactly one worker"):
        numbers(3).options(workers=3)
    with pytest.raises(ValueError, match="ordered must be"):
        inc.options(ordered="no")
