"""Big buffers through shared memory: what arrives, and that nothing is left behind.

Every run here checks ``/dev/shm`` for the segments of this process's runs
(``flowdsl-<pid>-…``) afterwards: success, errors, killed workers, timeouts and
early exits all leave none.
"""

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import multiprocess
import numpy as np
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdsl import (
    FlowTimeout,
    ProcessExecutor,
    StageError,
    StopFlow,
    WorkerDied,
    loop,
    sink,
    source,
    transform,
)
from flowdsl._core import codec as _codec
from flowdsl._core import shm as _shm
from flowdsl.executors import _channel, _worker
from flowdsl.executors import execute as _execute
from flowdsl.testing import inject_fault

T = _shm.THRESHOLD
METHODS = ["fork", "spawn"]

pytestmark = pytest.mark.skipif(not _shm.available(), reason="no usable /dev/shm")


def leftovers():
    prefix = f"flowdsl-{os.getpid()}-"
    return [n for n in os.listdir(_shm.SHM_DIR) if n.startswith(prefix)]


@pytest.fixture(autouse=True)
def no_leftover_segments():
    yield
    assert leftovers() == []


@contextlib.contextmanager
def codecs():
    """A producer's codec and a consumer's, as two workers have them.  A test that
    fails midway leaves segments: they are swept so later tests start clean."""
    prefix = _shm.new_prefix()
    producer, consumer = _codec.Codec(prefix), _codec.Codec(None)
    ok = False
    try:
        yield producer, consumer
        ok = True
    finally:
        producer.close()
        consumer.close()
        if not ok:
            _shm.sweep(prefix)


def mapped_segments():
    """How many of this process's mappings are flowdsl segments."""
    with open("/proc/self/maps") as maps:
        return sum(f"{_shm.SHM_DIR}/flowdsl-" in line for line in maps)


# -- stages (module level: spawn imports them) ------------------------------------------
@source
def arrays(n, size=2 * T, start=0):
    for i in range(start, start + n):
        yield np.full(size // 8, i, dtype=np.float64)


@transform
def identity(x):
    return x


@transform
def in_shared_memory(x):
    """Whether the item arrived in a segment (this worker maps one while it holds it)."""
    return mapped_segments() > 0


@transform
def first_value(x):
    return float(x[0])


@transform
def describe(x):
    return (float(x[0]), x.flags.writeable)


@transform
def negate_in_place(x):
    x *= -1
    return float(x[0])


@transform
def fail_at(x, at=3):
    if x[0] == at:
        raise ValueError(f"bad array {x[0]}")
    return x


@sink
def check_size(x, size=2 * T):
    assert x.nbytes == size


@sink
def stop_at(x, at=3):
    if x[0] == at:
        raise StopFlow


@transform
def hang_at(x, at=2):
    if x[0] == at:
        time.sleep(3600)
    return x


# -- what arrives --------------------------------------------------------------------------
def sizes():
    near = st.integers(-130, 130).map(lambda d: T + d)
    return st.one_of(st.integers(0, 300), near, st.sampled_from([2 * T, 5 * T + 3, 16 * T]))


def arrays_of(size):
    dtype = [np.uint8, np.int32, np.float64][size % 3]
    n = size // np.dtype(dtype).itemsize
    return np.arange(n, dtype=dtype)


KINDS = ["int", "str", "array", "bytes", "bytearray", "view", "array-view", "tuple"]


def build(kind, size):
    """A payload of ``kind`` about ``size`` bytes (built where it is sent: memoryviews
    cannot be a stage's arguments under spawn)."""
    if kind == "int":
        return size
    if kind == "str":
        return "s" * (size % 7)
    if kind == "array":
        return arrays_of(size)
    if kind == "bytes":
        return bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    if kind == "bytearray":
        return bytearray(b"y" * size)
    if kind == "view":
        return memoryview(b"z" * size)
    if kind == "array-view":
        return memoryview(arrays_of(size))
    return (size, arrays_of(size), bytes(size))


def payloads():
    """Big and small buffers of every kind, mixed with small plain items, as
    (kind, size) pairs."""
    return st.tuples(st.sampled_from(KINDS), sizes())


@source
def built(specs):
    for kind, size in specs:
        yield build(kind, size)


def assert_all_same(got, sent):
    assert len(got) == len(sent)
    for g, s in zip(got, sent, strict=True):
        assert_same(g, s)


def assert_same(got, sent):
    assert type(got) is type(sent)
    if isinstance(sent, np.ndarray):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        assert np.array_equal(got, sent)
        assert got.flags.writeable == sent.flags.writeable
    elif isinstance(sent, memoryview):
        assert (got.format, got.shape, got.readonly) == (sent.format, sent.shape, sent.readonly)
        assert got.tobytes() == sent.tobytes()
    elif isinstance(sent, tuple):
        assert len(got) == len(sent)
        for g, s in zip(got, sent, strict=True):
            assert_same(g, s)
    else:
        assert got == sent


@settings(max_examples=200)
@given(specs=st.lists(payloads(), max_size=6), copies=st.integers(1, 2))
def test_codec_round_trips_buffers_of_every_size(specs, copies):
    batch = [build(*spec) for spec in specs]
    with codecs() as (producer, consumer):
        messages, nbytes = producer.encode(batch, copies)
        assert len(messages) == copies
        for data in messages:
            assert_all_same(consumer.decode(data), batch)
            if any(_is_big(x) for x in batch):
                assert data[:1] == b"S"
                assert len(data) < nbytes - T + 200  # big buffers are not in the message


def _is_big(x):
    if isinstance(x, tuple):
        return any(map(_is_big, x))
    return (
        isinstance(x, np.ndarray | bytes | bytearray | memoryview)
        and len(memoryview(x).cast("B")) >= T
    )


@settings(max_examples=200)
@given(specs=st.lists(payloads(), max_size=6))
def test_big_buffers_can_travel_beside_the_message(specs):
    """For Ray: the message and its big buffers apart, the buffers as
    ``PickleBuffer`` objects that Ray's serialiser stores as they are; read back
    from read-only memory (an object store's), arrays are read-only views of it."""
    batch = [build(*spec) for spec in specs]
    message = _codec.encode_beside(batch, (3, 1))
    if not any(_is_big(x) for x in batch):
        assert isinstance(message, bytes) and message[:1] in b"PQD"
        assert_all_same(_codec.decode(message), batch)
        return
    data, buffers = message
    assert data[:1] == b"B" and all(isinstance(b, pickle.PickleBuffer) for b in buffers)
    beside = sum(b.raw().nbytes for b in buffers)
    overhead = 200 + 60 * len(batch)  # pickle opcodes, array headers
    assert beside >= T and len(data) < sum(map(_size, batch)) - beside + overhead
    stored = [memoryview(bytes(b.raw())) for b in buffers]  # read-only, as Ray's
    got = _codec.decode((data, stored))
    assert [plain(_unflag(g)) for g in got] == [plain(_unflag(x)) for x in batch]
    for g, x in zip(got, batch, strict=True):
        if (
            isinstance(x, np.ndarray)
            and x.nbytes >= T
            and (x.flags.c_contiguous or x.flags.f_contiguous)
        ):
            assert not g.flags.writeable and not g.flags.owndata
    pieces = _codec.split(message)
    assert [plain(_unflag(x)) for p in pieces for x in _codec.decode(p)] == [
        plain(_unflag(x)) for x in batch
    ]


def _size(x):
    if isinstance(x, tuple):
        return sum(map(_size, x))
    if isinstance(x, np.ndarray | bytes | bytearray | memoryview):
        return len(memoryview(x).cast("B")) if memoryview(x).c_contiguous else memoryview(x).nbytes
    return 0


def _unflag(x):
    """``x`` compared by value: arrays as (dtype, shape, bytes)."""
    if isinstance(x, np.ndarray):
        return (x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, tuple):
        return tuple(map(_unflag, x))
    return x


def test_a_message_beside_its_buffers_names_its_writer_when_unreadable():
    data, buffers = _codec.encode_beside([np.ones(T)], (2, 1))
    with pytest.raises(_codec.Undecodable) as info:
        _codec.decode((data[: _codec.HEAD + 1] + b"garbled", buffers))
    assert info.value.origin == (2, 1)


def test_small_batches_keep_the_plain_pickle_path():
    with codecs() as (producer, _):
        (data,), nbytes = producer.encode([1, "two", np.arange(10), b"x" * (T - 1)])
    assert data[:1] == b"P" and nbytes == len(data)


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.arange(3 * T, dtype=np.uint8)[::2],  # not contiguous: in the stream
        lambda: np.asfortranarray(np.arange(T, dtype=np.float64).reshape(8, -1)),
        lambda: np.frombuffer(b"r" * 2 * T, dtype=np.uint8),  # read-only
        lambda: memoryview(bytearray(b"w" * 4 * T)).cast("B", [4, T]),
        lambda: memoryview(np.arange(2 * T, dtype=np.uint8))[::2],  # not contiguous
        lambda: memoryview(np.arange(T, dtype=np.int64)).cast("B").cast("q"),
        lambda: [lambda: 1, np.ones(T)],  # dill, with the array out of the stream
    ],
    ids=["strided", "fortran", "readonly", "2d-view", "strided-view", "int64-view", "dill"],
)
def test_codec_keeps_layout_and_writability(make):
    sent = make()
    with codecs() as (producer, consumer):
        (data,), _ = producer.encode([sent])
        (got,) = consumer.decode(data)
        if isinstance(sent, list):
            assert got[0]() == 1 and np.array_equal(got[1], sent[1])
        elif isinstance(sent, memoryview):
            assert (got.format, got.shape, got.readonly) == (sent.format, sent.shape, sent.readonly)
            assert got.tobytes() == sent.tobytes()
        else:
            assert_same(got, sent)
            assert got.flags.c_contiguous or got.flags.f_contiguous == sent.flags.f_contiguous
        del got


@pytest.mark.parametrize(
    ("item", "shared"),
    [
        (b"b" * T, True),
        (("key", bytearray(T)), True),
        ({"image": b"i" * T, "size": T}, True),
        ([[b"deep" * T]], False),  # deeper than the search goes: in the message
        ({f"k{i}": b"many" * T for i in range(20)}, False),  # too many entries to search
        ([memoryview(b"deep" * T)], True),  # memoryviews are found wherever they are
    ],
)
def test_where_big_bytes_are_found(item, shared):
    with codecs() as (producer, consumer):
        (data,), _ = producer.encode([item])
        assert (data[:1] == b"S") == shared
        (got,) = consumer.decode(data)
        assert plain(got) == plain(item)
        del got


def plain(x):
    """``x`` with memoryviews as bytes (memoryviews compare by value only sometimes)."""
    if isinstance(x, memoryview):
        return x.tobytes()
    if isinstance(x, list | tuple):
        return type(x)(map(plain, x))
    return x


def test_a_segment_is_reused_once_its_objects_are_freed():
    with codecs() as (producer, consumer):
        for i in range(20):
            (data,), _ = producer.encode([np.full(T, i)])
            (got,) = consumer.decode(data)
            assert got[0] == i
            del got
            consumer.receiver.poll()
            assert consumer.receiver.held == 0
        assert len(producer.pool.segments) == 1
        assert consumer.receiver.mapped == 1  # mapped once, read again in place
        producer.close()
        assert leftovers() == []  # released and let go: nothing for a sweep to do


def test_a_segment_still_held_outlives_its_producer():
    with codecs() as (producer, consumer):
        (data,), _ = producer.encode([np.full(T, 7.0)])
        (got,) = consumer.decode(data)
        producer.close()  # the consumer still holds the segment: it stays
        assert len(leftovers()) == 1
        assert got[0] == 7.0
        del got
        consumer.receiver.poll()  # released: the consumer unlinks it
        assert leftovers() == []


def test_pools_stay_bounded_when_a_consumer_keeps_everything(monkeypatch):
    monkeypatch.setattr(_shm, "POOL_SEGMENTS", 3)
    monkeypatch.setattr(_shm, "MAPPED_SEGMENTS", 3)
    with codecs() as (producer, consumer):
        kept = []
        for i in range(10):
            (data,), _ = producer.encode([np.full(T, i)])
            kept += consumer.decode(data)
            assert len(producer.pool.segments) <= 3 and consumer.receiver.mapped <= 3
        assert len(leftovers()) == 10  # each still used by an array
        assert [x[0] for x in kept] == list(range(10))
        del kept
        consumer.receiver.poll()
        assert len(leftovers()) == 3  # the producer's pool; the rest unlinked on release


def test_a_full_dev_shm_sends_through_the_pipe(monkeypatch):
    created = []

    def create(self, size, real=_shm.SegmentPool._create):
        if created:  # the second segment: /dev/shm is full
            raise OSError(28, "No space left on device")
        created.append(real(self, size))
        return created[-1]

    monkeypatch.setattr(_shm.SegmentPool, "_create", create)
    with codecs() as (producer, consumer):
        (first, second), _ = producer.encode([np.full(T, 1.0)], copies=2)  # a broadcast
        assert first[:1] == second[:1] == b"P"
        assert created[0].map[_shm.HELD] == 0  # written, never sent: free again
        assert consumer.decode(second)[0][0] == 1.0


@sink
class Held:
    """Holds its first item until ``released`` is set."""

    def __init__(self, released):
        self.released = released

    def run(self, x):
        self.released.wait(30)


def test_a_queue_holds_big_items_to_its_bytes_not_its_buffer(monkeypatch):
    # items of 1 MB, one per message: the buffer (4096 items) would let four
    # messages wait; the bytes a queue may hold let one
    monkeypatch.setattr(_channel, "CHANNEL_BYTES", 3 << 19)
    released = multiprocess.get_context("fork").Event()
    flow = arrays(40, size=1 << 20) >> Held(released)
    with _execute(flow, executor=ProcessExecutor("fork"), timeout=30, want_results=False) as run:
        made = []  # the source's items made, sampled while the sink holds one
        end = time.monotonic() + 20
        while (not made or made[-1] < 3) and time.monotonic() < end:
            made.append(run.stats()["arrays"].items_out)
            time.sleep(0.002)
        for _ in range(50):  # the source is now held back: it stays there
            made.append(run.stats()["arrays"].items_out)
            time.sleep(0.002)
        fill = run.queue_fill()["Held"]
        released.set()
        for _ in run:
            pass
    # one in the sink's hands, one waiting, and one the source is putting (by
    # the buffer alone: four waiting, six made)
    assert max(made) == 3 and fill == 1.0
    assert run.report["Held"].items_in == 40


def test_without_dev_shm_everything_goes_through_the_pipe(monkeypatch):
    monkeypatch.setattr(_shm, "available", lambda: False)
    got = (arrays(3) >> in_shared_memory).collect(executor=ProcessExecutor("fork"))
    assert got == [False] * 3


# -- runs --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_arrays_arrive_equal_and_writable_through_shared_memory(method):
    ex = ProcessExecutor(method)
    assert (arrays(5) >> in_shared_memory).collect(executor=ex) == [True] * 5
    got = (arrays(20) >> identity >> describe).collect(executor=ex)
    assert got == [(float(i), True) for i in range(20)]


@settings(max_examples=10)
@given(specs=st.lists(payloads(), max_size=8))
def test_any_mix_of_items_round_trips_through_two_hops(specs):
    check_two_hops(specs, "fork")


def test_every_kind_of_item_round_trips_under_spawn():
    check_two_hops([(kind, size) for kind in KINDS for size in (10, T - 1, T, 3 * T)], "spawn")


def check_two_hops(specs, method):
    got = (built(specs) >> identity >> identity).collect(executor=ProcessExecutor(method))
    assert_all_same(got, [build(*spec) for spec in specs])


def test_results_stay_valid_after_the_run():
    got = (arrays(10) >> identity).collect(executor=ProcessExecutor("fork"))
    assert leftovers() == []  # the files are gone, the driver's mappings stay
    assert [float(x[0]) for x in got] == list(range(10))
    assert all(np.all(x == x[0]) for x in got)


def test_shared_memory_can_be_turned_off():
    ex = ProcessExecutor("fork", shared_memory=False)
    assert repr(ex) == "ProcessExecutor(start_method='fork', shared_memory=False)"
    assert (arrays(3) >> in_shared_memory).collect(executor=ex) == [False] * 3


def test_a_successful_run_cleans_up_without_the_sweep(monkeypatch):
    swept = []
    sweep = _shm.sweep
    monkeypatch.setattr(_shm, "sweep", lambda prefix: swept.append(sweep(prefix)))
    (arrays(30) >> identity >> identity.options(workers=2) >> check_size).run(
        executor=ProcessExecutor("fork")
    )
    assert swept == [0]


def test_each_branch_of_a_broadcast_gets_its_own_copy():
    ex = ProcessExecutor("fork")
    got = sorted((arrays(10, start=1) >> [negate_in_place, first_value]).collect(executor=ex))
    assert got == sorted([-float(i) for i in range(1, 11)] + [float(i) for i in range(1, 11)])


@transform
def bump(x):
    return x + 1


@transform
def pair_sum(a, b):
    return a + b


def reached_ten(x):
    return x[0] >= 10


def test_loops_and_zips_carry_arrays():
    ex = ProcessExecutor("fork")
    got = (arrays(5) >> loop(bump, until=reached_ten)).collect(executor=ex)
    assert [float(x[0]) for x in got] == [10.0] * 5
    got = ([arrays(5), arrays(5, start=1)] >> pair_sum >> first_value).collect(executor=ex)
    assert got == [2.0 * i + 1 for i in range(5)]


def test_messages_count_the_bytes_in_shared_memory(monkeypatch, tmp_path):
    """Big items make small batches even though their messages are small."""
    log_path = tmp_path / "batches"
    encode = _codec.Codec.encode

    def spy(self, batch, copies=1):  # inherited by the forked workers
        with open(log_path, "a") as f:
            f.write(f"{len(batch)}\n")
        return encode(self, batch, copies)

    monkeypatch.setattr(_codec.Codec, "encode", spy)
    size = 4 * T
    (arrays(200, size=size) >> identity >> check_size(size=size)).run(
        executor=ProcessExecutor("fork")
    )
    batches = [int(n) for n in log_path.read_text().split()]
    assert sum(batches) == 400
    assert max(batches) <= _worker.MESSAGE_BYTES // size


# -- failures ------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_a_stage_error_leaves_no_segment(method):
    with pytest.raises(StageError, match="bad array"):
        (arrays(50) >> identity >> fail_at(at=5) >> check_size).run(
            executor=ProcessExecutor(method)
        )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("stage", ["arrays", "identity", "check_size"])
def test_a_killed_worker_leaves_no_segment(method, stage):
    flow = inject_fault(arrays(50) >> identity >> check_size, stage, at=5, kind="kill")
    with pytest.raises(WorkerDied):
        flow.run(executor=ProcessExecutor(method))


@pytest.mark.parametrize("method", METHODS)
def test_a_timeout_leaves_no_segment(method):
    with pytest.raises(FlowTimeout):
        (arrays(50) >> hang_at >> check_size).run(executor=ProcessExecutor(method), timeout=2)


@pytest.mark.parametrize("method", METHODS)
def test_leaving_the_loop_early_leaves_no_segment(method):
    kept = []
    for x in (arrays(10**6) >> identity).iterate(executor=ProcessExecutor(method)):
        kept.append(x)
        if len(kept) == 5:
            break
    assert leftovers() == []
    assert [float(x[0]) for x in kept] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_stage_that_stops_early_drains_its_input():
    report = (arrays(100) >> identity >> stop_at(at=3)).run(executor=ProcessExecutor("fork"))
    assert report.stopped


# -- a driver that dies ---------------------------------------------------------------------
def _dead_pid():
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_segments_of_a_dead_driver_are_swept_at_the_next_start(tmp_path):
    dead = _dead_pid()
    orphan = os.path.join(_shm.SHM_DIR, f"flowdsl-{dead}-0badc0de-{dead}-0")
    planted_dir = os.path.join(_shm.SHM_DIR, f"flowdsl-{dead}-0badc0de-dir")
    planted_link = os.path.join(_shm.SHM_DIR, f"flowdsl-{dead}-0badc0de-link")
    live = os.path.join(_shm.SHM_DIR, f"flowdsl-{os.getppid()}-0badc0de-live")
    target = tmp_path / "target"
    target.write_text("keep me")
    try:
        for path in (orphan, live):
            with open(path, "wb") as f:
                f.write(b"\0" * 64)
        os.mkdir(planted_dir)
        os.symlink(target, planted_link)
        assert _shm.sweep_orphans() >= 1
        assert not os.path.exists(orphan)  # its driver is gone
        assert os.path.isdir(planted_dir) and os.path.islink(planted_link)  # not segments
        assert os.path.exists(live)  # another run, still alive
        assert target.read_text() == "keep me"
    finally:
        for path in (orphan, live, planted_link):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(planted_dir)


DRIVER = textwrap.dedent("""
import sys
import numpy as np
from flowdsl import sink, source, transform

@source
def arrays():
    i = 0
    while True:
        yield np.full(1 << 15, i, dtype=np.float64)  # 256 KiB: through shared memory
        i += 1

@transform
def identity(x):
    return x

@sink
class Announce:
    def run(self, x):
        if x[0] == 3:
            print("running", flush=True)

(arrays() >> identity >> Announce()).run()
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_sigterm_or_sighup_to_the_driver_leaves_nothing_behind(sig):
    with subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        try:
            assert proc.stdout.readline().strip() == "running"
            workers = psutil.Process(proc.pid).children(recursive=True)
            os.kill(proc.pid, sig)
            assert proc.wait(timeout=10) == -sig  # it ends by the signal, honestly
            _, alive = psutil.wait_procs(workers, timeout=5)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    assert not alive
    assert not [n for n in os.listdir(_shm.SHM_DIR) if n.startswith(f"flowdsl-{proc.pid}-")]
