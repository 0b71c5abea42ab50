"""StopFlow ends a flow cleanly when raised from a stage's items; anywhere else it
is a mistake, reported at once with what to do instead."""

import pytest
from helpers import ignore, inc, numbers

from flowdsl import (
    GraphError,
    Source,
    StageError,
    StopFlow,
    Transform,
    loop,
    sink,
    source,
    transform,
)


@pytest.mark.parametrize(
    "build, where",
    [
        (lambda: numbers(3) >> StopFlow, "a stage"),
        (lambda: numbers(3) >> StopFlow(), "a stage"),
        (lambda: numbers(3) >> [inc, StopFlow], "a stage"),
        (lambda: Transform(StopFlow), "a transform"),
        (lambda: Source(StopFlow), "a source"),
        (lambda: transform(StopFlow), "@transform"),
        (lambda: transform(workers=2)(StopFlow), "@transform"),
        (lambda: inc.options(on_error=StopFlow), "on_error of stage 'inc'"),
        (lambda: loop(StopFlow, seed=[1]), "a stage"),
        (lambda: loop(inc, seed=[1], until=StopFlow), "a loop's until"),
    ],
)
def test_stop_flow_given_as_code_is_rejected_at_build(build, where):
    with pytest.raises(
        GraphError, match=r"StopFlow was given as (.*), but it is an exception"
    ) as info:
        build()
    assert where in str(info.value) and "`raise StopFlow`" in str(info.value)


@transform
class StopsInInit:
    def local_init(self):
        raise StopFlow

    def run(self, x):
        return x


@transform
class StopsInTerm:
    def run(self, x):
        return x

    def local_term(self):
        raise StopFlow


@pytest.mark.parametrize(
    "stage, hook, advice",
    [
        (StopsInInit, "local_init", "raise it there, on the first item"),
        (StopsInTerm, "local_term", "return normally from it"),
    ],
)
def test_stop_flow_from_a_hook_is_an_error_naming_stage_and_hook(executor, stage, hook, advice):
    with pytest.raises(StageError) as info:
        (numbers(10) >> stage() >> ignore).run(executor=executor, timeout=20)
    error = info.value
    assert error.stage == stage.name
    assert f"StopFlow in {hook}()" in str(error) and advice in str(error)
    assert isinstance(error.__cause__, StopFlow)


@transform
def returns_it(x):
    return StopFlow if x == 3 else x  # meant: raise StopFlow


@transform
def yields_it(x):
    yield x
    if x == 3:
        yield StopFlow()


@source
def source_yields_it():
    yield 1
    yield StopFlow


@sink
def sink_returns_it(x):
    if x == 3:
        return StopFlow
    return None


@transform
def returns_an_instance(x):
    return StopFlow() if x == 3 else x


@pytest.mark.parametrize(
    "flow, stage, item, verb",
    [
        (lambda: numbers(10) >> returns_it, "returns_it", "3", "returned"),
        (lambda: numbers(10) >> returns_an_instance, "returns_an_instance", "3", "returned"),
        (lambda: numbers(10) >> yields_it, "yields_it", "3", "yielded"),
        (lambda: source_yields_it >> inc, "source_yields_it", None, "yielded"),
        (lambda: numbers(10) >> sink_returns_it, "sink_returns_it", "3", "returned"),
    ],
)
def test_stop_flow_as_a_result_is_an_error_naming_stage_and_item(executor, flow, stage, item, verb):
    with pytest.raises(StageError) as info:
        flow().run(executor=executor, timeout=20)
    error = info.value
    assert (error.stage, error.item) == (stage, item)
    assert f"{verb} StopFlow instead of raising it" in str(error)
    assert "write `raise StopFlow`" in str(error)
    assert isinstance(error.__cause__, TypeError)


def test_a_returned_stop_flow_follows_the_error_policy(executor):
    report = (numbers(10) >> returns_it.options(on_error="skip") >> ignore).run(
        executor=executor, timeout=20
    )
    stats = report["returns_it"]
    assert (stats.items_in, stats.items_out, stats.errors) == (10, 9, 1)
    assert not report.stopped


def test_raised_stop_flow_still_ends_the_flow_cleanly(executor):
    @transform
    def upto(x):
        if x == 3:
            raise StopFlow
        return x

    report = (numbers(10**9) >> upto >> ignore).run(executor=executor, timeout=20)
    assert report.stopped and report["upto"].items_out == 3


def test_a_stage_ended_mid_batch_counts_only_what_it_took_in(executor):
    @transform
    def upto_50(x):
        if x == 50:
            raise StopFlow
        return x

    report = (numbers(1000) >> upto_50 >> ignore).run(executor=executor, timeout=20)
    assert (report["upto_50"].items_in, report["upto_50"].items_out) == (51, 50)
