"""The stage machines, without processes: driven in one thread in random orders.

The serial executor runs the machines of :mod:`flowdsl._core.machine`; a random
:class:`Schedule` makes it run several workers per stage, cut batches anywhere,
hand them to any competing worker and step the queues in any order.  Whatever
the order, every flow must end and give the plain-Python result: as a multiset,
and as a sequence where order is promised.  Since the process and Ray executors
only move what the same machines make, this is where the rules are proved.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import Chain, Dag, Loop, Step, item_lists, items_of, looped_dags, loops

from flowdsl import SerialExecutor, source, transform
from flowdsl.executors.serial import Schedule


class RandomSchedule(Schedule):
    """Every choice the serial executor makes, made by ``rnd``."""

    parallel = True

    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd

    def split(self, items, consumers):
        batches, i = [], 0
        while i < len(items):
            k = self.rnd.randint(1, 4)
            batches.append((self.rnd.randrange(consumers), items[i : i + k]))
            i += k
        return batches

    def pick(self, ready):
        i = self.rnd.randrange(len(ready))
        key = ready[i]
        del ready[i]
        return key

    def pull_size(self):
        return self.rnd.randint(1, 5)


def _run(flow, rnd):
    return flow.collect(executor=SerialExecutor(RandomSchedule(rnd)), timeout=20)


@settings(max_examples=examples(300))
@given(dag=looped_dags(), rnd=st.randoms(use_true_random=False))
def test_any_schedule_gives_the_plain_python_result(dag: Dag, rnd):
    got = _run(dag.flow(), rnd)
    if dag.keeps_order:
        assert got == dag.expected()
    else:
        assert Counter(got) == Counter(dag.expected())


@settings(max_examples=examples(200))
@given(items=item_lists, body=loops(), rnd=st.randoms(use_true_random=False))
def test_loops_lose_nothing_in_any_schedule(items, body: Loop, rnd):
    flow = items_of(items) >> Step("keep", 1).stage() >> body.flow()
    assert Counter(_run(flow, rnd)) == Counter(body.apply(items))


@settings(max_examples=examples(100))
@given(
    items=item_lists,
    rnd=st.randoms(use_true_random=False),
    steps=st.lists(
        st.builds(
            Step,
            st.sampled_from(["add", "repeat", "keep"]),
            st.integers(1, 2),
            workers=st.integers(2, 3),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_ordered_workers_keep_order_in_any_schedule(items, rnd, steps):
    chain = Chain(tuple(steps))
    assert _run(chain.attach(items_of(items)), rnd) == chain.apply(items)


@transform
def add(a, b):
    return a + b


@source
def forever():
    yield from itertools.count()


@settings(max_examples=examples(50))
@given(items=st.lists(st.integers(), min_size=3, max_size=20), seed=st.integers())
def test_a_zip_ends_when_an_input_runs_out_even_if_the_other_never_does(items, seed):
    # the endless input is filtered, so it often lags: the ended input's items
    # still wait to be paired when its end arrives (a seeded schedule: an
    # endless run would draw endlessly from hypothesis)
    flow = [items_of(items), forever() >> Step("keep", 3).stage()] >> add
    assert _run(flow, random.Random(seed)) == [x + 3 * i for i, x in enumerate(items)]


def test_the_loop_that_lost_items_on_the_process_executor():
    # one output leaves the loop, the other goes round again
    body = Loop((Step("split", 3), Step("minus", 0)))
    flow = items_of([4]) >> body.flow()
    for seed in range(50):
        assert sorted(_run(flow, random.Random(seed))) == [-2, -2, -1, 0, 0, 0]


# -- one machine, event by event -------------------------------------------------------------
def _zip_machine():
    from flowdsl._core.machine import Machine
    from flowdsl._plan import compile_flow

    plan = compile_flow(([items_of([]), items_of([])] >> add)._as_flow())
    (node,) = [n for n in plan.nodes if len(n.inputs) == 2]
    machine = Machine(node)
    machine.open()
    return machine


def test_a_zip_counts_what_it_can_never_pair_as_left_over():
    m = _zip_machine()
    m.feed(0, [1])
    m.end(0)
    m.feed(1, [10, 20, 30])  # pairs 1 with 10; input 0 has ended: the zip ends
    assert m.out == [[11]] and m.status.value == "ended"
    m.feed(1, [40])  # still arriving after the end
    m.end(1)
    assert (m.leftover, m.dropped) == (3, 0)
    assert m.leftover_by_input == [0, 3] and m.losses == (3, 0)
    assert m.take_closed() == [0]


def test_a_stopped_zip_counts_what_arrives_as_dropped():
    m = _zip_machine()
    m.feed(0, [1, 2])
    m.stop()
    m.feed(1, [10])
    assert (m.leftover, m.dropped) == (0, 3)  # the two waiting, and the one after
