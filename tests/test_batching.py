"""Batches for vectorised code: batch(n), unbatch, and transform(batch=n)."""

import pytest
from helpers import numbers
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdsl import GraphError, batch, loop, sink, source, transform, unbatch

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["serial", "process"])
def executor(request):
    return request.param


def test_batch_groups_items_into_lists_the_last_one_partial(executor):
    assert (numbers(10) >> batch(4)).collect(executor=executor) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    assert (numbers(8) >> batch(4)).collect(executor=executor) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert (numbers(0) >> batch(4)).collect(executor=executor) == []


@transform(batch=16)
def affine(xs):
    import numpy as np

    return np.asarray(xs) * 2 + 1


def test_a_batched_transform_gives_the_per_item_results(executor):
    got = (numbers(100) >> affine).collect(executor=executor)
    assert [int(y) for y in got] == [2 * x + 1 for x in range(100)]


def test_a_batched_transform_with_workers_keeps_order():
    @transform(batch=8, workers=2)
    def squares(xs):
        return [x * x for x in xs]

    assert (numbers(200) >> squares).collect() == [x * x for x in range(200)]


def test_a_batched_sink_gets_lists(executor, tmp_path):
    path = tmp_path / "sizes"

    @sink(batch=5)
    def bulk(rows):
        with open(path, "a") as f:
            f.write(f"{len(rows)} {sum(rows)}\n")

    (numbers(12) >> bulk).run(executor=executor)
    assert path.read_text().splitlines() == ["5 10", "5 35", "2 21"]


def test_a_batched_zip_gets_lists_of_tuples(executor):
    @transform(batch=3)
    def add(pairs):
        return [a + b for a, b in pairs]

    flow = [numbers(7), numbers(7) >> transform(lambda x: 10 * x)] >> add
    assert flow.collect(executor=executor) == [11 * x for x in range(7)]


def test_a_partial_list_goes_out_after_wait(mp_context):
    """The source holds back its last items until the first list has arrived
    downstream: only ``wait`` can send that list, which is partial."""
    first_arrived = mp_context.Event()

    @source
    def held_back():
        yield from (0, 1, 2)
        assert first_arrived.wait(20), "the partial list never went out"
        yield from (3, 4)

    got = []
    for lst in (held_back() >> batch(100, wait=0.05)).iterate(executor="process"):
        got.append(lst)
        first_arrived.set()
    assert got == [[0, 1, 2], [3, 4]]


@settings(max_examples=30, deadline=None)
@given(items=st.lists(st.integers()), n=st.integers(1, 10))
def test_unbatch_undoes_batch(items, n):
    flow = source(lambda: items)() >> batch(n) >> unbatch
    got = flow.collect(executor="serial")
    assert got == items
    lists = (source(lambda: items)() >> batch(n)).collect(executor="serial")
    assert all(len(lst) == n for lst in lists[:-1]) and all(1 <= len(lst) <= n for lst in lists)


@settings(max_examples=5, deadline=None)
@given(items=st.lists(st.integers(), max_size=300), n=st.integers(1, 40))
def test_unbatch_undoes_batch_on_processes(items, n):
    flow = source(lambda: items)() >> batch(n) >> unbatch
    assert flow.collect(executor="process", timeout=30) == items


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: batch(0), GraphError, "n must be an integer >= 1"),
        (lambda: batch(2, wait=0), GraphError, "wait must be a number of seconds > 0"),
        (lambda: batch(2).options(workers=2), GraphError, "'batch': a batch runs in exactly"),
        (lambda: transform(batch=0)(lambda xs: xs), GraphError, "batch must be an integer"),
        (lambda: source(batch=2), TypeError, "batch"),
        (
            lambda: transform(batch=2, concurrency=4)(lambda xs: xs),
            GraphError,
            "batch and concurrency",
        ),
    ],
)
def test_batch_options_are_checked_when_the_stage_is_made(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_batch_is_refused_inside_a_loop():
    body = transform(batch=2)(lambda xs: [x + 1 for x in xs])
    with pytest.raises(GraphError, match="not supported inside a loop"):
        (numbers(3) >> loop(body, until=lambda x: x > 5)).collect(executor="serial")


@given(items=st.lists(st.integers()), n=st.integers(1, 10), cuts=st.lists(st.integers(0, 30)))
def test_a_batcher_fills_the_same_lists_whatever_the_chunks(items, n, cuts):
    from flowdsl._batching import Batcher

    batcher, lists, start = Batcher(n), [], 0
    for cut in [*cuts, len(items)]:
        lists += batcher.take(items[start : start + cut])
        start += cut
    lists += [batcher.held] if batcher.held else []
    assert lists == [items[i : i + n] for i in range(0, len(items), n)]


def test_a_batch_stage_fills_its_lists_in_its_own_worker_where_it_can():
    from flowdsl._plan import compile_flow

    @transform(batch=4)
    def sums(xs):
        return [sum(xs)]

    def hidden(flow):
        return [n.name for n in compile_flow(flow).nodes if n.hidden]

    assert hidden(numbers(10) >> sums) == []  # one process, one hop fewer
    supervised = sums.options(timeout=30)  # its worker holds one item at a time
    assert hidden(numbers(10) >> supervised) == ["sums:batch"]
    for flow in (numbers(10) >> sums, numbers(10) >> supervised):
        assert flow.collect() == [6, 22, 17]


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_a_list_is_the_item_that_retries_and_dead_letters_see(executor, tmp_path):
    from helpers import letters_to

    marks = tmp_path / "tried"

    @transform(batch=3, retries=1)
    def flaky(xs):
        first = not marks.exists()
        marks.touch()
        if first:
            raise ValueError("once")
        return xs

    assert (numbers(5) >> flaky).collect(executor=executor) == [0, 1, 2, 3, 4]
    letters = tmp_path / "letters"

    @transform(batch=2, on_error=letters_to(str(letters)))
    def picky(xs):
        if 3 in xs:
            raise ValueError("no threes")
        return xs

    assert (numbers(5) >> picky).collect(executor=executor) == [0, 1, 4]
    assert letters.read_text().splitlines() == ["[2, 3] ValueError"]
