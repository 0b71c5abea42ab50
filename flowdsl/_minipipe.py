"""The minipipe-style explicit API: Streams, PipeSystem and PipeLine.

Pipes (``Source``, ``Transform``, ``Sink``, ``Regulator``) are wired to
:class:`Stream` objects by their ``upstreams`` and ``downstreams``; a
:class:`PipeSystem` turns that wiring into the same :class:`~flowdsl.Flow` the
decorator DSL builds, and runs it on the same executors.  Several upstreams zip
into positional arguments, several downstreams split a returned tuple by
position, producers sharing a Stream merge, consumers sharing one compete.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from ._flow import Edge, Flow, Node
from ._plan import compile_flow
from ._sentinel import Sentinel
from ._stages import Source, Stage
from .errors import GraphError
from .executors import Execution, resolve_executor

__all__ = ["PipeLine", "PipeSystem", "Sentinel", "Stream"]

log = logging.getLogger("flowdsl")
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


class _SeedQueue:
    """``Stream.q``: items put here before a run are the stream's first items."""

    def __init__(self) -> None:
        self._items: collections.deque[Any] = collections.deque()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._items.append(item)

    put_nowait = put

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self._items.popleft()

    get_nowait = get

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def take(self) -> list[Any]:
        items = list(self._items)
        self._items.clear()
        return items


class Stream:
    """A named, bounded queue between pipes: minipipe's connection.

    Items put on a stream before the run (``stream.q.put(x)``) are fed in as
    seeds, as minipipe's looping examples do.

    Args:
        name: The stream's name, shown on diagrams with ``draw_streams=True``.
        buffer_size: The most items it holds.
        timeout: minipipe's option, accepted for compatibility.
        monitor: minipipe's option, accepted for compatibility.

    Raises:
        GraphError: ``buffer_size`` is not a positive integer (a ``ValueError``).

    Examples:
        >>> from flowdsl import PipeSystem, Sink, Source, Stream
        >>> def numbers():
        ...     yield from range(3)
        >>> link = Stream("link", buffer_size=8)
        >>> numbers_pipe = Source(numbers, downstreams=[link])
        >>> printer = Sink(print, upstreams=[link])
        >>> system = PipeSystem([numbers_pipe, printer])
        >>> system.build(log_lvl="WARNING")
        >>> system.run(executor="serial")
        >>> system.close()
        0
        1
        2
    """

    def __init__(
        self,
        name: str = "stream",
        buffer_size: int = 3,
        timeout: float | None = None,
        monitor: bool = False,
    ) -> None:
        if not isinstance(buffer_size, int) or isinstance(buffer_size, bool) or buffer_size < 1:
            raise GraphError(
                f"stream {name!r}: buffer_size must be an integer >= 1, got {buffer_size!r}"
            )
        self.name = name
        self.buffer_size = buffer_size
        self.timeout = timeout
        self.monitor = monitor
        self.q = _SeedQueue()
        self.seeds: list[Any] = []

    def __repr__(self) -> str:
        return f"Stream({self.name!r})"


class PipeSystem:
    """Pipes of any topology, wired by their Streams: minipipe's runner.

    ``build()``, then ``run()`` (returns at once, the pipes running in the
    background) and ``close()`` (waits, and raises what went wrong).

    Args:
        pipes: The stages, each wired to its neighbours by :class:`Stream`
            objects given as ``upstreams`` and ``downstreams``.

    Examples:
        >>> from flowdsl import PipeSystem, Sink, Source, Stream, Transform
        >>> def numbers():
        ...     yield from range(4)
        >>> a, b = Stream(), Stream()
        >>> system = PipeSystem([
        ...     Source(numbers, downstreams=[a]),
        ...     Transform(lambda x: x * x, upstreams=[a], downstreams=[b]),
        ...     Sink(print, upstreams=[b]),
        ... ])
        >>> system.build(log_lvl="WARNING")
        >>> system.run(executor="serial")  # the default runs each pipe in a process
        >>> system.close()
        0
        1
        4
        9
    """

    def __init__(self, pipes: list[Stage]) -> None:
        self.pipes = list(pipes)
        self.flow: Flow | None = None
        self.built = False
        self._execution: Execution | None = None
        self._closed = False

    def build(
        self,
        log_lvl: str = "INFO",
        monitor: bool = False,
        ignore_exceptions: list[type[BaseException]] | None = None,
    ) -> None:
        """Check and connect the pipes; show flowdsl's log records at ``log_lvl``.

        Returns ``None``, as minipipe's does (a notebook cell ending in
        ``pline.build()`` shows nothing); ``pline.diagram()`` draws it.

        Args:
            log_lvl: ``"DEBUG"``, ``"INFO"``, ``"WARNING"``, ``"ERROR"`` or
                ``"CRITICAL"``.
            monitor: minipipe's option, accepted for compatibility.
            ignore_exceptions: Exception types every pipe logs and skips,
                replacing each pipe's own.

        Pipes of the same name are renamed ``name_0``, ``name_1``, ... as
        minipipe did.

        Raises:
            ValueError: ``log_lvl`` is not a level name.
            GraphError: The pipes do not make a valid flow.
        """
        if log_lvl not in _LEVELS:
            raise ValueError(f"log_lvl must be one of {list(_LEVELS)}, got {log_lvl!r}")
        _show_logs(_LEVELS[log_lvl])
        _dedupe_names(self.pipes)
        if ignore_exceptions is not None:
            for p in self.pipes:
                p.ignore_exceptions = tuple(ignore_exceptions)
        self.flow = _flow_of(self.pipes)
        compile_flow(self.flow)  # raises GraphError now, not at run time
        self.built = True

    def run(self, executor: Any = "process") -> None:
        """Start the pipes; they run in the background until ``close()``.

        Args:
            executor: As for ``Flow.run``. A system not built yet is built
                first, with ``build()``'s defaults (records shown at INFO).

        Raises:
            RuntimeError: The system has run already (``reset()`` it first).
        """
        if not self.built:
            self.build()
        if self._execution is not None:
            raise RuntimeError("this system has already run: reset() it to run it again")
        assert self.flow is not None
        for stream in _streams(self.pipes):
            stream.seeds = stream.q.take()
        plan = compile_flow(self.flow, want_results=False)
        self._execution = resolve_executor(executor).start(plan)
        self._closed = False

    def close(self) -> None:
        """Wait for the pipes to finish; raise the first error of the run."""
        execution = self._execution
        if execution is None or self._closed:
            return
        self._closed = True
        try:
            for _ in execution:
                pass
        finally:
            execution.close()

    def reset(self) -> None:
        """Make the system ready to run again (term flags are cleared)."""
        if self._execution is not None:
            self._execution.close()
            self._execution = None
        self._closed = False
        for p in self.pipes:
            if p.term_flag is not None:
                p.term_flag.clear()

    def diagram(self, draw_streams: bool = False) -> Any:
        """A ``graphviz.Digraph`` of the system.

        Args:
            draw_streams: Draw a node for each :class:`Stream` too.

        Raises:
            GraphError: The system is not built yet.
        """
        if not self.built:
            raise GraphError("build() the system before drawing it")
        assert self.flow is not None
        return self.flow.diagram(draw_streams=draw_streams)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from ._diagram import mimebundle

        return mimebundle(self.flow if self.flow is not None else _flow_of(self.pipes))


class PipeLine(PipeSystem):
    """A linear PipeSystem: each ``add`` connects the new pipe to the previous one.

    Args:
        monitor: minipipe's option, accepted for compatibility.

    Examples:
        >>> from flowdsl import PipeLine, Sink, Source, Transform
        >>> def numbers():
        ...     yield from range(3)
        >>> pline = PipeLine()
        >>> pline = pline.add(Source(numbers)).add(Transform(lambda x: x + 1), n_processes=2)
        >>> pline = pline.add(Sink(print))
        >>> pline.build(log_lvl="WARNING")
        >>> pline.run(executor="serial")
        >>> pline.close()
        1
        2
        3
    """

    def __init__(self, monitor: bool = False) -> None:
        super().__init__([])
        self.monitor = monitor
        self.segments: list[Stage] = []
        self.sid = 0

    def add(self, pipe: Stage, n_processes: int = 1, buffer_size: int = 3) -> PipeLine:
        """Append ``pipe``, run by ``n_processes`` competing workers.

        Args:
            pipe: A :class:`Source` first, then transforms, then a sink.
            n_processes: Workers for the pipe (unordered, as in minipipe).
            buffer_size: The size of the :class:`Stream` joining it to the
                previous pipe.

        Returns:
            The pipeline, so calls chain.

        Raises:
            GraphError: A source is given more than one process.
        """
        if isinstance(pipe, Source) and n_processes > 1:
            raise GraphError(
                "a Source runs in one process: use a PipeSystem with several "
                "Sources to read in parallel"
            )
        if n_processes > 1:
            pipe = pipe.options(workers=n_processes, ordered=False)
        if self.segments:
            stream = Stream(f"stream_{self.sid}", buffer_size, monitor=self.monitor)
            self.sid += 1
            self.segments[-1].set_downstreams([stream])
            pipe.set_upstreams([stream])
        self.segments.append(pipe)
        self.pipes.append(pipe)
        self.built = False
        return self


def _streams(pipes: list[Stage]) -> list[Stream]:
    seen: dict[int, Stream] = {}
    for p in pipes:
        for s in [*p.upstreams, *p.downstreams]:
            seen.setdefault(id(s), s)
    return list(seen.values())


def _flow_of(pipes: list[Stage]) -> Flow:
    """The flow for pipes wired by Streams."""
    nodes = {id(p): Node(p) for p in pipes}
    producers: dict[int, list[tuple[Node | None, int]]] = collections.defaultdict(list)
    for p in pipes:
        for port, s in enumerate(p.downstreams):
            producers[id(s)].append((nodes[id(p)], port))
    edges = []
    for q in pipes:
        for port, s in enumerate(q.upstreams):
            if not isinstance(s, Stream):
                raise GraphError(f"pipe {q.name!r}: upstreams must be Streams, got {s!r}")
            sources = producers.get(id(s)) or [(None, 0)]  # a stream fed only by seeds
            edges += [Edge(n, i, nodes[id(q)], port, stream=s) for n, i in sources]
    return Flow(tuple(nodes.values()), tuple(edges), (), ())


def _dedupe_names(pipes: list[Stage]) -> None:
    counts = collections.Counter(p.name for p in pipes)
    seen: collections.Counter[str] = collections.Counter()
    for p in pipes:
        if counts[p.name] > 1:
            name = p.name
            p.name = f"{name}_{seen[name]}"
            seen[name] += 1


class _StageFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "stage"):
            record.stage = record.name
        return super().format(record)


def _show_logs(level: int) -> None:
    """Show flowdsl's records on stderr, as minipipe did, unless the application
    has configured logging itself."""
    log.setLevel(level)
    configured = logging.getLogger().handlers or any(
        not isinstance(h, logging.NullHandler) for h in log.handlers
    )
    if configured:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_StageFormatter("%(asctime)s - %(levelname)s - %(stage)s - %(message)s"))
    log.addHandler(handler)
