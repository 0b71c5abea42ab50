"""The minipipe-style explicit API: minipipe 0.1.9's behaviour, minus its defects."""

import logging
import os
import subprocess
import sys
import textwrap

import pytest

import flowdsl as mp
from flowdsl import GraphError, StageError


class Collect:
    """A sink functor that writes what it saw to a file at local_term."""

    def __init__(self, path):
        self.path = path

    def local_init(self):
        self.seen = []

    def run(self, *xs):
        self.seen.append(xs if len(xs) > 1 else xs[0])

    def local_term(self):
        with open(self.path, "a") as f:
            f.write(repr(self.seen) + "\n")


def seen(path):
    with open(path) as f:
        return [x for line in f for x in eval(line)]


def count_to(n):
    yield from range(n)


def square(x):
    return x * x


@pytest.mark.fork_only("a generator object cannot be sent to a fresh interpreter")
def test_pipeline_runs_in_order(tmp_path):
    out = tmp_path / "out"
    pline = mp.PipeLine()
    pline.add(mp.Source(count_to(5), name="load"))  # a generator object, as in minipipe
    pline.add(mp.Transform(square, name="trans"))
    pline.add(mp.Sink(Collect(str(out)), name="save"))
    pline.build()
    pline.run()
    pline.close()
    assert seen(out) == [0, 1, 4, 9, 16]


def test_pipeline_n_processes_compete_for_one_stream(tmp_path):
    out = tmp_path / "out"
    pline = mp.PipeLine()
    pline.add(mp.Source(iter(range(50)), name="load"))
    pline.add(mp.Transform(square, name="trans"), n_processes=3, buffer_size=5)
    pline.add(mp.Sink(Collect(str(out)), name="save"))
    pline.build()
    pline.run()
    pline.close()
    assert sorted(seen(out)) == [x * x for x in range(50)]
    assert pline.segments[1].workers == 3


def test_pipeline_rejects_parallel_source():
    with pytest.raises(GraphError, match="Source"):
        mp.PipeLine().add(mp.Source(iter(range(3))), n_processes=2)


@pytest.mark.parametrize("bad", [0, True, 2.5])
def test_a_stream_buffer_must_be_a_whole_number_of_items(bad):
    with pytest.raises(GraphError, match=f"buffer_size must be an integer >= 1, got {bad!r}"):
        mp.Stream(buffer_size=bad)


def test_upstreams_zip_and_downstreams_split_by_position(tmp_path):
    a, b, evens, odds = mp.Stream(), mp.Stream(), mp.Stream(), mp.Stream()
    lo, hi = tmp_path / "lo", tmp_path / "hi"

    def split(x, y):
        s = x + y
        return (s, None) if s % 2 == 0 else (None, s)

    pipes = [
        mp.Source(iter(range(6)), "a", downstreams=[a]),
        mp.Source(iter(range(6)), "b", downstreams=[b]),
        mp.Transform(split, "split", upstreams=[a, b], downstreams=[evens, odds]),
        mp.Sink(Collect(str(lo)), "evens", upstreams=[evens]),
        mp.Sink(Collect(str(hi)), "odds", upstreams=[odds]),
    ]
    psys = mp.PipeSystem(pipes)
    psys.build()
    psys.run()
    psys.close()
    assert seen(lo) == [0, 2, 4, 6, 8, 10]
    assert not os.path.exists(hi) or seen(hi) == []


def test_producers_sharing_a_stream_merge(tmp_path):
    s, out = mp.Stream(buffer_size=4), tmp_path / "out"
    pipes = [
        mp.Source(iter(range(5)), "one", downstreams=[s]),
        mp.Source(iter(range(7)), "two", downstreams=[s]),
        mp.Sink(Collect(str(out)), "all", upstreams=[s]),
    ]
    psys = mp.PipeSystem(pipes)
    psys.build()
    psys.run()
    psys.close()
    assert sorted(seen(out)) == sorted(list(range(5)) + list(range(7)))


def test_distinct_pipes_sharing_an_upstream_compete(tmp_path):
    s = mp.Stream()
    outs = [tmp_path / "a", tmp_path / "b"]
    pipes = [mp.Source(iter(range(40)), "src", downstreams=[s])]
    pipes += [mp.Sink(Collect(str(o)), "sink", upstreams=[s]) for o in outs]
    psys = mp.PipeSystem(pipes)
    psys.build()
    assert [p.name for p in pipes[1:]] == ["sink_0", "sink_1"]  # de-duplicated
    psys.run()
    psys.close()
    got = [x for o in outs if o.exists() for x in seen(o)]
    assert sorted(got) == list(range(40))  # each item to exactly one consumer


def test_none_means_no_output(tmp_path):
    out = tmp_path / "out"
    pline = mp.PipeLine()
    pline.add(mp.Source(iter([1, None, 2]), "src"))
    pline.add(mp.Transform(lambda x: None if x == 2 else x, "drop_two"))
    pline.add(mp.Sink(Collect(str(out)), "save"))
    pline.build()
    pline.run()
    pline.close()
    assert seen(out) == [1]


def batcher(batch_size=2):
    """A Regulator coroutine that buffers items and flushes what is left at the end."""
    batch = []
    try:
        while True:
            x = yield
            batch.append(x)
            if len(batch) == batch_size:
                yield batch
                batch = []
    except mp.Sentinel:
        if batch:
            yield batch


def test_regulator_batches_and_flushes_at_end_of_stream(tmp_path):
    out = tmp_path / "out"
    pline = mp.PipeLine()
    pline.add(mp.Source(iter(range(5)), "src"))
    pline.add(mp.Regulator(batcher, "batch", init_kwargs={"batch_size": 2}))
    pline.add(mp.Sink(Collect(str(out)), "save"))
    pline.build()
    pline.run()
    pline.close()
    assert seen(out) == [[0, 1], [2, 3], [4]]


def split_in_two(batch_size=2):
    """minipipe's documented Regulator: break one item into batches of 2."""
    x = yield
    for i in range(len(x) // batch_size):
        yield x[i * batch_size : (i + 1) * batch_size]


def test_regulator_splitting_coroutine_is_restarted(tmp_path):
    out = tmp_path / "out"
    pline = mp.PipeLine()
    pline.add(mp.Source(iter([[1, 2, 3, 4], [5, 6]]), "src"))
    pline.add(mp.Regulator(split_in_two, "split"))
    pline.add(mp.Sink(Collect(str(out)), "save"))
    pline.build()
    pline.run()
    pline.close()
    assert seen(out) == [[1, 2], [3, 4], [5, 6]]


def test_errors_raise_from_close():
    def boom(x):
        raise ZeroDivisionError("boom")

    pline = mp.PipeLine()
    pline.add(mp.Source(iter(range(3)), "src"))
    pline.add(mp.Sink(boom, "boom"))
    pline.build()
    pline.run()
    with pytest.raises(StageError) as info:
        pline.close()
    assert info.value.stage == "boom" and isinstance(info.value.__cause__, ZeroDivisionError)


def test_ignore_exceptions_is_subclass_aware(tmp_path):
    out = tmp_path / "out"

    def picky(x):
        if x == 1:
            raise KeyError(x)  # a LookupError
        return x

    pline = mp.PipeLine()
    pline.add(mp.Source(iter(range(3)), "src"))
    pline.add(mp.Transform(picky, "picky"))
    pline.add(mp.Sink(Collect(str(out)), "save"))
    pline.build(ignore_exceptions=[LookupError])
    pline.run()
    pline.close()
    assert seen(out) == [0, 2]


def test_term_flag_stop_still_ends_downstream_stages(tmp_path, mp_context):
    out = tmp_path / "out"
    flag = mp_context.Event()

    def until_three(x):
        if x == 3:
            flag.set()
        return x

    def endless():
        i = 0
        while True:
            yield i
            i += 1

    stop = mp.Transform(until_three, "stop")
    stop.set_term_flag(flag)
    pline = mp.PipeLine()
    pline.add(mp.Source(endless, "src"))
    pline.add(stop)
    pline.add(mp.Sink(Collect(str(out)), "save"))
    pline.build()
    pline.run()
    pline.close()
    got = seen(out)
    assert got[:4] == [0, 1, 2, 3]


def test_source_yielding_sentinel_ends_its_stream(tmp_path):
    out = tmp_path / "out"
    pline = mp.PipeLine()
    pline.add(mp.Source(iter([1, 2, mp.Sentinel, 3]), "src"))
    pline.add(mp.Sink(Collect(str(out)), "save"))
    pline.build()
    pline.run()
    pline.close()
    assert seen(out) == [1, 2]


def test_reset_reruns_a_bound_source(tmp_path):
    out = tmp_path / "out"
    pline = mp.PipeLine()
    pline.add(mp.Source(lambda: count_to(3), "src"))
    pline.add(mp.Sink(Collect(str(out)), "save"))
    pline.build()
    pline.run()
    pline.close()
    pline.reset()
    pline.run()
    pline.close()
    assert seen(out) == [0, 1, 2, 0, 1, 2]


def test_diagram_needs_build_and_draws_streams():
    s = mp.Stream(name="numbers")
    pipes = [
        mp.Source(iter(range(2)), "src", downstreams=[s]),
        mp.Sink(print, "show", upstreams=[s]),
    ]
    psys = mp.PipeSystem(pipes)
    with pytest.raises(GraphError, match="build"):
        psys.diagram()
    psys.build()
    assert "numbers" in psys.diagram(draw_streams=True).source
    assert "numbers" not in psys.diagram().source


def test_build_shows_records_on_stderr_when_logging_is_unconfigured():
    code = textwrap.dedent("""
        import flowdsl as mp
        pline = mp.PipeLine()
        pline.add(mp.Source(iter([1, 2]), name='load'))
        pline.add(mp.Sink(lambda x: None, name='save'))
        pline.build()
        pline.run()
        pline.close()
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "INFO - load - End of stream" in result.stderr
    assert "INFO - save - Local termination" in result.stderr


def test_build_leaves_configured_logging_alone(caplog):
    caplog.set_level(logging.WARNING)
    before = list(logging.getLogger("flowdsl").handlers)
    mp.PipeLine().add(mp.Source(iter([1]), "a")).add(mp.Sink(print, "b")).build()
    assert logging.getLogger("flowdsl").handlers == before


def test_source_with_several_downstreams_splits_by_position(tmp_path):
    a, b = mp.Stream(), mp.Stream()
    out_a, out_b = tmp_path / "a", tmp_path / "b"

    def pairs():
        for i in range(4):
            yield i, (None if i % 2 else -i)

    pipes = [
        mp.Source(pairs, "src", downstreams=[a, b]),
        mp.Sink(Collect(str(out_a)), "a", upstreams=[a]),
        mp.Sink(Collect(str(out_b)), "b", upstreams=[b]),
    ]
    psys = mp.PipeSystem(pipes)
    psys.build()
    psys.run()
    psys.close()
    assert seen(out_a) == [0, 1, 2, 3]
    assert seen(out_b) == [0, -2]


def test_close_twice_is_harmless_and_rerun_needs_reset(tmp_path):
    pline = mp.PipeLine()
    pline.add(mp.Source(lambda: count_to(2), "src"))
    pline.add(mp.Sink(Collect(str(tmp_path / "out")), "save"))
    pline.build()
    pline.run()
    pline.close()
    pline.close()
    with pytest.raises(RuntimeError, match="reset"):
        pline.run()


def test_a_cycle_with_nothing_in_it_is_rejected_at_build():
    s = mp.Stream()
    lonely = mp.Transform(square, "lonely", upstreams=[s], downstreams=[s])
    with pytest.raises(GraphError, match="'lonely' can never receive an item"):
        mp.PipeSystem([lonely]).build()


def test_build_returns_none_as_minipipe_does():
    """A notebook cell ending in ``pline.build()`` shows nothing, as with minipipe."""
    pline = mp.PipeLine()
    pline.add(mp.Source(lambda: iter([1])))
    pline.add(mp.Sink(lambda x: None))
    assert pline.build() is None
    assert pline.built
