"""Properties against an oracle: plain Python composition and the serial executor
agree with the process executor on random chains and DAGs (see ``strategies.py``)."""

from collections import Counter

import pytest
from conftest import examples
from helpers import workers_paused_at_random
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import (
    Chain,
    Dag,
    Loop,
    Step,
    add2,
    chains,
    dags,
    discard,
    item_lists,
    items_of,
    looped_dags,
    unordered_chains,
)

from flowdsl import ProcessExecutor, merge

EXECUTORS = ("serial", "process")
# Every run here takes well under a second: a run that lasts longer is a deadlock,
# and should fail as one (FlowTimeout) rather than hit the global pytest timeout.
HANG = 10


def _collect_all(flow):
    return {name: flow.collect(executor=name, timeout=HANG) for name in EXECUTORS}


# -- (1) ordered chains: the exact list --------------------------------------------------


@given(items=item_lists, chain=chains(ordered=True))
@example(
    items=list(range(40)),
    chain=Chain(
        (
            Step("repeat", 2, workers=3),
            Step("keep", 3, workers=2),
            Step("mul", -2, workers=3, buffer=1),
        )
    ),
)
def test_ordered_chain_gives_the_same_list_everywhere(items, chain):
    flow = chain.attach(items_of(items))
    expected = chain.apply(items)
    assert _collect_all(flow) == {name: expected for name in EXECUTORS}


# -- (2) unordered somewhere: the same multiset ------------------------------------------


@given(items=item_lists, chain=unordered_chains())
def test_unordered_chain_gives_the_same_multiset_everywhere(items, chain):
    flow = chain.attach(items_of(items))
    expected = Counter(chain.apply(items))
    for name, got in _collect_all(flow).items():
        assert Counter(got) == expected, name


@settings(max_examples=5)
@given(
    items=item_lists,
    chain=chains(max_size=3, ordered=None),
    method=st.sampled_from(["spawn", "forkserver"]),
)
def test_chains_under_other_start_methods(items, chain, method):
    # every stage is a module-level function with bound arguments: nothing needs fork
    got = chain.attach(items_of(items)).collect(executor=ProcessExecutor(method), timeout=HANG)
    expected = chain.apply(items)
    if chain.keeps_order:
        assert got == expected
    else:
        assert Counter(got) == Counter(expected)


# -- (3) DAGs ----------------------------------------------------------------------------


def _diamond(items, left, right):
    """``items >> [left, right] >> add2``, one worker everywhere."""
    return Dag(
        "diamond",
        parts=(Dag("leaf", chains=(Chain(()),), items=items),),
        chains=(Chain(left), Chain(right)),
    )


@given(dag=dags())
# a branch at half the rate of the other: one side of the zip runs far ahead
@example(dag=_diamond(range(3000), [Step("keep", 2)], [Step("add", 0)]))
def test_dag_gives_the_same_results_everywhere(dag):
    flow = dag.flow()
    expected = dag.expected()
    for name, got in _collect_all(flow).items():
        if dag.keeps_order:
            assert got == expected, name
        else:
            assert Counter(got) == Counter(expected), name


def _stopped_diamond() -> Dag:
    """A zip whose shortest input ends first, beside a diamond with ordered
    workers: the diamond's zip stops and must read both its inputs to their end
    at once (read one after the other, they blocked their common upstream: a
    hang hypothesis found, in about one run of seven)."""

    def leaf(items, steps=()):
        return Dag("leaf", chains=(Chain(tuple(steps)),), items=items)

    def branch():
        return (Step("repeat", 2, workers=3, wrapped=True), Step("mul", -1, workers=2, buffer=16))

    diamond = Dag(
        "diamond",
        parts=(leaf(range(18, 971)),),
        chains=(Chain(branch()), Chain((Step("keep", 1, workers=3, buffer=3),))),
    )
    return Dag("zip", parts=(leaf(range(7, 406)), leaf(range(-24, 111), branch()), diamond))


@pytest.mark.timeout(120)
def test_a_stopped_zip_drains_a_diamond_without_deadlock():
    dag = _stopped_diamond()
    flow, expected = dag.flow(), dag.expected()
    for _ in range(20):
        assert flow.collect(executor="process", timeout=HANG) == expected


# A seeded loop feeding a loop of two multi-worker stages with buffers of 2: once
# seen to exceed its 10 s under heavy load (and not again in 3,000 runs), kept
# here so every run of the suite tries it.
SEEDED_INTO_NARROW_LOOP = Dag(
    "loop",
    parts=(
        Dag("seeded", loop=Loop((Step("minus", 2, workers=3, buffer=300),), "low_or_even", (2, 1))),
    ),
    loop=Loop(
        (Step("keep", 2, workers=2, buffer=2), Step("minus", 2, workers=3, buffer=2)),
        "low_or_even",
    ),
)


@given(dag=looped_dags(max_leaves=3))
@example(dag=SEEDED_INTO_NARROW_LOOP)
def test_graphs_with_loops_give_the_same_results_everywhere(dag):
    """Loops (nested, seeded, with flat-map, filter and broadcast bodies, several
    workers) inside random graphs: the process executor agrees with plain Python."""
    flow = dag.flow()
    expected = Counter(dag.expected())
    for name, got in _collect_all(flow).items():
        assert Counter(got) == expected, name


def test_the_seeded_loop_into_a_narrow_loop_ends_while_workers_are_paused_at_random():
    """The graph above, run again and again while its workers are stopped for a
    few milliseconds at a time, at random: a schedule that could hang its loop
    counts turns up here far more often than under load."""
    flow, expected = SEEDED_INTO_NARROW_LOOP.flow(), Counter(SEEDED_INTO_NARROW_LOOP.expected())
    with workers_paused_at_random(seed=0):
        for _ in range(examples(10)):
            assert Counter(flow.collect(executor="process", timeout=HANG)) == expected


@given(
    items=item_lists,
    up=chains(min_size=0, max_size=2, ordered=None),
    left=chains(max_size=2, ordered=None),
    right=chains(max_size=2, ordered=None),
)
def test_broadcast_collects_every_branch(items, up, left, right):
    flow = up.attach(items_of(items)) >> [left.flow(), right.flow()]
    mid = up.apply(items)
    expected = Counter(left.apply(mid) + right.apply(mid))
    for name, got in _collect_all(flow).items():
        assert Counter(got) == expected, name


NONE = [Step("mul", 2), Step("add", 1), Step("keep", 2)]  # odd numbers: none kept
BRANCHES = {  # two branches of a diamond that emit at different rates
    "none|all": (NONE, [Step("mul", 2)]),
    "half|all": ([Step("keep", 2)], [Step("add", 0)]),
    "all|twice": ([Step("add", 1)], [Step("repeat", 2)]),
    "twice|none": ([Step("repeat", 2, workers=2)], [*NONE[:2], Step("keep", 2, workers=2)]),
}


@pytest.mark.parametrize("n", [0, 7, 3000])
@pytest.mark.parametrize("branches", BRANCHES.values(), ids=BRANCHES.keys())
def test_zip_pairs_branches_that_run_at_different_rates(n, branches):
    """``src >> [b, c] >> add2`` is ``map(add, b(src), c(src))``, however far one
    branch runs ahead of the other: the bounded queues must not deadlock it."""
    items = list(range(n))
    left, right = (Chain(tuple(b)) for b in branches)
    flow = items_of(items) >> [left.flow(), right.flow()] >> add2
    expected = [a + b for a, b in zip(left.apply(items), right.apply(items), strict=False)]
    assert _collect_all(flow) == {name: expected for name in EXECUTORS}


# -- (4) RunReport counts ----------------------------------------------------------------


def _check_chain(report, chain, items, upstream, prefix):
    """Each stage ``{prefix}{i}`` took in what its upstream let out, and let out what
    the reference says.  Returns the name of the last stage."""
    prev = upstream
    for i, out in enumerate(chain.prefixes(items)):
        name = f"{prefix}{i}"
        assert report[name].items_in == report[prev].items_out, name
        assert report[name].items_out == len(out), name
        prev = name
    return prev


@given(
    items=item_lists,
    up=chains(min_size=0, max_size=3, ordered=None),
    branches=st.lists(chains(max_size=2, ordered=None), min_size=1, max_size=2),
    merged=st.booleans(),
)
def test_report_counts_match_upstream_counts(items, up, branches, merged):
    """``src >> u0 >> ... >> [b0_0 >> ..., b1_0 >> ...]``, each branch into its own
    sink or both merged into one: every stage takes in what its upstream let out."""
    flow = up.attach(items_of(items).options(name="src"), "u")
    branch_flows = [b.flow(f"b{j}_") for j, b in enumerate(branches)]
    if merged:
        flow = merge(flow >> branch_flows) >> discard.options(name="end")
    else:
        flow = flow >> [b >> discard.options(name=f"end{j}") for j, b in enumerate(branch_flows)]
    mid = up.apply(items)

    for executor in EXECUTORS:
        report = flow.run(executor=executor, timeout=HANG)
        assert all(s.errors == 0 for s in report.stages.values()), report
        assert report["src"].items_out == len(items), report
        try:
            last_up = _check_chain(report, up, items, "src", "u")
            lasts = [
                _check_chain(report, b, mid, last_up, f"b{j}_") for j, b in enumerate(branches)
            ]
            if merged:
                assert report["end"].items_in == sum(report[s].items_out for s in lasts)
            else:
                for j, last in enumerate(lasts):
                    assert report[f"end{j}"].items_in == report[last].items_out
        except AssertionError as exc:
            raise AssertionError(f"{executor}: {exc}\n{report!r}") from None


# -- (5) batching boundaries -------------------------------------------------------------

SIZES = [0, 1, 2, 255, 256, 257, 1023, 1024, 1025]

CHAINS = {
    "maps": Chain(
        (Step("add", 1, workers=2), Step("mul", 3, workers=2), Step("add", -1, workers=2))
    ),
    "flat": Chain(
        (
            Step("repeat", 2, workers=2),
            Step("keep", 3, workers=2),
            Step("mul", -1, workers=2, wrapped=True),
        )
    ),
}


@pytest.mark.parametrize("chain", CHAINS.values(), ids=CHAINS.keys())
@pytest.mark.parametrize("n", SIZES)
def test_batch_boundaries_keep_order_and_count(n, chain):
    items = list(range(n))
    expected = chain.apply(items)
    flow = chain.attach(items_of(items))
    got = flow.collect(executor="process", timeout=HANG)
    assert len(got) == len(expected)
    assert got == expected
    assert flow.collect(executor="serial", timeout=HANG) == expected
