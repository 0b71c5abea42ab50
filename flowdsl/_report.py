"""Run reports: what each stage did during one run, and where the time went."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FIGURES", "RunReport", "StageStats", "stage_figures"]

COLUMNS: tuple[str, ...] = (
    "stage",
    "in",
    "out",
    "errors",
    "busy s",
    "busy %",
    "wait in s",
    "wait out s",
)

# The per-worker figures, in the order workers publish them (see executors/_worker.py).
FIGURES = (
    "items_in",
    "items_out",
    "errors",
    "busy_seconds",
    "blocked_in_seconds",
    "blocked_out_seconds",
    "left_over",
    "dropped",
    "in_flight",
    "max_in_flight",
    "timeouts",
)
BUSY = FIGURES.index("busy_seconds")


@dataclass
class StageStats:
    """Counters of one stage, summed over its workers.

    A stage that is busy nearly all the time while its neighbours wait on it is
    the bottleneck. The serial executor never waits, so its blocked times are
    zero.

    Attributes:
        name: The stage's name.
        kind: ``"source"``, ``"transform"``, ``"sink"`` or ``"loop"``.
        workers: How many workers it was given (the serial executor runs one).
        items_in: Items it received.
        items_out: Items it emitted.
        errors: Items that failed and were skipped or sent to the dead letters.
        busy_seconds: Time spent in the stage's own code; for a stage with
            ``concurrency=N``, the seconds of its calls over N (all N places
            busy all the time is busy all the time).
        blocked_in_seconds: Time spent waiting for input (upstream too slow).
        blocked_out_seconds: Time spent waiting for room downstream (downstream
            too slow).
        left_over: A zip's items that arrived on an input and were never paired.
        dropped: Items that arrived after the stage had stopped.
        in_flight: A concurrent stage's calls running now (for progress).
        max_in_flight: The most calls running at once, per worker, summed.
        timeouts: Calls that ran longer than the stage's ``timeout``.
        restarts: Workers that died and were replaced.
        replaced: Workers replaced after ``max_items_per_worker`` items.

    Examples:
        >>> from flowdsl import source, transform
        >>> @source
        ... def numbers(n):
        ...     yield from range(n)
        >>> @transform
        ... def evens(x):
        ...     return x if x % 2 == 0 else None
        >>> stats = (numbers(10) >> evens).run()["evens"]
        >>> stats.kind, stats.items_in, stats.items_out, stats.errors
        ('transform', 10, 5, 0)
    """

    name: str
    kind: str
    workers: int = 1
    items_in: int = 0
    items_out: int = 0
    errors: int = 0  # items that failed and were skipped or sent to the dead letters
    busy_seconds: float = 0.0
    blocked_in_seconds: float = 0.0
    blocked_out_seconds: float = 0.0
    left_over: int = 0  # a zip's: items that arrived on an input and were never paired
    dropped: int = 0  # items that arrived after it had stopped (nobody read it, a flag...)
    in_flight: int = 0  # a concurrent stage's calls in flight now (for progress)
    max_in_flight: int = 0  # ... and the most at once, per worker, summed over workers
    timeouts: int = 0  # calls that ran longer than the stage's timeout
    restarts: int = 0  # workers that died and were replaced
    replaced: int = 0  # workers replaced after max_items_per_worker items

    def add(self, *figures: float) -> None:
        """Add one worker's figures, given in ``FIGURES`` order."""
        for name, value in zip(FIGURES, figures, strict=False):  # a prefix is fine
            setattr(self, name, getattr(self, name) + type(getattr(self, name))(value))

    def busy_share(self, seconds: float) -> float:
        """The fraction of ``seconds`` of wall time its workers spent busy."""
        return self.busy_seconds / self.workers / seconds if seconds > 0 else 0.0


def stage_figures(plan: Any, rows: Any) -> dict[str, StageStats]:
    """Each visible stage's figures, summed from ``(node id, figures in FIGURES
    order)`` rows, one per worker.  A stage the planner added for another (the
    pairing stage of a zip with workers) adds only what it left over or dropped, to
    that one."""
    stages = {n.name: StageStats(n.name, n.kind, n.workers) for n in plan.nodes if not n.hidden}
    for node_id, figures in rows:
        node = plan.nodes[node_id]
        if not node.hidden:
            stages[node.name].add(*figures)
        elif node.serves is not None and len(figures) == len(FIGURES):
            served = stages[plan.nodes[node.serves].name]
            served.left_over += int(figures[FIGURES.index("left_over")])
            served.dropped += int(figures[FIGURES.index("dropped")])
    return stages


@dataclass
class RunReport:
    """Returned by ``flow.run()``: per-stage counters and the wall time of the run.

    ``report["square"]`` gives the :class:`StageStats` of a stage by name (a
    ``KeyError`` names the stages there are); ``print(report)`` shows a table;
    ``report.diagram()`` draws the flow annotated with the counters.

    Attributes:
        stages: The :class:`StageStats` of each stage, by name.
        seconds: The wall time of the run.
        executor: The executor's name.
        stopped: Whether a stage ended the run early with ``StopFlow``.
        plan: What :meth:`diagram` draws.

    Examples:
        >>> from flowdsl import sink, source
        >>> @source
        ... def numbers(n):
        ...     yield from range(n)
        >>> @sink
        ... def ignore(x):
        ...     pass
        >>> report = (numbers(1000) >> ignore).run()
        >>> report.executor, report["numbers"].items_out, report["ignore"].items_in
        ('process', 1000, 1000)
        >>> sorted(report.to_dict()["stages"])
        ['ignore', 'numbers']
    """

    stages: dict[str, StageStats] = field(default_factory=dict)
    seconds: float = 0.0
    executor: str = ""
    stopped: bool = False  # ended early by StopFlow
    plan: Any = field(default=None, repr=False, compare=False)  # what diagram() draws

    def __getitem__(self, name: str) -> StageStats:
        try:
            return self.stages[name]
        except KeyError:
            raise KeyError(
                f"no stage named {name!r} in this report; stages: {', '.join(self.stages)}"
            ) from None

    @property
    def bottleneck(self) -> str | None:
        """The name of the stage that limited the run.

        That is the stage with the most busy time per worker; ``None`` when no
        stage was busy at all (a run too short to measure)."""
        if not self.stages:
            return None
        busiest = max(self.stages.values(), key=lambda s: s.busy_seconds / s.workers)
        return busiest.name if busiest.busy_seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): the figures, the bottleneck, no objects."""
        return {
            "seconds": self.seconds,
            "executor": self.executor,
            "stopped": self.stopped,
            "bottleneck": self.bottleneck,
            "stages": {k: asdict(v) for k, v in self.stages.items()},
        }

    def diagram(self) -> Any:
        """A ``graphviz.Digraph`` of the flow, each stage labelled with its figures
        and the bottleneck highlighted."""
        if self.plan is None:
            raise ValueError("this report has no flow to draw (it was built by hand)")
        from ._diagram import annotated

        return annotated(
            self.plan,
            {s.name: _note(s, self.seconds) for s in self.stages.values()},
            self.bottleneck,
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "plan": None}  # figures travel, the stages' code does not

    def _title(self) -> str:
        return (
            f"RunReport({self.executor}, {self.seconds:.3f} s"
            + (", stopped by StopFlow" if self.stopped else "")
            + ")"
        )

    def _rows(self) -> list[tuple[str, ...]]:
        """The table: a header, then one row of text cells per stage."""
        rows: list[tuple[str, ...]] = [COLUMNS]
        for s in self.stages.values():
            mark = " *" if s.name == self.bottleneck and len(self.stages) > 1 else ""
            rows.append(
                (
                    s.name + mark,
                    str(s.items_in),
                    str(s.items_out),
                    str(s.errors),
                    f"{s.busy_seconds:.3f}",
                    f"{100 * s.busy_share(self.seconds):.0f}",
                    f"{s.blocked_in_seconds:.3f}",
                    f"{s.blocked_out_seconds:.3f}",
                )
            )
        return rows

    def __repr__(self) -> str:
        table = self._rows()
        width = max(len(row[0]) for row in table) + 2
        lines = [self._title()]
        for row in table:
            lines.append(
                f"  {row[0]:<{width}} {row[1]:>9} {row[2]:>9} {row[3]:>6} "
                f"{row[4]:>8} {row[5]:>6} {row[6]:>9} {row[7]:>10}"
            )
        if self.bottleneck is not None and len(self.stages) > 1:
            lines.append("  * bottleneck")
        lines.extend(f"  {note}" for note in self._notes())
        return "\n".join(lines)

    def _notes(self) -> list[str]:
        """A line per stage with more to say: calls it had in flight at once (a
        concurrent stage), items it never used."""
        lines = []
        for s in self.stages.values():
            said = (
                ([f"at most {s.max_in_flight} calls in flight"] if s.max_in_flight > 1 else [])
                + ([f"{s.timeouts} timed out"] if s.timeouts else [])
                + ([f"{s.restarts} worker(s) restarted"] if s.restarts else [])
                + (
                    [f"{s.replaced} worker(s) replaced after max_items_per_worker"]
                    if s.replaced
                    else []
                )
                + ([f"{s.left_over} left over (never paired)"] if s.left_over else [])
                + ([f"{s.dropped} dropped (arrived after it stopped)"] if s.dropped else [])
            )
            if said:
                lines.append(f"{s.name}: " + ", ".join(said))
        return lines

    def _repr_html_(self) -> str:
        """The same table, as HTML (a notebook shows this)."""
        head, *body = self._rows()
        cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
        )
        note = "<p>* bottleneck</p>" if self.bottleneck is not None and len(self.stages) > 1 else ""
        note += "".join(f"<p>{html.escape(line)}</p>" for line in self._notes())
        return (
            f'<div class="flowdsl-report"><p>{html.escape(self._title())}</p>'
            f"<table><tr>{cells}</tr>{rows}</table>{note}</div>"
        )


def _note(s: StageStats, seconds: float) -> str:
    lines = [
        f"in {s.items_in}  out {s.items_out}"
        + (f"  errors {s.errors}" if s.errors else "")
        + (f"  left over {s.left_over}" if s.left_over else "")
        + (f"  dropped {s.dropped}" if s.dropped else ""),
        f"busy {s.busy_seconds:.2f} s ({100 * s.busy_share(seconds):.0f}%)",
    ]
    if s.blocked_in_seconds or s.blocked_out_seconds:
        lines.append(f"waits: in {s.blocked_in_seconds:.2f} s, out {s.blocked_out_seconds:.2f} s")
    if s.timeouts or s.restarts or s.replaced:
        lines.append(f"timeouts {s.timeouts}  restarts {s.restarts}  replaced {s.replaced}")
    return "\n".join(lines)
