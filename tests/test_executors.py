"""Behaviour every executor shares: the serial executor is the reference."""

import logging
import os
import re
import threading
import time
from collections import Counter

import pytest
from helpers import (
    BadRepr,
    BadStr,
    Unpicklable,
    add,
    always_fails,
    closure_of,
    counted,
    deep_item,
    double,
    evens,
    exits,
    fail_on,
    identity,
    ignore,
    inc,
    interrupts,
    listed,
    numbers,
    open_closure,
    raises_bad_str,
    scale,
    twice,
)

from flowdsl import (
    FlowTimeout,
    ProcessExecutor,
    RunReport,
    Sentinel,
    StageError,
    StopFlow,
    merge,
    sink,
    source,
    transform,
)
from flowdsl.executors import execute
from flowdsl.executors._worker import MAX_BATCH


def test_map_chain(executor):
    assert (numbers(50) >> inc >> double).collect(executor=executor) == [
        2 * (x + 1) for x in range(50)
    ]


def test_none_filters(executor):
    assert (numbers(20) >> evens).collect(executor=executor) == list(range(0, 20, 2))


def test_generator_transform_flat_maps(executor):
    assert (numbers(3) >> twice).collect(executor=executor) == [0, 0, 1, 1, 2, 2]


def test_bound_arguments_follow_the_item(executor):
    assert (numbers(4) >> scale(factor=3)).collect(executor=executor) == [0, 3, 6, 9]
    assert (numbers(4) >> scale(5)).collect(executor=executor) == [0, 5, 10, 15]


def test_source_returning_an_iterable(executor):
    assert (listed("abc") >> transform(str.upper)).collect(executor=executor) == ["A", "B", "C"]


def test_zip_calls_with_one_argument_per_upstream(executor):
    flow = [numbers(5), numbers(5) >> double] >> add
    assert flow.collect(executor=executor) == [3 * x for x in range(5)]


def test_zip_leftovers_are_reported(executor, caplog):
    caplog.set_level(logging.WARNING, logger="flowdsl")
    flow = [numbers(3), numbers(7) >> twice] >> add
    assert flow.collect(executor=executor) == [0, 1, 3]
    # the longer input stops once the zip has ended; what it had sent is reported
    counts = [
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"(\d+) item\(s\) left over", r.getMessage()))
    ]
    assert len(counts) == 1 and 1 <= counts[0] <= 11


@pytest.mark.parametrize("workers", [1, 2])
def test_the_report_carries_each_zips_left_over_items(executor, caplog, workers):
    caplog.set_level(logging.WARNING, logger="flowdsl")
    flow = [numbers(3), numbers(7) >> twice] >> add.options(workers=workers)
    report = flow.run(executor=executor)
    logged = sum(
        int(m.group(1))
        for r in caplog.records
        if (m := re.search(r"(\d+) item\(s\) left over", r.getMessage()))
    )
    assert report["add"].left_over == logged >= 1
    assert report.to_dict()["stages"]["add"]["left_over"] == logged
    if executor == "serial" and workers == 1:  # a fixed order: an exact count
        assert logged == 5


@pytest.mark.parametrize(
    "sizes, workers",
    [((1000, 10), 1), ((50, 0), 1), ((1000, 10), 2), ((10, 1000), 2), ((100_000, 10), 1)],
)
def test_every_item_an_upstream_of_a_zip_made_is_paired_left_over_or_dropped(
    executor, tmp_path, sizes, workers
):
    # the longer upstream is stopped once the zip ends.  Whatever it had made by
    # then, sent or still in hand, is counted: left over where it reached the zip,
    # dropped where a stage between them had stopped first
    paths = [tmp_path / "a", tmp_path / "b"]
    flow = [
        counted(sizes[0], str(paths[0])),
        counted(sizes[1], str(paths[1])) >> identity.options(workers=workers),
    ] >> add.options(workers=workers)
    report = flow.run(executor=executor, timeout=30)
    made = [int(p.read_text()) for p in paths]  # the generators' own counts
    pairs = min(sizes)
    assert report["add"].items_in == pairs
    lost = {
        name: (s.left_over, s.dropped)
        for name, s in report.stages.items()
        if s.left_over or s.dropped
    }
    assert sum(made) - 2 * pairs == sum(map(sum, lost.values())) > 0, lost
    if sizes[0] > sizes[1]:  # straight from the source: all of it left over
        assert lost == {"add": (made[0] - pairs, 0)}
    if executor == "serial":  # one item at a time: the longer made one too many
        assert sum(made) - 2 * pairs == 1


def test_a_sources_generator_is_closed_when_the_flow_stops_it_early(executor, tmp_path):
    path = tmp_path / "made"

    @transform
    def three(x):
        return Sentinel if x == 3 else x

    assert (counted(10**9, str(path)) >> three).collect(executor=executor, timeout=30) == [0, 1, 2]
    assert 3 <= int(path.read_text()) < 10**9  # its finally block ran


@source
def odd_items(path):
    """Items that look like signals, None (skipped), then a Sentinel instance: the
    stream ends there, and the generator's code after it never runs."""
    yield from (int, None, 1, StageError, None)
    yield Sentinel()
    with open(path, "w") as f:
        f.write("ran on")
    yield 2


def test_a_source_skips_none_passes_classes_on_and_ends_at_a_sentinel(executor, tmp_path):
    path = tmp_path / "after"
    assert odd_items(str(path)).collect(executor=executor) == [int, 1, StageError]
    assert not path.exists()


@source
def breaks_after(n):
    yield from range(n)
    raise OSError("the feed broke")


def test_a_source_error_names_the_source_after_the_items_before_it(executor):
    seen = []
    with pytest.raises(StageError, match="the feed broke") as info:
        for x in breaks_after(5).iterate(executor=executor):
            seen.append(x)
    assert info.value.stage == "breaks_after" and info.value.item is None
    # (the process executor raises as soon as it hears of the error, which may be
    # before the last items reach the driver)
    assert seen == list(range(len(seen)))
    if executor == "serial":
        assert seen == [0, 1, 2, 3, 4]


def test_merge_interleaves_every_item(executor):
    flow = merge(numbers(5), numbers(7) >> double) >> inc
    assert sorted(flow.collect(executor=executor)) == sorted(
        [x + 1 for x in range(5)] + [2 * x + 1 for x in range(7)]
    )


def test_broadcast_sends_every_item_to_every_branch(executor):
    got = (numbers(4) >> [inc, double]).collect(executor=executor)
    assert sorted(got) == sorted([1, 2, 3, 4, 0, 2, 4, 6])


def test_diamond(executor):
    assert (numbers(30) >> [inc, double] >> add).collect(executor=executor) == [
        3 * x + 1 for x in range(30)
    ]


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_keep_order_by_default(executor, workers):
    flow = numbers(300) >> inc.options(workers=workers) >> double
    assert flow.collect(executor=executor) == [2 * (x + 1) for x in range(300)]


def test_unordered_workers_give_same_multiset(executor):
    flow = numbers(300) >> twice.options(workers=2, ordered=False)
    assert sorted(flow.collect(executor=executor)) == sorted(2 * list(range(300)))


def test_zip_into_stage_with_workers(executor):
    flow = [numbers(100), numbers(100)] >> add.options(workers=2)
    assert flow.collect(executor=executor) == [2 * x for x in range(100)]


def test_workers_really_run_in_parallel_processes(mp_context):
    both_busy = mp_context.Barrier(2)  # passes only when two workers hold items

    @transform(workers=2, ordered=False)
    class Where:
        def local_init(self):
            self.first = True

        def run(self, x):
            if self.first:
                self.first = False
                both_busy.wait(timeout=10)
            return os.getpid()

    pids = set((numbers(40) >> Where()).collect(timeout=20))
    assert len(pids) == 2 and os.getpid() not in pids


@pytest.mark.parametrize("ordered", [True, False])
def test_slow_items_are_shared_among_all_workers(ordered):
    """A source makes its items faster than one worker takes them: they are
    spread over every worker, none of which gets more than about its share."""

    @transform(workers=8, ordered=ordered)
    def slow(x):
        time.sleep(0.03)
        return os.getpid()

    pids = (numbers(64) >> slow).collect(executor="process", timeout=20)
    shares = sorted(Counter(pids).values())
    assert len(shares) == 8 and shares[-1] <= 16, shares


def test_run_returns_report(executor):
    report = (numbers(10) >> evens >> ignore).run(executor=executor)
    assert isinstance(report, RunReport)
    assert report["numbers"].items_out == 10
    assert (report["evens"].items_in, report["evens"].items_out) == (10, 5)
    assert report["ignore"].items_in == 5
    assert report.seconds > 0 and "evens" in repr(report)


def test_run_discards_results_of_open_flows(executor):
    report = (numbers(10) >> inc).run(executor=executor)
    assert report["inc"].items_out == 10


def test_iteration_streams_results(executor):
    it = iter((numbers(10**9) >> inc).iterate(executor=executor))
    assert [next(it) for _ in range(5)] == [1, 2, 3, 4, 5]
    it.close()  # leaving early stops the workers (checked by the fixture)


def test_breaking_out_of_for_loop_stops_flow(executor):
    seen = []
    for x in (numbers(10**9) >> inc).iterate(executor=executor):
        seen.append(x)
        if len(seen) == 3:
            break
    assert seen == [1, 2, 3]


@sink
class Recorder:
    """Writes what each worker saw to a file, at local_term."""

    def __init__(self, folder):
        self.folder = folder
        self.seen = None

    def local_init(self):
        assert self.seen is None  # a fresh copy in every worker
        self.seen = []

    def run(self, x):
        self.seen.append(x)

    def local_term(self):
        path = os.path.join(self.folder, f"{os.getpid()}-{id(self)}.txt")
        with open(path, "w") as f:
            f.write(",".join(map(str, self.seen)))


def _recorded(folder):
    files = sorted(os.listdir(folder))
    values = []
    for name in files:
        with open(os.path.join(folder, name)) as f:
            text = f.read()
        values += [int(v) for v in text.split(",") if v]
    return files, values


def test_class_hooks_run_once_per_worker(executor, tmp_path):
    (numbers(100) >> Recorder(str(tmp_path)).options(workers=2)).run(executor=executor)
    files, values = _recorded(tmp_path)
    assert len(files) == (2 if executor == "process" else 1)
    assert sorted(values) == list(range(100))


def test_state_never_flows_back_to_driver(executor, tmp_path):
    stage = Recorder(str(tmp_path))
    (numbers(5) >> stage).run(executor=executor)
    assert stage.func.seen is None


def test_stage_error_names_stage_item_and_cause(executor):
    with pytest.raises(StageError) as info:
        (numbers(10) >> fail_on(bad=4) >> ignore).run(executor=executor)
    err = info.value
    assert err.stage == "fail_on" and err.item == "4" and err.worker == 0
    assert isinstance(err.__cause__, ValueError) and "bad item 4" in str(err.__cause__)
    assert "ValueError: bad item 4" in err.remote_traceback
    assert "'fail_on'" in str(err)


def test_error_in_source(executor):
    @source
    def broken():
        yield 1
        raise KeyError("gone")

    with pytest.raises(StageError, match="KeyError") as info:
        (broken >> inc).collect(executor=executor)
    assert info.value.stage == "broken"


def test_error_in_local_init(executor):
    @transform
    class BadInit:
        def local_init(self):
            raise RuntimeError("no init")

        def run(self, x):
            return x

    with pytest.raises(StageError, match="local_init") as info:
        (numbers(3) >> BadInit()).collect(executor=executor)
    assert info.value.stage == "BadInit"


def test_ignore_exceptions_skips_items(executor, caplog):
    from flowdsl import Transform

    caplog.set_level(logging.WARNING, logger="flowdsl")
    stage = Transform(fail_on.func, "skip", ignore_exceptions=[ValueError])
    assert (numbers(6) >> stage).collect(executor=executor) == [0, 1, 2, 4, 5]
    assert any("ignored ValueError" in r.getMessage() for r in caplog.records)


def test_unpicklable_output_is_an_error_of_the_producing_stage():
    @transform
    def make_bad(x):
        return Unpicklable()

    with pytest.raises(StageError, match="cannot be serialised") as info:
        (numbers(3) >> make_bad >> inc).collect()
    assert info.value.stage == "make_bad" and info.value.item == "<Unpicklable>"


def test_stop_flow_ends_cleanly(executor):
    @transform
    def until_five(x):
        if x == 5:
            raise StopFlow
        return x

    report = (numbers(10**9) >> until_five >> ignore).run(executor=executor)
    assert report.stopped


def test_timeout(executor):
    @transform
    def slow(x):
        time.sleep(0.05)
        return x

    start = time.monotonic()
    with pytest.raises(FlowTimeout):
        (numbers(10**6) >> slow >> ignore).run(executor=executor, timeout=0.3)
    assert time.monotonic() - start < 3


def test_worker_records_reach_driver_handlers(executor, caplog):
    caplog.set_level(logging.INFO, logger="flowdsl")
    (numbers(3) >> ignore).run(executor=executor)
    messages = [(r.getMessage(), getattr(r, "stage", None)) for r in caplog.records]
    assert ("End of stream", "numbers") in messages
    assert ("Local termination", "ignore") in messages


def test_user_logging_in_workers_reaches_driver(executor, caplog):
    @transform
    def chatty(x):
        logging.getLogger("myapp").warning("saw %s", x)
        return x

    caplog.set_level(logging.WARNING)
    (numbers(2) >> chatty >> ignore).run(executor=executor)
    assert sorted(r.getMessage() for r in caplog.records if r.name == "myapp") == ["saw 0", "saw 1"]


def test_records_made_in_a_worker_name_its_stage_and_worker(caplog):
    @transform(workers=2)
    def chatty(x):
        logging.getLogger("myapp").warning("saw %s", x)
        return x

    caplog.set_level(logging.WARNING)
    (numbers(4) >> chatty >> ignore).run()
    mine = [r for r in caplog.records if r.name == "myapp"]
    assert len(mine) == 4
    assert {r.stage for r in mine} == {"chatty"} and {r.worker for r in mine} <= {0, 1}


class _Formatted(logging.Handler):
    """Formats every record, and fails the test where a record cannot be."""

    def __init__(self, fmt):
        super().__init__()
        self.setFormatter(logging.Formatter(fmt))
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))

    def handleError(self, record):
        raise


def test_the_guides_format_fits_every_record_of_the_flowdsl_logger(executor):
    handler = _Formatted("%(levelname)s %(stage)s[%(worker)s] %(message)s")
    logger = logging.getLogger("flowdsl")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        (numbers(2) >> ignore).collect(executor=executor)  # warns, from the driver
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert any(line.startswith("WARNING None[None] ") for line in handler.lines)
    assert "INFO numbers[0] End of stream" in handler.lines


@pytest.mark.parametrize(
    "timeout, error",
    [
        ("5", TypeError),
        (True, TypeError),
        (0, ValueError),
        (-1, ValueError),
        (float("nan"), ValueError),
    ],
)
def test_a_run_timeout_that_is_not_a_positive_number_is_refused_by_name(timeout, error):
    with pytest.raises(error, match="timeout must be"):
        (numbers(1) >> inc).collect(executor="serial", timeout=timeout)


def test_unknown_executor():
    with pytest.raises(ValueError, match="unknown executor"):
        (numbers(1) >> inc).collect(executor="threads")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_start_methods_run_lambdas_and_closures(method):
    k = 7
    flow = numbers(20) >> transform(lambda x: x + k) >> scale(factor=2).options(workers=2)
    assert flow.collect(executor=ProcessExecutor(method)) == [2 * (x + k) for x in range(20)]


def test_spawn_rejects_stage_that_cannot_be_sent():
    from flowdsl import GraphError

    bad = Unpicklable()

    @transform
    def uses_bad(x):
        return bad and x

    with pytest.raises(GraphError, match="'uses_bad' cannot be sent"):
        (numbers(2) >> uses_bad).collect(executor=ProcessExecutor("spawn"))


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_synchronisation_objects_travel_with_a_stage_without_fork(method):
    """A term flag and a barrier made from the run's context reach spawned workers."""
    import multiprocess

    ctx = multiprocess.get_context(method)
    flag, both = ctx.Event(), ctx.Barrier(2)

    @transform(workers=2, ordered=False)
    def meet_then_stop(x):
        if x < 2:
            both.wait(timeout=20)  # passes only if both workers share the barrier
        if x == 50:
            flag.set()
        return x

    stage = meet_then_stop.options()
    stage.set_term_flag(flag)
    got = (endless >> stage).collect(executor=ProcessExecutor(method), timeout=30)
    assert {0, 1} <= set(got) and flag.is_set()


def test_spawn_names_what_to_do_about_objects_only_fork_can_share():
    import multiprocessing

    from flowdsl import GraphError

    flag = multiprocessing.Event()

    @transform
    def flagged(x):
        return flag.is_set() or x

    with pytest.raises(GraphError, match=r"'flagged'.*multiprocess.get_context\('spawn'\)"):
        (numbers(2) >> flagged).collect(executor=ProcessExecutor("spawn"))


def test_spawn_names_what_to_do_about_a_generator_object():
    from flowdsl import GraphError, Source

    with pytest.raises(GraphError, match="pass the generator function"):
        (Source(x for x in range(3)) >> inc).collect(executor=ProcessExecutor("spawn"))


@source
def endless():
    i = 0
    while True:
        yield i
        i += 1


def test_zip_with_an_endless_input_ends_with_the_short_one(executor):
    flow = [numbers(3), endless] >> add
    assert flow.collect(executor=executor) == [0, 2, 4]


def test_term_flag_stops_a_stage_fed_by_an_endless_source(executor, mp_context):
    flag = mp_context.Event()

    @transform
    def until_five(x):
        if x == 5:
            flag.set()
        return x

    stage = until_five.options()
    stage.set_term_flag(flag)
    got = (endless >> stage >> inc).collect(executor=executor)
    assert got[:6] == [1, 2, 3, 4, 5, 6]


def test_stop_flow_keeps_what_was_already_emitted(executor):
    @transform
    def upto(x):
        if x == 500:
            raise StopFlow
        return x

    assert (numbers(10**4) >> upto).collect(executor=executor) == list(range(500))


def test_source_returning_a_non_iterable_says_so(executor):
    @source
    def five():
        return 5

    with pytest.raises(StageError, match=r"must give an iterable.*returned 5 \(int\)"):
        (five >> inc).collect(executor=executor)


def test_report_lookup_lists_the_stage_names():
    report = ([numbers(2), numbers(2)] >> add).run(executor="serial")
    with pytest.raises(KeyError, match="numbers_0, numbers_1"):
        report["numbers"]


def test_messages_never_exceed_the_consumers_buffer(monkeypatch, tmp_path):
    """buffer bounds the items waiting in front of a stage, even behind big chunks."""
    from flowdsl._core import codec as _codec
    from flowdsl.executors import _channel

    log_path = tmp_path / "sizes"
    put = _channel.Channel.put

    def spy(self, data):  # inherited by the forked workers
        if data != _codec.EOS and self.name.startswith("small"):
            with open(log_path, "a") as f:
                f.write(f"{len(_codec.decode(data))}\n")
        put(self, data)

    monkeypatch.setattr(_channel.Channel, "put", spy)
    flow = numbers(1000) >> twice >> inc.options(buffer=4, name="small") >> ignore
    report = flow.run(executor=ProcessExecutor("fork"))
    sizes = [int(n) for n in log_path.read_text().split()]
    assert sum(sizes) == report["small"].items_in == 2000
    assert max(sizes) <= 4


NOTEBOOK_LIKE = """
import json
from flowdsl import ProcessExecutor, source, transform

@source
def nums(n):
    yield from range(n)

@transform
def encode(x):                      # uses a module imported in __main__ only
    return json.dumps({"x": x})

print((nums(3) >> encode).collect(executor=ProcessExecutor("METHOD")))
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_functions_of_an_unimportable_main_work_without_fork(method):
    """As in a notebook: __main__ cannot be imported by a fresh interpreter, so the
    stage's code must carry the globals it uses."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", NOTEBOOK_LIKE.replace("METHOD", method)],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([f'{{"x": {i}}}' for i in range(3)])


def test_collecting_a_flow_that_ends_in_sinks_warns_it_gives_nothing(caplog):
    assert (numbers(3) >> ignore).collect(executor="serial") == []
    assert "ends in sinks: no item reaches the caller" in caplog.text
    caplog.clear()
    assert (numbers(3) >> inc).collect(executor="serial") == [1, 2, 3]
    assert "ends in sinks" not in caplog.text


# -- odd items and odd exceptions: one rule on every executor ------------------------------
def test_an_item_whose_repr_raises_is_shown_as_such(executor):
    with pytest.raises(StageError) as info:
        (listed([BadRepr()]) >> always_fails).collect(executor=executor, timeout=20)
    assert info.value.item == "<unrepresentable BadRepr: RuntimeError: no repr>"


def test_an_item_whose_repr_spans_lines_is_shown_on_the_errors_first_line(executor):
    """A numpy array prints over several lines; the error's first line, which says
    where it failed and why, must stay one line."""
    import numpy as np

    with pytest.raises(StageError) as info:
        (listed([np.arange(12.0).reshape(3, 4)]) >> always_fails).collect(
            executor=executor, timeout=20
        )
    assert info.value.item == (
        "array([[ 0.,  1.,  2.,  3.], [ 4.,  5.,  6.,  7.], [ 8.,  9., 10., 11.]])"
    )
    first = str(info.value).splitlines()[0]
    assert first.startswith("stage 'always_fails' (worker 0) on item array([[ 0.")
    assert first.endswith("failed: ValueError: boom")


def test_an_exception_whose_str_raises_is_reported_like_any_other(executor):
    with pytest.raises(StageError) as info:
        (numbers(3) >> raises_bad_str).collect(executor=executor, timeout=20)
    assert info.value.stage == "raises_bad_str" and info.value.item == "0"
    assert "BadStr: <unprintable BadStr: RuntimeError: no str>" in str(info.value)
    assert isinstance(info.value.__cause__, BadStr)


def test_system_exit_raised_by_a_stage_is_that_stages_error(executor):
    with pytest.raises(StageError, match="SystemExit: 3") as info:
        (numbers(3) >> exits).collect(executor=executor, timeout=20)
    assert info.value.stage == "exits"
    assert isinstance(info.value.__cause__, SystemExit)


def test_keyboard_interrupt_raised_by_a_stage_ends_the_run_as_ctrl_c_does(executor):
    with pytest.raises(KeyboardInterrupt):
        (numbers(3) >> interrupts).collect(executor=executor, timeout=20)


def test_an_item_too_deep_to_show_does_not_break_the_error_path(executor):
    with pytest.raises(StageError) as info:
        (deep_item() >> always_fails).collect(executor=executor, timeout=20)
    assert info.value.item.startswith("<unrepresentable list: RecursionError")


@pytest.mark.parametrize("shared_memory", [True, False], ids=["shm", "pipe-only"])
def test_items_only_dill_can_serialise_cross_every_hop(shared_memory):
    """A lambda and a local class's object as items, from worker to worker and to
    the driver: the standard pickle cannot, the codec falls back to dill."""
    flow = numbers(5) >> closure_of >> open_closure
    got = flow.collect(executor=ProcessExecutor(shared_memory=shared_memory), timeout=20)
    assert [(f(), local.value) for f, local in got] == [(i, i) for i in range(5)]


@sink(buffer=16)
def slow_sink(x):
    time.sleep(0.0005)  # work that takes time, not synchronisation


def test_a_slow_sink_holds_a_fast_source_back():
    """Backpressure as a bound: the items a source has made and its sink has not
    yet taken stay within the buffers and batches between them, however fast the
    source (without it, the source would be thousands of items ahead)."""
    ahead = []
    with execute(
        numbers(4000) >> slow_sink, executor="process", timeout=30, want_results=False
    ) as run:
        done = threading.Event()

        def watch():
            while not done.wait(0.02):  # samples, not synchronisation
                stats = run.stats()
                ahead.append(stats["numbers"].items_out - stats["slow_sink"].items_in)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            for _ in run:
                pass
        finally:
            done.set()
            watcher.join(timeout=5)
    assert len(ahead) > 10  # the run lasted long enough to be watched
    # a source chunk (MAX_BATCH) + the channel (16) + the sink's batch (16), and
    # the figures the sink publishes every 50 ms (about a hundred of its items,
    # more on a busy machine); without backpressure, nearly all 4000
    assert max(ahead) <= MAX_BATCH + 16 + 16 + 250


# -- an upstream named twice counts once per mention -----------------------------------------
def _named_twice():
    p = listed([1, 2, 3]) >> inc
    return {
        "merge(p, p)": (merge(p, p), [2, 2, 3, 3, 4, 4]),
        "merge(merge(p, p), p)": (merge(merge(p, p), p), [2, 2, 2, 3, 3, 3, 4, 4, 4]),
        "merge(p, p) >> inc": (merge(p, p) >> inc, [3, 3, 4, 4, 5, 5]),
        "merge(q, q) of a source": (merge(listed([1, 2]), listed([1, 2])), [1, 1, 2, 2]),
        "[p, p] >> add": ([p, p] >> add, [4, 6, 8]),
    }


@pytest.mark.parametrize("case", sorted(_named_twice()))
def test_an_upstream_named_twice_counts_once_per_mention(executor, case):
    flow, want = _named_twice()[case]
    assert sorted(flow.collect(executor=executor, timeout=20)) == want
