"""Stages shared by the tests (module level, so spawn can import them)."""

import contextlib
import os
import random
import signal
import threading
import time

import psutil

from flowdsl import Failure, Transform, sink, source, transform


@source
def numbers(n=10):
    yield from range(n)


@source
def listed(items):
    return list(items)


@transform
def inc(x):
    return x + 1


@transform
def identity(x):
    return x


@transform
def double(x):
    return 2 * x


@transform
def evens(x):
    return x if x % 2 == 0 else None


@transform
def twice(x):
    yield x
    yield x


@transform
def scale(x, factor=1):
    return x * factor


@transform
def add(a, b):
    return a + b


@sink
def ignore(x):
    pass


@transform
def fail_on(x, bad=3):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


@transform
def pid_of(x):
    return os.getpid()


class Unpicklable:
    """Neither pickle nor dill can serialise it."""

    def __reduce__(self):
        raise TypeError("Unpicklable objects cannot be pickled")

    def __repr__(self):
        return "<Unpicklable>"


def plain_double(x):
    """An undecorated module-level function."""
    return 2 * x


def _refuse(text):
    raise ValueError(text)


class Fragile:
    """Pickles, but cannot be unpickled (like a ``__setstate__`` that raises, or a
    class importable only where it was made)."""

    def __reduce__(self):
        return _refuse, ("not here",)


@transform
def fragile(x):
    return Fragile()


class BadRepr:
    """An item whose ``repr`` raises."""

    def __repr__(self):
        raise RuntimeError("no repr")


class BadStr(Exception):
    """An exception whose ``str`` raises."""

    def __str__(self):
        raise RuntimeError("no str")


def nested(depth):
    """A list nested ``depth`` deep: too deep for ``repr`` and ``pickle``."""
    x = []
    for _ in range(depth):
        x = [x]
    return x


@transform
def always_fails(x):
    raise ValueError("boom")


@transform
def raises_bad_str(x):
    raise BadStr()


@transform
def exits(x):
    raise SystemExit(3)


@transform
def interrupts(x):
    raise KeyboardInterrupt


@transform
def closure_of(x):
    """Items only dill can serialise: a lambda, and an object of a local class."""

    class Local:
        def __init__(self, value):
            self.value = value

    return (lambda: x), Local(x)


@transform
def open_closure(pair):
    f, local = pair
    assert f() == local.value
    return f, local


@source
def deep_item(depth=100_000):
    """One item too deep to show or to pickle, made in the worker."""
    yield nested(depth)


@source
def counted(n, path):
    """``range(n)``, writing how many items it yielded to ``path`` once it is
    closed (whether it ran out or was stopped early)."""
    made = 0
    try:
        for i in range(n):
            made += 1
            yield i
    finally:
        with open(path, "w") as f:
            f.write(str(made))


def _url(base, kind, item, delay):
    """``item`` is ``x``, or ``(x, delay)``, or ``(x, delay, kind)``."""
    if isinstance(item, tuple):
        x, delay, kind = (*item, kind)[:3]
    else:
        x = item
    return x, f"{base}/{kind}/{x}?delay={delay}"


def _note(path, line):
    if path is not None:
        with open(path, "a") as f:
            f.write(line + "\n")


class Fetch:
    """An async stage: GET ``base/kind/x`` (``x`` or ``(x, delay)``) with one
    aiohttp session per worker, answering ``int(body)``.  With ``path``, notes
    each call's start and end, and local_term."""

    def __init__(self, base, kind="echo", delay=0.0, path=None):
        self.base, self.kind, self.delay, self.path = base, kind, delay, path

    async def local_init(self):
        import aiohttp

        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def run(self, item):
        x, url = _url(self.base, self.kind, item, self.delay)
        _note(self.path, f"start {x}")
        try:
            async with self.session.get(url) as r:
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status} for item {x}")
                return int(await r.text())
        finally:
            _note(self.path, f"end {x}")

    async def local_term(self):
        await self.session.close()
        _note(self.path, "local_term")


class Get:
    """The same as :class:`Fetch`, with a blocking client (for threads)."""

    def __init__(self, base, kind="echo", delay=0.0, path=None):
        self.base, self.kind, self.delay, self.path = base, kind, delay, path

    def run(self, item):
        import urllib.error
        import urllib.request

        x, url = _url(self.base, self.kind, item, self.delay)
        _note(self.path, f"start {x}")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return int(r.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"HTTP {exc.code} for item {x}") from None
        finally:
            _note(self.path, f"end {x}")

    def local_term(self):
        _note(self.path, "local_term")


# -- faults for the resilience tests ---------------------------------------------------


class Marked:
    """Notes each local_init and each item (with the worker's pid) in files
    under ``root``; ``hang``, ``die`` and ``once`` pick what item 5 does."""

    def __init__(self, root, hang=(), die=(), once=False, seconds=30.0):
        self.root, self.hang, self.die, self.once, self.seconds = root, hang, die, once, seconds

    def local_init(self):
        with open(os.path.join(self.root, "inits"), "a") as f:
            f.write(f"{os.getpid()}\n")

    def run(self, x):
        if x in self.hang or x in self.die:
            first = self._first(x)
            if first or not self.once:
                if x in self.die:
                    os._exit(7)
                time.sleep(self.seconds)
        with open(os.path.join(self.root, "items"), "a") as f:
            f.write(f"{x} {os.getpid()}\n")
        return x

    def _first(self, x):
        path = os.path.join(self.root, f"seen-{x}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            return False


def inits(root):
    return (root / "inits").read_text().split()


def items(root):
    path = root / "items"
    return [int(line.split()[0]) for line in path.read_text().splitlines()] if path.exists() else []


def marked(tmp_path, **options):
    settings = {k: options.pop(k) for k in ("hang", "die", "once", "seconds") if k in options}
    return Transform(Marked(str(tmp_path), **settings), **options)


def letters_to(path):
    """A dead-letter sink that notes what it receives in ``path`` (it runs in a
    worker process)."""

    @sink
    def dead(failure):
        assert isinstance(failure, Failure)
        with open(path, "a") as f:
            f.write(f"{failure.item} {type(failure.exception).__name__}\n")

    return dead


# -- stress --------------------------------------------------------------------------------
@contextlib.contextmanager
def workers_paused_at_random(seed):
    """While the block runs, stop a random child process of this one (SIGSTOP)
    for up to 10 ms, again and again: it makes the interleavings of workers,
    gates and the driver that a loaded machine makes only now and then."""
    done = threading.Event()
    rnd = random.Random(seed)

    def pause():
        me = psutil.Process()
        while not done.is_set():
            kids = [p.pid for p in me.children() if "forkserver" not in " ".join(_cmdline(p))]
            if not kids:
                done.wait(0.001)
                continue
            pid = rnd.choice(kids)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                try:
                    done.wait(rnd.random() * 0.01)
                finally:
                    os.kill(pid, signal.SIGCONT)
            done.wait(rnd.random() * 0.003)

    pauser = threading.Thread(target=pause, daemon=True)
    pauser.start()
    try:
        yield
    finally:
        done.set()
        pauser.join()


def _cmdline(p):
    try:
        return p.cmdline()
    except psutil.Error:
        return []
