"""numpy scalars between workers: a batch of one scalar type travels as one array
and arrives as the same scalars (type and bits), through every kind of message."""

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import numbers
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import from_dtype

from flowdsl import transform
from flowdsl._core import codec as _codec
from flowdsl._core import shm as _shm

KINDS = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
]


def scalars(kind, max_size=40):
    return st.lists(from_dtype(np.dtype(kind)).map(kind), max_size=max_size)


def assert_same(got, sent):
    """A list of the same length, same type item by item, same bits (NaN
    payloads, -0.0)."""
    assert type(got) is list
    assert [type(x) for x in got] == [type(x) for x in sent]
    for g, s in zip(got, sent, strict=True):
        if isinstance(s, np.generic):
            assert g.tobytes() == s.tobytes()
        else:
            assert g == s


@settings(max_examples=60)
@given(data=st.data(), kind=st.sampled_from(KINDS))
def test_a_batch_of_one_scalar_type_round_trips_exactly(data, kind):
    batch = data.draw(scalars(kind))
    assert_same(_codec.decode(_codec.encode(batch)), batch)
    message = _codec.encode_beside(batch)
    assert_same(_codec.decode(message), batch)


@settings(max_examples=60)
@given(
    items=st.lists(
        st.one_of(
            st.floats(allow_nan=False).map(np.float64),
            st.floats(allow_nan=False),
            st.integers(-(2**31), 2**31 - 1).map(np.int32),
            st.integers(-(2**63), 2**63 - 1).map(np.int64),
            st.none(),
        ),
        max_size=20,
    )
)
def test_mixed_batches_keep_every_item_as_it_was(items):
    assert_same(_codec.decode(_codec.encode(items)), items)


class Celsius(np.float64):
    """A subclass (which numpy's own pickling turns into its base type)."""


def test_other_scalars_arrive_as_the_standard_pickle_gives_them():
    for batch in (
        [Celsius(1.5), Celsius(2.5)],
        [np.longdouble(1) / 3, np.longdouble(2) / 3],
        [np.float64(1.0), Celsius(2.0)],
        [np.datetime64("2026-12-07"), np.datetime64("2026-12-08")],
    ):
        assert_same(_codec.decode(_codec.encode(batch)), pickle.loads(pickle.dumps(batch)))


def test_scalars_travel_in_about_their_own_size():
    """Packed, 1,000 float64 take about 8 kB; one pickle reduction per scalar
    (its dtype and bytes) takes more than twice that."""
    batch = list(np.arange(1000, dtype=np.float64))
    assert len(_codec.encode(batch)) < 8000 + 400


@pytest.mark.skipif(not _shm.available(), reason="no usable /dev/shm")
def test_a_batch_too_big_for_the_message_goes_through_shared_memory():
    batch = list(np.arange(2 * _shm.THRESHOLD // 8, dtype=np.float64))
    producer, consumer = _codec.Codec(_shm.new_prefix()), _codec.Codec(None)
    try:
        (data,), _ = producer.encode(batch)
        assert data[:1] == b"S"
        assert_same(consumer.decode(data), batch)
        message = _codec.encode_beside(batch)  # as Ray's object store holds it
        assert isinstance(message, tuple)
        assert_same(_codec.decode(message), batch)
    finally:
        producer.close()
        consumer.close()


@pytest.mark.timeout(60)
def test_a_batched_stage_spreads_scalars_that_reach_the_next_stage_intact():
    @transform(batch=64)
    def halves(xs):
        return np.asarray(xs, dtype=np.float32) / 2

    @transform
    def kind(x):
        return type(x).__name__, float(x)

    flow = numbers(1000) >> halves >> kind
    got = flow.collect(executor="process")
    assert got == flow.collect(executor="serial")
    assert got == [("float32", i / 2) for i in range(1000)]


@pytest.mark.timeout(60)
def test_scalars_spread_by_one_batched_stage_fill_the_lists_of_the_next():
    @transform(batch=64)
    def doubled(xs):
        return np.asarray(xs, dtype=np.int64) * 2

    @transform(batch=10)
    def total(xs):
        return [(len(xs), int(sum(xs)), {type(x).__name__ for x in xs})]

    flow = numbers(1000) >> doubled >> total
    got = flow.collect(executor="process")
    assert got == flow.collect(executor="serial")
    assert sum(n for n, _, _ in got) == 1000
    assert sum(s for _, s, _ in got) == 2 * sum(range(1000))
    assert all(kinds == {"int64"} for _, _, kinds in got)


@pytest.mark.timeout(60)
def test_batches_without_numpy_objects_leave_a_lazily_imported_numpy_unloaded():
    script = textwrap.dedent(
        """
        import importlib.util, sys
        spec = importlib.util.find_spec("numpy")
        spec.loader = importlib.util.LazyLoader(spec.loader)
        numpy = importlib.util.module_from_spec(spec)
        sys.modules["numpy"] = numpy
        spec.loader.exec_module(numpy)  # lazy: runs on first attribute access
        from flowdsl._core import codec
        assert codec.decode(codec.encode(["a", 1.5, None])) == ["a", 1.5, None]
        assert codec.decode(codec.encode([2, 3])) == [2, 3]
        print(any(name.startswith("numpy.") for name in sys.modules))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
