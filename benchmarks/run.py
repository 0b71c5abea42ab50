"""The flowdsl benchmark suite: flowdsl side by side with serial Python, a
hand-written raw ceiling and its peers, on ten workloads.

    python benchmarks/run.py            # the full run (make bench): ~9 minutes
    python benchmarks/run.py --quick    # a smoke run: small sizes, one run each
    python benchmarks/run.py --only W1,W3 --runs 5
    python benchmarks/run.py --no-ray   # without the Ray cases of W1 and W2

Every run of every case is a fresh subprocess (benchmarks/_case.py) in its own
session, killed with its whole process group when it outlives its timeout, so a
peer that hangs or fails is reported as "timeout"/"failed" and the suite goes on.
The full run writes docs/benchmarks.md and docs/img/benchmarks.png; --quick
writes to build/benchmarks-quick/ instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _report
from _common import Case

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


@dataclass
class Metric:
    key: str  # key in the case's result dict
    label: str  # column title
    scale: float = 1.0  # shown value = raw value * scale
    fmt: str = "{:.0f}"
    higher_is_better: bool = True


@dataclass
class Workload:
    id: str
    module: str
    title: str
    metrics: list[Metric]
    runs: int | None = None  # None: the --runs value
    charted: int = 0  # how many metrics the chart shows (0: all; -1: not in the chart)


WORKLOADS = [
    Workload(
        "W1",
        "w1_tiny_ints",
        "tiny ints: source → +1 → *2 → sum",
        [Metric("items_per_s", "M items/s", 1e-6, "{:.3f}")],
    ),
    Workload(
        "W2",
        "w2_cpu_bound",
        "CPU-bound, ~1 ms of pure Python per item, 1 vs 2 workers",
        [Metric("items_per_s", "items/s")],
    ),
    Workload(
        "W3",
        "w3_arrays",
        "8 MB numpy arrays: source → identity → sink (2 hops)",
        [Metric("mb_per_s", "MB/s"), Metric("peak_mb", "peak RSS MB", 1, "{:.0f}", False)],
        charted=1,
    ),
    Workload(
        "W4",
        "w4_startup",
        "start-up: 3-stage flow over 10 items (fork); import time",
        [
            Metric("flow_s", "flow s", 1, "{:.3f}", False),
            Metric("import_s", "import s", 1, "{:.3f}", False),
        ],
        runs=5,
    ),
    Workload(
        "W5",
        "w5_latency",
        "latency through 3 stages at 200 items/s",
        [
            Metric("p99_ms", "p99 ms", 1, "{:.2f}", False),
            Metric("p50_ms", "p50 ms", 1, "{:.2f}", False),
        ],
    ),
    Workload(
        "W6",
        "w6_memory",
        "peak RSS of the process tree over a stream of N and 10·N ints",
        [Metric("peak_mb", "peak RSS MB", 1, "{:.0f}", False)],
    ),
    Workload(
        "W7",
        "w7_io_bound",
        "IO-bound: 2,000 requests of 20 ms, 64 in flight, then a parse",
        [Metric("requests_per_s", "requests/s", 1, "{:.0f}")],
    ),
    Workload(
        "W8",
        "w8_vectorised",
        "vectorised: numpy x * 2 + 1 over 1 M floats, per item and batched",
        [Metric("items_per_s", "M items/s", 1e-6, "{:.2f}")],
    ),
    Workload(
        "W9",
        "w9_slow_items",
        "slow items over many workers, default buffer",
        [
            Metric("vs_ideal", "x ideal time", 1, "{:.2f}", False),
            Metric("flow_s", "flow s", 1, "{:.3f}", False),
            Metric("busy_workers", "workers used", 1, "{:.0f}"),
        ],
        charted=1,
    ),
    Workload(
        "W10",
        "w10_restarts",
        "resilience: 1,000 items, a worker dying on 20 of them",
        [Metric("flow_s", "flow s", 1, "{:.3f}", False)],
    ),
    Workload(
        "W11",
        "w11_cluster",
        "a three-node Ray cluster: W3, W1 and W2 with their stages on different nodes",
        [Metric("mb_per_s", "MB/s"), Metric("items_per_s", "items/s")],
        runs=5,  # the cluster cases vary by about 10 % from run to run
        charted=-1,  # three works in two units: the table says it
    ),
]


@dataclass
class Outcome:
    """All runs of one case."""

    case: Case
    workload: Workload
    results: list[dict[str, float]] = field(default_factory=list)
    status: str = "ok"  # ok, failed, timeout
    error: str = ""
    leftovers: int = 0  # processes found still alive in the case's group after it ended

    def median(self, key: str) -> float | None:
        values = [r[key] for r in self.results if key in r]
        return statistics.median(values) if values and self.status == "ok" else None

    def spread(self, key: str) -> tuple[float, float] | None:
        values = [r[key] for r in self.results if key in r]
        return (min(values), max(values)) if values and self.status == "ok" else None


# -- running one case in a subprocess ------------------------------------------------------
def run_once(workload: Workload, case: Case) -> tuple[str, dict[str, Any] | str, int]:
    """(status, result dict or error text, leftover processes) of one run of ``case``."""
    cmd = [
        sys.executable,
        str(BENCH_DIR / "_case.py"),
        workload.module,
        case.function,
        json.dumps(case.kwargs),
    ]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        # files, not pipes: a worker left behind must not keep us waiting for EOF
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=BENCH_DIR, start_new_session=True)
        try:
            proc.wait(timeout=case.timeout)
            status = "ok" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
        leftovers = _kill_group(proc.pid)
        if status == "timeout":
            leftovers = 0  # its workers were still running, not left behind
        proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if status == "timeout":
        return status, f"killed after {case.timeout:.0f} s", leftovers
    if status == "failed":
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        return status, (lines[-1] if lines else f"exit code {proc.returncode}"), leftovers
    try:
        return "ok", json.loads(stdout.strip().splitlines()[-1]), leftovers
    except (ValueError, IndexError):
        return "failed", "no result printed", leftovers


def _kill_group(pgid: int) -> int:
    """SIGKILL every process still in the case's process group; return how many,
    not counting the case's own main process."""
    import psutil

    found = 0
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != pgid and os.getpgid(p.pid) == pgid:
                found += 1
        except (ProcessLookupError, PermissionError):
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    return found


def run_cases(workload: Workload, cases: list[Case], runs: int) -> list[Outcome]:
    """Run every case ``runs`` times, round-robin (run 1 of each case, then run 2, …)
    so that a burst of load from elsewhere spreads over all cases instead of
    skewing one.  A case that fails or hangs is not run again."""
    outcomes = [Outcome(case, workload) for case in cases]
    for i in range(runs):
        for outcome in outcomes:
            if outcome.status != "ok":
                continue
            case = outcome.case
            status, result, leftovers = run_once(workload, case)
            outcome.leftovers = max(outcome.leftovers, leftovers)
            if status != "ok":
                outcome.status, outcome.error = status, str(result)
                print(
                    f"  {workload.id} {case.label:<18} run {i + 1}/{runs}: {status.upper()}: "
                    f"{str(result)[:150]}",
                    flush=True,
                )
                continue
            assert isinstance(result, dict)
            outcome.results.append(result)
            shown = "  ".join(
                f"{m.label} {m.fmt.format(result[m.key] * m.scale)}"
                for m in workload.metrics
                if m.key in result  # (W11's cases each measure one of its metrics)
            )
            print(f"  {workload.id} {case.label:<18} run {i + 1}/{runs}: {shown}", flush=True)
    return outcomes


# -- the suite -----------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small sizes, one run per case, writes to build/",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per case (default 3; 1 with --quick)"
    )
    parser.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W3")
    parser.add_argument(
        "--no-ray",
        action="store_true",
        help="skip the Ray cases of W1 and W2 (each starts a Ray instance: "
        "about 3 minutes of the full run)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for benchmarks.md and img/benchmarks.png "
        "(default: docs/, or build/benchmarks-quick/ with --quick)",
    )
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    ray = not args.no_ray and importlib.util.find_spec("ray") is not None
    if not ray and not args.no_ray:
        print(
            "note: ray is not installed, the Ray cases are skipped (pip install 'flowdsl[ray]')",
            flush=True,
        )
    only = {w.strip().upper() for w in args.only.split(",") if w.strip()}
    out_dir = args.out or (ROOT / "build" / "benchmarks-quick" if args.quick else ROOT / "docs")

    started = time.perf_counter()
    machine = _report.machine_info(ROOT)
    print(_report.machine_text(machine), flush=True)
    if machine["load_before"][0] > 0.5:
        print(
            f"note: load average {machine['load_before'][0]:.2f} before the run: other "
            "processes compete for the 2 cores, figures will be noisier",
            flush=True,
        )

    machine["loads"] = {}  # 1-minute load average as each workload starts
    outcomes: list[Outcome] = []
    for workload in WORKLOADS:
        if only and workload.id not in only:
            continue
        module = importlib.import_module(workload.module)
        if workload.id == "W2":
            loops = module.calibrate()
            print(f"\n{workload.id}: burn() calibrated to {loops} loops ≈ 1 ms", flush=True)
            cases = module.cases(args.quick, loops=loops, ray=ray)
        elif workload.id == "W1":
            cases = module.cases(args.quick, ray=ray)
        elif workload.id == "W11":
            if not ray:
                continue
            cases = module.cases(
                args.quick, loops=importlib.import_module("w2_cpu_bound").calibrate()
            )
        else:
            cases = module.cases(args.quick)
        machine["loads"][workload.id] = os.getloadavg()[0]
        print(
            f"\n{workload.id}: {workload.title} (load average {machine['loads'][workload.id]:.2f})",
            flush=True,
        )
        n_runs = 1 if args.quick else (workload.runs or runs)
        done = run_cases(workload, cases, n_runs)
        outcomes += done
        print("\n" + _report.text_table(workload, done), flush=True)

    machine["load_after"] = os.getloadavg()
    machine["seconds"] = time.perf_counter() - started
    targets = _report.evaluate_targets(outcomes)
    print("\n" + _report.targets_text(targets), flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "img").mkdir(exist_ok=True)
    png = out_dir / "img" / "benchmarks.png"
    _report.chart(outcomes, WORKLOADS, png, machine)
    md = out_dir / "benchmarks.md"
    md.write_text(
        _report.markdown(outcomes, WORKLOADS, targets, machine, quick=args.quick, runs=runs)
    )
    print(f"\nwrote {_shown(md)} and {_shown(png)} in {machine['seconds']:.0f} s", flush=True)
    return 0


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
