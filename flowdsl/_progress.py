"""Live progress of a run: per-stage counters drawn while the flow runs.

``run(progress=True)`` starts a :class:`Progress`: a daemon thread in the driver
that reads the execution's live figures a few times a second and draws them, in
a terminal with ``tqdm`` (one line per stage), in Jupyter as an HTML table
updated in place (no ipywidgets needed).  Workers always publish their figures
(the run report is built from them), so asking for progress costs the run
nothing but this thread; not asking for it starts nothing.
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import sys
import threading
import time
from typing import Any, Protocol

from ._report import StageStats

__all__ = ["Progress"]

log = logging.getLogger("flowdsl")
_SMOOTHING = 0.3  # weight of the newest rate in the one shown


class _View(Protocol):
    interval: float  # seconds between draws

    def draw(self, rows: list[_Row], final: bool) -> None: ...
    def close(self) -> None: ...


class _Row:
    """One stage's line: its figures, its current rate and its input queue fill."""

    def __init__(self, stats: StageStats, rate: float, fill: float | None) -> None:
        self.stats, self.rate, self.fill = stats, rate, fill

    @property
    def done(self) -> int:
        """Items the stage has handled: produced for a source, taken in otherwise."""
        s = self.stats
        return s.items_out if s.kind == "source" else s.items_in

    def summary(self) -> str:
        s = self.stats
        parts = [f"{_rate(self.rate):>9} items/s"]
        if s.kind != "source":
            parts.append(f"in {s.items_in:,}")
        if s.kind != "sink":
            parts.append(f"out {s.items_out:,}")
        if s.errors:
            parts.append(f"errors {s.errors:,}")
        if s.max_in_flight:  # a concurrent stage
            parts.append(f"in flight {s.in_flight:,}")
        for count, what in (
            (s.timeouts, "timeouts"),
            (s.restarts, "restarts"),
            (s.replaced, "replaced"),
        ):
            if count:
                parts.append(f"{what} {count:,}")
        if self.fill is not None:
            parts.append(f"queue {self.fill:.0%}")
        return ", ".join(parts)


class Progress:
    """Draws ``execution``'s live figures until :meth:`close`, which draws the
    final ones."""

    def __init__(
        self, execution: Any, view: _View | None = None, interval: float | None = None
    ) -> None:
        self.execution = execution
        self.view = view or (_NotebookView() if _in_notebook() else _terminal_view())
        self.interval = interval or self.view.interval
        self._started = time.perf_counter()
        self._last: dict[str, tuple[float, int]] = {}  # when each stage was drawn, at what count
        self._rates: dict[str, float] = {}  # smoothed, so batches do not make it jump
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="flowdsl-progress", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval) and not self.execution.closed:
                self.view.draw(self.rows(), False)
        except Exception:  # stop drawing; the run goes on
            log.warning("the progress display failed", exc_info=True)

    def rows(self, final: bool = False) -> list[_Row]:
        """The figures now; the rate is the recent one, or the whole run's when final."""
        now = time.perf_counter()
        fill = self.execution.queue_fill()
        rows = []
        for name, stats in self.execution.stats().items():
            row = _Row(stats, 0.0, fill.get(name))
            row.rate = self._rate(name, row.done, now, final)
            rows.append(row)
        return rows

    def _rate(self, name: str, done: int, now: float, final: bool) -> float:
        """Items per second since the last draw (smoothed), or since the start."""
        then, before = (self._started, 0) if final else self._last.get(name, (self._started, 0))
        rate = (done - before) / (now - then) if now > then else 0.0
        if not final and name in self._rates:
            rate = _SMOOTHING * rate + (1 - _SMOOTHING) * self._rates[name]
        self._rates[name] = rate
        self._last[name] = (now, done)
        return rate

    def close(self) -> None:
        """Stop drawing; draw the final figures once.  A display that fails is
        logged, never allowed to change the outcome of the run."""
        self._stop.set()
        self._thread.join()
        try:
            try:
                self.view.draw(self.rows(final=True), True)
            finally:
                self.view.close()
        except Exception:
            log.warning("the progress display failed", exc_info=True)


def _terminal_view() -> _View:
    """Live lines on a terminal; on a pipe, a file or a terminal of unknown size, a
    plain block now and then; nothing without a stderr (pythonw, some daemons)."""
    stream = sys.stderr
    if stream is None or not hasattr(stream, "write"):
        return _NullView()
    try:
        size = os.get_terminal_size(stream.fileno()) if stream.isatty() else None
    except (AttributeError, OSError, ValueError):
        size = None
    if size is not None and size.columns > 0 and size.lines > 0:
        return _TerminalView(stream)
    return _PlainView(stream)


class _NullView:
    interval = 1.0

    def draw(self, rows: list[_Row], final: bool) -> None:
        pass

    def close(self) -> None:
        pass


class _TerminalView:
    """One ``tqdm`` line per stage, redrawn in place."""

    interval = 0.2

    def __init__(self, file: Any) -> None:
        self.file = file
        self.bars: dict[str, Any] = {}

    def draw(self, rows: list[_Row], final: bool) -> None:
        from tqdm import tqdm

        width = max(len(r.stats.name) for r in rows) if rows else 0
        for i, row in enumerate(rows):
            bar = self.bars.get(row.stats.name)
            if bar is None:
                bar = self.bars[row.stats.name] = tqdm(
                    position=i,
                    file=self.file,
                    ncols=shutil.get_terminal_size().columns,
                    leave=True,
                    mininterval=0,
                    bar_format="{desc}",
                )
            bar.set_description_str(f"{row.stats.name:<{width}}  {row.summary()}", refresh=False)
            bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


class _PlainView:
    """For logs: a block of lines every ``every`` seconds, and at the end."""

    def __init__(self, file: Any, every: float = 10.0) -> None:
        self.file, self.interval = file, every

    def draw(self, rows: list[_Row], final: bool) -> None:
        self.file.write(_plain_block(rows))
        self.file.flush()

    def close(self) -> None:
        pass


class _NotebookView:
    """An HTML table in the cell's output, replaced in place at each draw."""

    interval = 0.5

    def __init__(self) -> None:
        self.handle: Any = None

    def draw(self, rows: list[_Row], final: bool) -> None:
        from IPython.display import display

        table = _Table(rows)
        if self.handle is None:
            self.handle = display(table, display_id=True)  # type: ignore[no-untyped-call]
        else:
            self.handle.update(table)

    def close(self) -> None:
        pass


class _Table:
    """Progress rows for a notebook: HTML, and plain text where HTML is not shown
    (a console, an exported notebook)."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows

    def _repr_html_(self) -> str:
        return _html_table(self.rows)

    def __repr__(self) -> str:
        return _plain_block(self.rows).rstrip("\n")


def _plain_block(rows: list[_Row]) -> str:
    """One line per stage: its name, then its figures."""
    width = max(len(r.stats.name) for r in rows) if rows else 0
    return "".join(f"{r.stats.name:<{width}}  {r.summary()}\n" for r in rows)


def _html_table(rows: list[_Row]) -> str:
    head = "".join(
        f"<th>{h}</th>" for h in ("stage", "in", "out", "items/s", "errors", "in flight", "queue")
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{c}</td>"
            for c in (
                html.escape(r.stats.name),
                f"{r.stats.items_in:,}",
                f"{r.stats.items_out:,}",
                _rate(r.rate),
                f"{r.stats.errors:,}",
                f"{r.stats.in_flight:,}" if r.stats.max_in_flight else "",
                "" if r.fill is None else f"{r.fill:.0%}",
            )
        )
        + "</tr>"
        for r in rows
    )
    return f'<table class="flowdsl-progress"><tr>{head}</tr>{body}</table>'


def _rate(per_second: float) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if per_second >= scale:
            return f"{per_second / scale:.1f}{suffix}"
    return f"{per_second:.0f}"


def _in_notebook() -> bool:
    """True in a Jupyter kernel (IPython is only looked at if already imported)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
