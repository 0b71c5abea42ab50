"""Per-item timeouts, worker restarts and bounded worker lifespans.

A worker that hangs on an item, or dies on it, is replaced; the item it was
running fails through the stage's error policy, and every other item is
processed exactly once.
"""

import os
import signal
import time

import pytest
from helpers import inits, items, letters_to, marked, numbers

from flowdsl import (
    GraphError,
    StageError,
    StageTimeout,
    WorkerDied,
    loop,
    sink,
    source,
    transform,
)
from flowdsl.executors import execute

pytestmark = pytest.mark.timeout(60)


# -- timeouts ------------------------------------------------------------------------


def test_an_item_that_runs_too_long_fails_with_stage_timeout_promptly(tmp_path):
    stage = marked(tmp_path, hang={5}, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(StageTimeout) as info:
        (numbers(10) >> stage).collect()
    assert time.monotonic() - start < 0.5 + 1.5
    error = info.value
    assert isinstance(error, StageError) and isinstance(error, TimeoutError)
    assert (error.stage, error.item) == ("Marked", "5")
    assert "longer than timeout=0.5 s" in str(error)


def test_a_timed_out_item_is_skipped_and_its_worker_replaced(tmp_path):
    stage = marked(tmp_path, hang={5}, timeout=0.5, on_error="skip")
    flow = numbers(12) >> stage
    report = flow.run()
    assert items(tmp_path) == [x for x in range(12) if x != 5]
    assert len(inits(tmp_path)) == 2  # a fresh worker after the timeout, local_init again
    stats = report["Marked"]
    assert (stats.timeouts, stats.restarts, stats.errors) == (1, 0, 1)
    assert stats.items_in == 12 and stats.items_out == 11
    assert stats.busy_seconds >= 0.5  # the call cut short was busy until then


def test_a_timed_out_item_goes_to_the_dead_letters(tmp_path):
    letters = tmp_path / "letters"
    stage = marked(tmp_path, hang={5}, timeout=0.5, on_error=letters_to(str(letters)))
    (numbers(8) >> stage >> sink(lambda x: None)).run()
    assert items(tmp_path) == [0, 1, 2, 3, 4, 6, 7]
    assert letters.read_text().splitlines() == ["5 CallTimedOut"]


def test_a_timed_out_item_is_retried(tmp_path):
    stage = marked(tmp_path, hang={5}, once=True, timeout=0.5, retries=1)
    assert (numbers(8) >> stage).collect() == list(range(8))  # nothing lost, in order


def test_serial_runs_fail_an_item_that_took_too_long(tmp_path):
    stage = marked(tmp_path, hang={2}, seconds=0.3, timeout=0.1, on_error="skip")
    report = (numbers(4) >> stage).run(executor="serial")
    assert report["Marked"].errors == 1 and report["Marked"].timeouts == 1


# -- restarts ------------------------------------------------------------------------


@pytest.mark.parametrize("workers, ordered", [(1, True), (2, True), (2, False)])
def test_a_worker_that_dies_is_replaced_and_only_its_item_fails(tmp_path, workers, ordered):
    stage = marked(
        tmp_path, die={5, 13}, restarts=3, on_error="skip", workers=workers, ordered=ordered
    )
    got = (numbers(20) >> stage).collect()
    expected = [x for x in range(20) if x not in (5, 13)]
    assert got == expected if ordered else sorted(got) == expected
    assert sorted(items(tmp_path)) == expected  # each processed exactly once
    assert len(inits(tmp_path)) == workers + 2  # the two replacements ran local_init


def test_restarts_are_counted_and_the_item_reaches_the_dead_letters(tmp_path):
    letters = tmp_path / "letters"
    stage = marked(tmp_path, die={3}, restarts=1, on_error=letters_to(str(letters)))
    report = (numbers(6) >> stage >> sink(lambda x: None)).run(executor="process")
    assert report["Marked"].restarts == 1 and report["Marked"].errors == 1
    assert letters.read_text().splitlines() == ["3 ItemKilledWorker"]
    assert len(inits(tmp_path)) == 2


def test_a_worker_killed_from_outside_is_replaced(tmp_path, mp_context):
    inside = mp_context.Event()

    @transform(restarts=1, on_error="skip")
    def slow(x):
        if x == 4:
            with open(tmp_path / "pid", "w") as f:
                f.write(str(os.getpid()))
            inside.set()
            time.sleep(30)
        return x

    got = []
    for x in (numbers(10) >> slow).iterate():
        got.append(x)
        if x == 3:
            assert inside.wait(10)
            os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)
    assert got == [0, 1, 2, 3, 5, 6, 7, 8, 9]


def test_when_restarts_run_out_the_run_fails_with_worker_died(tmp_path):
    stage = marked(tmp_path, die={1, 2, 3}, restarts=2, on_error="skip")
    with pytest.raises(WorkerDied, match="'Marked'") as info:
        (numbers(10) >> stage).collect()
    error = info.value
    assert (error.item, error.restarts) == ("3", 2)  # the third death, on item 3
    assert "on item 3" in str(error) and "its 2 restarts were spent" in str(error)


def test_items_of_a_loop_survive_a_restart(tmp_path):
    body = marked(tmp_path, die={7}, once=True, restarts=1, retries=1)
    flow = numbers(5) >> loop(transform(lambda x: x + 3) >> body, until=lambda x: x >= 9)
    assert sorted(flow.collect()) == sorted([9, 10, 11, 9, 10])


# -- bounded lifespans -------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_is_replaced_after_max_items_without_loss_or_reordering(tmp_path, workers):
    stage = marked(tmp_path, max_items_per_worker=10, workers=workers)
    with execute(numbers(100) >> stage) as run:
        assert list(run) == list(range(100))  # nothing lost, nothing out of order
    assert run.report["Marked"].replaced >= 100 // 10 - workers
    pids = {line.split()[1] for line in (tmp_path / "items").read_text().splitlines()}
    assert len(pids) >= 10


def test_serial_runs_replace_the_stage_after_max_items(tmp_path):
    (numbers(25) >> marked(tmp_path, max_items_per_worker=10)).run(executor="serial")
    assert len(inits(tmp_path)) == 3


# -- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": "1"}, "timeout must be a number of seconds > 0"),
        ({"restarts": -1}, "restarts must be an integer >= 0"),
        ({"restarts": 1.5}, "restarts must be an integer >= 0"),
        ({"max_items_per_worker": 0}, "max_items_per_worker must be an integer >= 1"),
        ({"restarts": 1, "concurrency": 4}, "calls in flight"),
    ],
)
def test_resilience_options_are_checked_when_the_stage_is_made(options, message):
    with pytest.raises(GraphError, match=message):
        transform(lambda x: x).options(**options)


def test_a_source_cannot_be_restarted():
    @source
    def gen():
        yield 1

    with pytest.raises(GraphError, match=r"source 'gen'.*cannot be resumed"):
        gen.options(restarts=1)


# -- hygiene -------------------------------------------------------------------------


def test_runs_with_restarts_and_timeouts_leave_nothing_behind(tmp_path):
    def open_fds():
        return len(os.listdir("/proc/self/fd"))

    def journals():
        return (
            [n for n in os.listdir("/dev/shm") if n.startswith("flowdsl_journal_")]
            if os.path.isdir("/dev/shm")
            else []
        )

    (numbers(3) >> marked(tmp_path, restarts=1)).run()  # warm: imports, caches
    before = open_fds()
    for i in range(RUNS):
        root = tmp_path / str(i)
        root.mkdir()
        stage = marked(root, die={2}, hang={4}, timeout=0.3, restarts=1, on_error="skip")
        assert (numbers(6) >> stage).collect() == [0, 1, 3, 5]
    assert journals() == []
    assert open_fds() <= before + 2  # (the interpreter may cache a few)


RUNS = 100 if os.environ.get("FLOWDSL_SOAK") else 10
