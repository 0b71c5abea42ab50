"""Item types: annotated edges are checked when a flow is built, and
``check_types=True`` checks every item in the workers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import NamedTuple, TypedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowdsl import GraphError, StageError, Transform, loop, merge, sink, source, transform
from flowdsl._types import fits, is_instance

pytestmark = pytest.mark.timeout(60)


@source
def numbers(n: int) -> Iterator[int]:
    yield from range(n)


@source
def words(n: int) -> Iterator[str]:
    yield from (f"w{i}" for i in range(n))


@transform
def square(x: int) -> int:
    return x * x


@transform
def shout(s: str) -> str:
    return s.upper()


@transform
def odd(x: int) -> int | None:
    return x if x % 2 else None


@transform
def pair(a: int, b: str) -> str:
    return f"{b}{a}"


@transform
def halve(x: float) -> float:
    return x / 2


def _error(build) -> str:
    with pytest.raises(GraphError) as info:
        build()
    return str(info.value)


# -- checked when the flow is built -----------------------------------------------------
def test_a_mismatched_edge_names_both_stages_the_edge_and_both_types():
    message = _error(lambda: numbers(3) >> shout)
    assert message.startswith("numbers >> shout: ")
    assert "stage 'numbers' makes int" in message
    assert "stage 'shout' takes str on input 0 (parameter 's')" in message


def test_a_matching_chain_builds_and_runs():
    assert (numbers(4) >> square >> halve).collect(executor="serial") == [0, 0.5, 2.0, 4.5]


def test_optional_means_may_filter_so_the_rest_is_checked():
    assert (numbers(5) >> odd >> square).collect(executor="serial") == [1, 9]
    assert "stage 'odd' makes int" in _error(lambda: numbers(5) >> odd >> shout)


def test_ints_go_where_floats_are_taken():
    assert (numbers(2) >> halve).collect(executor="serial") == [0, 0.5]
    assert "makes float" in _error(lambda: numbers(2) >> halve >> square)


def test_a_zip_checks_each_input_against_its_parameter():
    assert ([numbers(2), words(2)] >> pair).collect(executor="serial") == ["w00", "w11"]
    message = _error(lambda: [numbers(2), numbers(2)] >> pair)
    assert "takes str on input 1 (parameter 'b')" in message


def test_generators_async_generators_and_sources_make_their_element_type():
    @transform
    def letters(s: str) -> Iterator[str]:
        yield from s

    @transform
    async def chars(s: str) -> AsyncIterator[str]:
        for c in s:
            yield c

    assert (words(1) >> letters >> shout).collect(executor="serial") == ["W", "0"]
    assert "stage 'letters' makes str" in _error(lambda: words(1) >> letters >> square)
    assert "stage 'chars' makes str" in _error(lambda: words(1) >> chars >> square)


def test_a_coroutine_makes_what_it_returns():
    @transform
    async def length(s: str) -> int:
        return len(s)

    assert "stage 'length' makes int" in _error(lambda: words(1) >> length >> shout)


def test_batches_take_and_make_the_elements_of_their_lists():
    @transform(batch=2)
    def lengths(xs: list[str]) -> list[int]:
        return [len(x) for x in xs]

    assert (words(3) >> lengths >> square).collect(executor="serial") == [4, 4, 4]
    assert "stage 'lengths' takes str" in _error(lambda: numbers(3) >> lengths)
    assert "stage 'lengths' makes int" in _error(lambda: words(3) >> lengths >> shout)


def test_class_stages_are_checked_by_their_run_method():
    class Scale:
        def run(self, x: float) -> float:
            return 2 * x

    @transform
    class Upper:
        def run(self, s: str) -> str:
            return s.upper()

    assert (numbers(2) >> Transform(Scale())).collect(executor="serial") == [0, 2]
    assert "stage 'Upper' takes str" in _error(lambda: numbers(2) >> Upper())


def test_generic_types_are_asked_of_beartype():
    @transform
    def spread(x: int) -> list[int]:
        return [x]

    @transform
    def total(xs: Sequence[int]) -> int:
        return sum(xs)

    @transform
    def joined(xs: list[str]) -> str:
        return "".join(xs)

    assert (numbers(3) >> spread >> total).collect(executor="serial") == [0, 1, 2]
    assert "makes list[int]" in _error(lambda: numbers(3) >> spread >> joined)


def test_merges_and_broadcasts_check_every_edge():
    assert "stage 'words' makes str" in _error(lambda: merge(numbers(2), words(2)) >> square)
    assert "stage 'shout' takes str" in _error(lambda: numbers(2) >> [square, shout])


def test_a_loop_body_must_take_what_it_makes_and_what_enters_it():
    @transform
    def grow(x: int) -> int:
        return x + 3

    @transform
    def named(x: int) -> str:
        return str(x)

    flow = numbers(3) >> loop(grow, until=lambda x: x > 5)
    assert sorted(flow.collect(executor="serial")) == [6, 7, 8]
    assert "goes back into named" in _error(lambda: loop(named, until=lambda s: True))
    message = _error(lambda: words(3) >> loop(grow, until=lambda x: x > 5))
    assert "stage 'loop' (its body's first stage, 'grow') takes int" in message
    assert "stage 'loop' makes int" in _error(
        lambda: numbers(3) >> loop(grow, until=lambda x: x > 5) >> shout
    )


def test_what_is_not_annotated_or_not_understood_is_not_checked():
    @transform
    def unknown(x: NotDefinedAnywhere) -> str:  # noqa: F821  (a name no one can resolve)
        return str(x)

    # a lambda's types are unknown: neither of its edges is checked
    assert (numbers(2) >> (lambda x: str(x)) >> shout).collect(executor="serial") == ["0", "1"]
    assert (numbers(2) >> unknown >> shout).collect(executor="serial") == ["0", "1"]


# -- check_types: every item, in the workers ----------------------------------------------
@source
def mixed(n):
    yield from [1, 2, "three", 4][:n]


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_check_types_fails_an_item_of_the_wrong_type_through_the_policy(executor):
    doubled = square.options(check_types=True, on_error="skip")
    assert (mixed(4) >> doubled).collect(executor=executor) == [1, 4, 16]
    with pytest.raises(StageError) as info:
        (mixed(4) >> square.options(check_types=True)).collect(executor=executor)
    assert info.value.stage == "square" and info.value.item == "'three'"
    assert "takes int (parameter 'x'), got str 'three'" in str(info.value)


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_check_types_checks_results_and_yielded_items(executor):
    @transform(check_types=True)
    def liar(x: int) -> str:
        return x  # type: ignore[return-value]

    @transform(check_types=True)
    def half_liar(x: int) -> Iterator[str]:
        yield str(x)
        yield x  # type: ignore[misc]

    with pytest.raises(StageError, match="makes str, but returned int 0"):
        (numbers(2) >> liar).collect(executor=executor)
    with pytest.raises(StageError, match="makes str, but yielded int 0"):
        (numbers(2) >> half_liar).collect(executor=executor)


def test_check_types_checks_coroutines_and_batches():
    @transform(check_types=True)
    async def echo(x: int) -> int:
        return x

    @sink(batch=2, check_types=True)
    def store(xs: list[int]) -> None:
        pass

    with pytest.raises(StageError, match=r"takes int .*got str 'three'"):
        (mixed(4) >> echo).collect(executor="serial")
    with pytest.raises(StageError, match=r"takes int .*got str 'three'"):
        (mixed(4) >> store).run(executor="serial")


def test_check_types_is_a_boolean_and_not_for_sources():
    with pytest.raises(GraphError, match="check_types must be True or False"):
        square.options(check_types="yes")
    with pytest.raises(GraphError, match="source 'numbers': check_types applies"):
        numbers.options(check_types=True)


# -- the compatibility test itself ---------------------------------------------------------
TYPES = [
    int,
    float,
    bool,
    str,
    bytes,
    int | None,
    str | None,
    int | str,
    list[int],
    list[str],
    Sequence[int],
    tuple[int, ...],
    dict[str, int],
    set[int],
]


@given(st.sampled_from(TYPES), st.sampled_from(TYPES), st.data())
def test_fits_never_accepts_a_value_that_is_not_of_the_taken_type(made, taken, data):
    if fits(made, taken):
        value = data.draw(st.from_type(made))
        assert is_instance(value, taken), (made, taken, value)


class Point(NamedTuple):
    x: int
    y: int


class Row(TypedDict):
    name: str


@pytest.mark.parametrize(
    "made, taken",
    [
        (int, int),
        (bool, int),
        (int, float),
        (int, complex),
        (int, int | None),
        (list[int], Sequence[int]),
        (int | bool, int),
        (list[int], Sequence[float]),
        (Point, tuple[int, ...]),
        (Point, tuple),
        (Row, Mapping[str, object]),
    ],
)
def test_fits_accepts_what_type_checkers_accept(made, taken):
    assert fits(made, taken)


@pytest.mark.parametrize(
    "made, taken",
    [
        (str, int),
        (float, int),
        (int | None, int),
        (list[int], list[str]),
        (int | str, int),
        (Point, tuple[str, ...]),
    ],
)
def test_fits_refuses_what_type_checkers_refuse(made, taken):
    assert not fits(made, taken)


# -- types become tests -------------------------------------------------------------------
@transform
def inverse(x: int) -> float:
    return 1 / x


@transform
def liar(x: int) -> str:
    return x  # type: ignore[return-value]


def test_check_flow_passes_a_sound_flow_from_a_source_or_an_open_chain():
    from flowdsl.testing import check_flow

    check_flow(numbers >> square >> halve, n=st.integers(0, 40), max_examples=8)
    check_flow(square >> odd >> halve, max_examples=8)


def test_check_flow_shrinks_to_the_item_that_makes_a_stage_raise():
    from flowdsl.testing import check_flow

    with pytest.raises(AssertionError) as info:
        check_flow(square >> inverse, max_examples=30, executors=("serial",))
    assert str(info.value).startswith("stage 'inverse' failed on Inputs(items=[0]):")


def test_check_flow_fails_results_that_are_not_the_declared_type():
    from flowdsl.testing import check_flow

    with pytest.raises(AssertionError, match="stage 'liar' declares str but made int"):
        check_flow(liar, max_examples=5, executors=("serial",))


@given(st.data())
def test_inputs_come_from_annotations_or_overrides(data):
    from flowdsl.testing import Inputs, inputs

    assert data.draw(inputs(numbers, n=st.just(4))) == Inputs(arguments={"n": 4})
    assert all(isinstance(x, str) for x in data.draw(inputs(shout)).items)
    assert all(0 <= x < 3 for x in data.draw(inputs(shout, items=st.integers(0, 2))).items)


def test_inputs_say_what_cannot_be_drawn():
    from flowdsl.testing import Inputs, inputs

    assert repr(Inputs(arguments={"n": 3})) == "Inputs(n=3)"
    with pytest.raises(GraphError, match="no annotated item type"):
        inputs(transform(lambda x: x))
    with pytest.raises(GraphError, match="has no unbound parameter 'm'"):
        inputs(numbers, m=st.just(1))


def test_a_zip_of_the_wrong_arity_is_refused_when_built():
    message = _error(lambda: [numbers(2), words(2), numbers(2)] >> pair)
    assert message.startswith("transform 'pair' cannot be called with 3 item argument(s)")
    assert message.endswith("(it is fed by a zip of 3 upstreams, one argument each)")


def test_one_upstream_into_a_stage_that_needs_two_is_refused_when_built():
    message = _error(lambda: numbers(2) >> pair)
    assert message == (
        "transform 'pair' cannot be called with 1 item argument(s): "
        "missing a required argument: 'b' (an item is passed whole, as one argument: a "
        "function of a tuple item takes the tuple and unpacks it, and a zip of upstreams "
        "gives one argument each)"
    )
    assert (numbers(2) >> pair("x")).collect(executor="serial") == ["x0", "x1"]  # b bound


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_check_types_checks_what_batches_and_async_generators_make(executor):
    @transform(batch=2, check_types=True)
    def lengths(xs: list[str]) -> list[int]:
        return [str(len(x)) for x in xs]  # type: ignore[misc]

    @transform(check_types=True)
    async def chars(s: str) -> AsyncIterator[int]:
        for c in s:
            yield c  # type: ignore[misc]

    with pytest.raises(StageError, match="makes int, but made str '2'"):
        (words(3) >> lengths).collect(executor=executor)
    with pytest.raises(StageError, match="makes int, but yielded str 'w'"):
        (words(3) >> chars).collect(executor=executor)


def test_annotations_evaluated_late_are_checked_once_they_can_be():
    @transform(check_types=True)
    def to_record(x: int) -> Later:  # noqa: F821  (defined further down the test)
        return x  # type: ignore[return-value]

    with pytest.raises(
        GraphError, match="check_types=True needs its annotations, which cannot be evaluated"
    ):
        (numbers(2) >> to_record).collect(executor="serial")
    globals()["Later"] = str  # the name is defined now
    try:
        assert "stage 'to_record' makes str" in _error(lambda: numbers(2) >> to_record >> square)
        with pytest.raises(StageError, match="makes str, but returned int 0"):
            (numbers(2) >> to_record).collect(executor="serial")
    finally:
        del globals()["Later"]


def test_a_loop_whose_head_takes_tuples_takes_what_fits_them():
    @source
    def pairs(n: int) -> Iterator[tuple[int, str]]:
        yield from ((i, "x") for i in range(n))

    @transform
    def step(x: int, tag: str) -> tuple[int, str]:
        return x + 2, tag

    flow = pairs(2) >> loop(step, until=lambda p: p[0] > 3)
    assert sorted(flow.collect(executor="serial")) == [(4, "x"), (5, "x")]
