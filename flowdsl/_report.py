"""Run reports: what each stage did during one run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["RunReport", "StageStats"]


@dataclass
class StageStats:
    """Counters of one stage, summed over its workers."""

    name: str
    kind: str
    workers: int = 1
    items_in: int = 0
    items_out: int = 0
    errors: int = 0
    busy_seconds: float = 0.0

    def add(self, items_in: int, items_out: int, errors: int, busy: float) -> None:
        self.items_in += items_in
        self.items_out += items_out
        self.errors += errors
        self.busy_seconds += busy


@dataclass
class RunReport:
    """Returned by ``flow.run()``: per-stage counters and the wall time of the run.

    ``report["square"]`` gives the :class:`StageStats` of a stage by name.
    """

    stages: dict[str, StageStats] = field(default_factory=dict)
    seconds: float = 0.0
    executor: str = ""
    stopped: bool = False  # ended early by StopFlow

    def __getitem__(self, name: str) -> StageStats:
        try:
            return self.stages[name]
        except KeyError:
            raise KeyError(f"no stage named {name!r} in this report; stages: "
                           f"{', '.join(self.stages)}") from None

    @property
    def bottleneck(self) -> str | None:
        """The stage with the most busy time per worker."""
        if not self.stages:
            return None
        return max(self.stages.values(), key=lambda s: s.busy_seconds / s.workers).name

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "executor": self.executor, "stopped": self.stopped,
                "stages": {k: asdict(v) for k, v in self.stages.items()}}

    def __repr__(self) -> str:
        rows = [f"RunReport({self.executor}, {self.seconds:.3f} s"
                + (", stopped by StopFlow" if self.stopped else "") + ")"]
        width = max((len(n) for n in self.stages), default=5)
        rows.append(f"  {'stage':<{width}}  {'in':>9} {'out':>9} {'errors':>6} {'busy s':>8}")
        for s in self.stages.values():
            rows.append(f"  {s.name:<{width}}  {s.items_in:>9} {s.items_out:>9} "
                        f"{s.errors:>6} {s.busy_seconds:>8.3f}")
        return "\n".join(rows)
