"""Tables, targets, machine info, docs/benchmarks.md and the chart, for run.py."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = [
    "flowdsl",
    "minipipe",
    "pypeln",
    "mpire",
    "multiprocess",
    "dill",
    "ray",
    "numpy",
    "psutil",
    "matplotlib",
]
#: variants of one library that the chart shows side by side
SERIES_SUFFIXES = {"W2": ("w=1", "w=2"), "W6": ("N", "10N")}


# -- machine ---------------------------------------------------------------------------------
def machine_info(root: Path) -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": psutil.virtual_memory().total / 2**30,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": versions,
        "commit": _git(root),
        "load_before": os.getloadavg(),
    }


def _git(root: Path) -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "flowdsl"],
            cwd=root,
            text=True,
            capture_output=True,
            check=True,
        ).stdout.strip()
        return head + (" + uncommitted changes in flowdsl/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_text(m: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    text = (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gb']:.0f} GiB; {m['os']}; "
        f"{m['python']}\n{versions}\nflowdsl commit {m['commit']}; load average "
        f"{_load(m['load_before'])} before the run"
    )
    if "load_after" in m:
        text += f", {_load(m['load_after'])} after; the run took {m['seconds']:.0f} s"
    return text


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


# -- per-case figures ------------------------------------------------------------------------
def _cell(o: Any, metric: Any) -> str:
    if o.status != "ok":
        return o.status
    med, spread = o.median(metric.key), o.spread(metric.key)
    if med is None or spread is None:
        return "-"  # a case measuring another of the workload's metrics
    lo, hi = spread
    f = metric.fmt
    if len(o.results) == 1:
        return f.format(med * metric.scale)
    return (
        f"{f.format(med * metric.scale)} ({f.format(lo * metric.scale)}-"
        f"{f.format(hi * metric.scale)})"
    )


def _reference(o: Any, outcomes: list[Any]) -> Any:
    """The flowdsl case that ``o`` compares with: same variant if there is one."""
    by_label = {x.case.label: x for x in outcomes}
    suffix = o.case.label[len(o.case.library) :]
    ref = by_label.get("flowdsl" + suffix)
    if ref is None:
        ref = next((x for x in outcomes if x.case.library == "flowdsl"), None)
    return ref


def _ratio(o: Any, outcomes: list[Any], metric: Any) -> str:
    ref = _reference(o, outcomes)
    if ref is None:
        return "-"
    a, b = o.median(metric.key), ref.median(metric.key)
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.3g}x"


def _note(o: Any) -> str:
    notes = [o.case.note] if o.case.note else []
    if o.status != "ok":
        notes.append(o.error[:120])
    if o.leftovers:
        notes.append(f"left {o.leftovers} process(es) behind")
    return "; ".join(notes)


def _rows(workload: Any, outcomes: list[Any]) -> tuple[list[str], list[list[str]]]:
    primary = workload.metrics[0]
    head = [
        "case",
        *(m.label + " median (min-max)" for m in workload.metrics),
        f"{primary.label.split()[-1]} ÷ flowdsl",
        "note",
    ]
    rows = [
        [
            o.case.label,
            *(_cell(o, m) for m in workload.metrics),
            _ratio(o, outcomes, primary),
            _note(o),
        ]
        for o in outcomes
    ]
    return head, rows


def derived(workload: Any, outcomes: list[Any]) -> list[tuple[str, float | None]]:
    """W2: speed-up of 2 workers over 1; W6: growth of the peak from N to 10·N."""
    if workload.id not in SERIES_SUFFIXES:
        return []
    one, two = SERIES_SUFFIXES[workload.id]
    key = workload.metrics[0].key
    by_label = {o.case.label: o for o in outcomes}
    out = []
    for o in outcomes:
        if not o.case.label.endswith(" " + one):
            continue
        base = o.case.label[: -len(one) - 1]
        other = by_label.get(f"{base} {two}")
        a = o.median(key)
        b = other.median(key) if other else None
        out.append((base, b / a if a and b else None))
    return out


def _derived_text(workload: Any, outcomes: list[Any]) -> str:
    items = derived(workload, outcomes)
    if not items:
        return ""
    what = (
        "speed-up, 2 workers over 1"
        if workload.id == "W2"
        else "peak RSS at 10·N ÷ peak RSS at N (1.00 = flat)"
    )
    return f"{what}: " + ", ".join(
        f"{name} {'n/a' if v is None else f'{v:.2f}x'}" for name, v in items
    )


def text_table(workload: Any, outcomes: list[Any]) -> str:
    head, rows = _rows(workload, outcomes)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        f"{workload.id}: {workload.title}",
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    extra = _derived_text(workload, outcomes)
    return "\n".join(lines + ([extra] if extra else []))


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


# -- targets ---------------------------------------------------------------------------------
def evaluate_targets(outcomes: list[Any]) -> list[dict[str, Any]]:
    def med(wid: str, label: str, key: str) -> float | None:
        for o in outcomes:
            if o.workload.id == wid and o.case.label == label:
                return o.median(key)
        return None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def growth(wid: str, name: str) -> float | None:
        wl = next((o.workload for o in outcomes if o.workload.id == wid), None)
        if wl is None:
            return None
        mine = [o for o in outcomes if o.workload.id == wid]
        return dict(derived(wl, mine)).get(name)

    targets = []

    def target(
        name: str, goal: str, value: float | None, ok: Callable[[float], bool], fmt: str
    ) -> None:
        targets.append(
            {
                "name": name,
                "goal": goal,
                "measured": "n/a (not run or failed)" if value is None else fmt.format(value),
                "met": None if value is None else ok(value),
            }
        )

    w1 = med("W1", "flowdsl", "items_per_s")
    target(
        "W1 throughput",
        "≥ 1.5 M items/s",
        None if w1 is None else w1 / 1e6,
        lambda v: v >= 1.5,
        "{:.2f} M items/s",
    )
    target(
        "W1 vs minipipe",
        "≥ 100x",
        ratio(w1, med("W1", "minipipe", "items_per_s")),
        lambda v: v >= 100,
        "{:.0f}x",
    )
    target(
        "W1 vs mpire (defaults)",
        "≥ 10x",
        ratio(w1, med("W1", "mpire", "items_per_s")),
        lambda v: v >= 10,
        "{:.1f}x",
    )
    target(
        "W1 vs raw ceiling",
        "≥ 55 %",
        ratio(w1, med("W1", "raw", "items_per_s")),
        lambda v: v >= 0.55,
        "{:.1%}",
    )
    target(
        "W1 vs mpire chunk=256",
        "≥ 15x",
        ratio(w1, med("W1", "mpire chunk=256", "items_per_s")),
        lambda v: v >= 15,
        "{:.1f}x",
    )
    mpire_growth = growth("W2", "mpire")
    target(
        "W2 2 workers vs 1",
        "≥ 1.85x and ≥ mpire's" + ("" if mpire_growth is None else f" ({mpire_growth:.2f}x)"),
        growth("W2", "flowdsl"),
        lambda v: v >= 1.85 and (mpire_growth is None or v >= mpire_growth),
        "{:.2f}x",
    )
    w2 = med("W2", "flowdsl w=2", "items_per_s")
    target(
        "W2 w=2 vs raw w=2",
        "≥ 90 %",
        ratio(w2, med("W2", "raw w=2", "items_per_s")),
        lambda v: v >= 0.9,
        "{:.1%}",
    )
    target(
        "W2 w=2 vs mpire w=2",
        "≥ 1x",
        ratio(w2, med("W2", "mpire w=2", "items_per_s")),
        lambda v: v >= 1,
        "{:.2f}x",
    )
    for wid, suffix in (("W1", ""), ("W2", " w=1"), ("W2", " w=2")):
        by_hand = med(wid, "ray-by-hand" + suffix, "items_per_s")
        target(
            f"{wid}{suffix} on Ray vs an actor chain by hand",
            "≤ 1.5x its time",
            ratio(by_hand, med(wid, "flowdsl-ray" + suffix, "items_per_s")),
            lambda v: v <= 1.5,
            "{:.2f}x its time",
        )
    w3 = med("W3", "flowdsl", "mb_per_s")
    target(
        "W3 throughput",
        "≥ 3 GB/s",
        None if w3 is None else w3 / 1000,
        lambda v: v >= 3.0,
        "{:.2f} GB/s",
    )
    target(
        "W3 vs the shared-memory ceiling",
        "≥ 80 %",
        ratio(w3, med("W3", "raw /dev/shm", "mb_per_s")),
        lambda v: v >= 0.8,
        "{:.1%}",
    )
    target(
        "W3 vs pypeln",
        "≥ 7x",
        ratio(w3, med("W3", "pypeln", "mb_per_s")),
        lambda v: v >= 7,
        "{:.1f}x",
    )
    target(
        "W4 3-stage flow over 10 items",
        "≤ 0.019 s",
        med("W4", "flowdsl", "flow_s"),
        lambda v: v <= 0.019,
        "{:.3f} s",
    )
    target(
        'W4 python -c "import flowdsl"',
        "≤ 0.1 s",
        med("W4", "flowdsl", "import_s"),
        lambda v: v <= 0.1,
        "{:.3f} s",
    )
    target(
        "W5 p99 latency",
        "≤ 0.5 ms",
        med("W5", "flowdsl", "p99_ms"),
        lambda v: v <= 0.5,
        "{:.2f} ms",
    )
    target(
        "W6 memory flat",
        "peak(10·N) ≤ 1.1 x peak(N)",
        growth("W6", "flowdsl"),
        lambda v: v <= 1.1,
        "{:.2f}x",
    )
    w7 = med("W7", "flowdsl async", "requests_per_s")
    best = max(
        (
            v
            for v in (
                med("W7", "asyncio.gather", "requests_per_s"),
                med("W7", "ThreadPoolExecutor", "requests_per_s"),
            )
            if v
        ),
        default=None,
    )
    target(
        "W7 async vs the faster of gather and threads",
        "≤ 1.2x its time",
        ratio(best, w7),
        lambda v: v <= 1.2,
        "{:.2f}x its time",
    )
    for peer in ("pypeln task", "mpire threading"):
        target(
            f"W7 async vs {peer}",
            "faster (> 1x)",
            ratio(w7, med("W7", peer, "requests_per_s")),
            lambda v: v > 1,
            "{:.2f}x",
        )
    w7t = med("W7", "flowdsl threads", "requests_per_s")
    target(
        "W7 threads vs ThreadPoolExecutor",
        "≤ 1.2x its time",
        ratio(med("W7", "ThreadPoolExecutor", "requests_per_s"), w7t),
        lambda v: v <= 1.2,
        "{:.2f}x its time",
    )
    target(
        "W7 threads vs mpire threading",
        "faster (> 1x)",
        ratio(w7t, med("W7", "mpire threading", "requests_per_s")),
        lambda v: v > 1,
        "{:.2f}x",
    )
    target(
        "W8 batch=1024 vs per item",
        "≥ 10x",
        ratio(
            med("W8", "flowdsl batch=1024", "items_per_s"),
            med("W8", "flowdsl per item", "items_per_s"),
        ),
        lambda v: v >= 10,
        "{:.1f}x",
    )
    for o in outcomes:
        if o.workload.id == "W9" and o.case.library == "flowdsl":
            target(
                f"W9 {o.case.label.removeprefix('flowdsl ')}",
                "≤ 1.2x the ideal time",
                o.median("vs_ideal"),
                lambda v: v <= 1.2,
                "{:.2f}x",
            )
    dead = med("W10", "flowdsl 20 deaths", "flow_s")
    calm = med("W10", "flowdsl supervised", "flow_s")
    target(
        "W10 cost of one restart (fork)",
        "< 1 s",
        None if dead is None or calm is None else (dead - calm) / 20,
        lambda v: v < 1,
        "{:.3f} s",
    )
    for work, key in (("arrays", "mb_per_s"), ("ints", "items_per_s"), ("cpu", "items_per_s")):
        target(
            f"W11 {work} across nodes vs Ray by hand",
            "≥ 1.0x",
            ratio(med("W11", f"{work}: flowdsl-ray", key), med("W11", f"{work}: ray-by-hand", key)),
            lambda v: v >= 1.0,
            "{:.2f}x",
        )
    return targets


def _met(t: dict[str, Any]) -> str:
    return "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")


def targets_text(targets: list[dict[str, Any]]) -> str:
    width = max(len(t["name"]) for t in targets)
    lines = ["flowdsl against its targets (medians of this run):"]
    lines += [
        f"  {t['name']:<{width}}  {t['goal']:<27} {t['measured']:<24} {_met(t)}" for t in targets
    ]
    return "\n".join(lines)


# -- docs/benchmarks.md ----------------------------------------------------------------------
METHOD = """\
- **serial**: the same functions, chained by a generator in one process (no copy, no
  process): what parallelism has to beat.
- **raw** (the ceiling): hand-written `multiprocessing` code, one forked process per
  stage worker, stages joined by OS pipes (`multiprocessing.Pipe`), items moved in
  batches of 256 pickled with the standard `pickle`; no supervision, no error
  handling (`benchmarks/_raw.py`). Batches of 8 in W2 (1 ms items: 2 workers must
  share 1 000 items evenly), of 1 in W3 (256 arrays of 8 MB would make 2 GB
  messages) and in W5 (latency).
- **raw /dev/shm** (W3's shared-memory ceiling): the same three processes joined by
  two hops through segments under `/dev/shm` written by hand for 8 MB float arrays:
  four reused segments per hop, mapped before the fork; the producer copies an array
  into a free one and sends its index, the consumer reads it in place and hands the
  index back (`_raw.shm_reduce_in_sink`).
- **flowdsl**: decorated functions at their default options, `ProcessExecutor("fork")`,
  results iterated in the driver (`flow.iterate()`), or a sink and `flow.run()` in W3.
- **minipipe 0.1.9**: `PipeLine` of `Source`/`Transform`/`Sink`, default buffers (3
  items); it cannot hand items to the driver, so a sink process sums or counts and
  puts the result on a queue in `local_term`.
- **pypeln** (`pypeln.process`): chained `pl.process.map` stages at their defaults
  (unbounded queues, the source iterated by a thread of the driver), iterated in the
  driver.
- **mpire**: `WorkerPool(n_jobs=2).imap(f, stream)`, the stages fused into one
  function, the driver feeding and consuming. At its defaults an unsized stream is
  cut into chunks of 4 (with a warning); W1 also shows `chunk_size=256`. W5 uses
  `chunk_size=1`.
- **Pool**: `multiprocess.Pool(2).imap(f, stream)`, stages fused like mpire;
  `chunksize=256` in W1 and W6, its default (1) in W2 and W3, 1 in W5.
- **flowdsl-ray**: the same flow on `RayExecutor()`, a local Ray instance started in
  the case's process (`ray.init` before the clock starts: a few seconds that any Ray
  program pays once); starting and stopping the actors are timed.
- **ray-by-hand**: a Ray Core actor chain written by hand (`benchmarks/_ray.py`): a
  source actor handing out batches of 1024 (Ray Data's default batch size; 8 in W2),
  one actor per stage worker, each batch's ObjectRef passed from actor to actor, a
  stage's workers in turn, 4 batches in flight per worker, results fetched in
  order. The yardstick for flowdsl on Ray (target: within 1.5x its time).
- Every library uses the `fork` start method (Ray starts its own workers). Each run
  of each case is a fresh process (`benchmarks/_case.py`) with a hard timeout; times
  are end to end, from building the flow or pool to the last result with every
  worker joined. W1 and W6 check the sum, W2 and W3 the count, so lost items fail
  the case.
- W3's arrays are fresh views of one buffer: the source costs nothing, yet every
  array is a distinct object, so pickle cannot send an array met twice in a batch
  only once (with one array yielded again and again, batching libraries looked 20x
  faster than they are).
- Sizes differ per library (each case runs about 1-5 s); rates do not depend on them
  once start-up is small beside the run. W3: flowdsl sends these arrays one per
  message, through shared memory; 48 of them take it about 0.2 s, most of it
  start-up (each worker process imports numpy), so its case moves 480.
"""


FUSION = """\
Fusing adjacent single-worker stages into one process would save a hop's
serialisation, but it also gives up running those stages on separate cores at the
same time, and which effect wins depends on what the stages cost, which is not
known when the flow is built. `benchmarks/fusion.py` measures both sides on this
machine (idle, medians of 3):

| flow | separate stages | fused by hand | fused ÷ separate |
|---|---|---|---|
| tiny ints, +1 then *2 | 2.07 M items/s | 2.95 M items/s | 1.43x |
| two steps of 0.5 ms of Python | 1 876 items/s | 981 items/s | 0.52x |

Fusion would speed up W1 by 1.4x and halve the throughput of any flow whose
stages do real work, so flowdsl does not fuse stages behind the user's back. A
user who knows two steps are trivial fuses them in one function.
"""


def markdown(
    outcomes: list[Any],
    workloads: list[Any],
    targets: list[dict[str, Any]],
    machine: dict[str, Any],
    *,
    quick: bool,
    runs: int,
) -> str:
    parts = [
        "# Benchmarks",
        "",
        "<!-- Generated by `make bench` (benchmarks/run.py): edits are overwritten. -->",
        "",
        f"flowdsl side by side with serial Python, a hand-written raw ceiling, minipipe "
        f"0.1.9, pypeln, mpire and `multiprocess.Pool`, and on Ray beside an actor chain "
        f"written by hand, measured in one run on "
        f"{machine['date']}"
        + (
            " (**--quick smoke run: small sizes, 1 run; not representative**)."
            if quick
            else f". Cells show the median of {runs} runs (5 for W4) and their min-max; "
            "`÷ flowdsl` is the peer's median over flowdsl's (higher is better for "
            "rates, lower for times, latencies and memory)."
        ),
        "",
        "## Targets",
        "",
        _md_table(
            ["target", "goal", "flowdsl (median)", "status"],
            [[t["name"], t["goal"], t["measured"], _met(t)] for t in targets],
        ),
        "",
        "![benchmark chart](img/benchmarks.png)",
        "",
        "## Results",
    ]
    for wl in workloads:
        mine = [o for o in outcomes if o.workload is wl]
        if not mine:
            continue
        head, rows = _rows(wl, mine)
        paragraphs = [
            _paragraph(p) for p in (sys.modules[wl.module].__doc__ or "").strip().split("\n\n")
        ]
        if paragraphs and paragraphs[0].startswith(wl.id + ":"):
            first = paragraphs[0][len(wl.id) + 1 :].strip()
            paragraphs[0] = first[:1].upper() + first[1:]
        parts += ["", f"### {wl.id}: {wl.title}", ""]
        if wl.id in machine.get("loads", {}):
            parts += [
                f"*1-minute load average as it started: {machine['loads'][wl.id]:.2f} (2 cores).*",
                "",
            ]
        for p in paragraphs:
            parts += [p, ""]
        parts += [_md_table(head, rows)]
        extra = _derived_text(wl, mine)
        if extra:
            parts += ["", extra[0].upper() + extra[1:] + "."]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    parts += [
        "",
        "## Stage fusion: measured, not adopted",
        "",
        FUSION,
        "## Machine",
        "",
        f"- {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']:.0f} GiB RAM",
        f"- {machine['os']}, {machine['python']}",
        f"- {versions}",
        f"- flowdsl at commit {machine['commit']}",
        f"- load average (1/5/15 min) {_load(machine['load_before'])} before the run, "
        f"{_load(machine.get('load_after', (0, 0, 0)))} after; the whole run took "
        f"{machine.get('seconds', 0):.0f} s",
        "",
        "## How to reproduce",
        "",
        "```sh",
        "make bench                       # ~9 min: venv .bench-venv, all peers, all workloads",
        "make bench BENCH_ARGS=--no-ray   # ~5 min: without the Ray cases",
        "make bench BENCH_ARGS=--quick    # smoke run (~30 s), writes build/benchmarks-quick/",
        "make bench BENCH_ARGS='--only W1,W3 --runs 5'",
        "```",
        "",
        "Run it on an otherwise idle machine: the workloads use both cores, so any "
        "other load shows in the figures (see the load average above).",
        "",
        "## How each library is used",
        "",
        METHOD,
    ]
    return "\n".join(parts)


# -- the chart -------------------------------------------------------------------------------
def _panel(workload: Any, outcomes: list[Any]) -> tuple[list[str], list[tuple[str, list[Any]]]]:
    """(rows, [(series name, [(median, lo, hi) or status string per row])])."""
    if workload.id in SERIES_SUFFIXES:
        metric, suffixes = workload.metrics[0], SERIES_SUFFIXES[workload.id]
        rows: list[str] = []
        cells: dict[tuple[str, str], Any] = {}
        for o in outcomes:
            label, series = o.case.label, suffixes[0]
            for s in suffixes:
                if label.endswith(" " + s):
                    label, series = label[: -len(s) - 1], s
            if label not in rows:
                rows.append(label)
            cells[label, series] = _point(o, metric)
        return rows, [(s, [cells.get((r, s), "") for r in rows]) for s in suffixes]
    rows = [o.case.label for o in outcomes]
    metrics = workload.metrics[: workload.charted or None]
    return rows, [(m.label, [_point(o, m) for o in outcomes]) for m in metrics]


def _paragraph(text: str) -> str:
    """A docstring paragraph as markdown: one line, or one line per item of a list."""
    lines = [line.strip() for line in text.splitlines()]
    if not lines[0].startswith("- "):
        return " ".join(" ".join(lines).split())
    items: list[list[str]] = []
    for line in lines:
        if line.startswith("- ") or not items:
            items.append([])
        items[-1].append(line)
    return "\n".join(" ".join(item) for item in items)


def _short(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _point(o: Any, metric: Any) -> Any:
    if o.status != "ok":
        return o.status
    if o.spread(metric.key) is None:
        return ""  # a case measuring another of the workload's metrics
    lo, hi = o.spread(metric.key)
    return (o.median(metric.key) * metric.scale, lo * metric.scale, hi * metric.scale)


LOG_SCALE = {"W1", "W3", "W5"}
UNITS = {
    "W1": "M items/s (log)",
    "W2": "items/s",
    "W3": "MB/s (log)",
    "W4": "seconds",
    "W5": "ms (log)",
    "W6": "peak RSS, MB",
    "W7": "requests/s",
    "W8": "M items/s",
    "W9": "x the ideal time",
    "W10": "seconds",
}
TARGET_LINES = {
    "W1": (1.5, "target ≥ 1.5"),
    "W3": (3000, "target ≥ 3000"),
    "W4": (0.019, "target ≤ 0.019"),
    "W5": (0.5, "target p99 ≤ 0.5"),
    "W9": (1.2, "target ≤ 1.2"),
}
BETTER = {
    "W1": "higher",
    "W2": "higher",
    "W3": "higher",
    "W4": "lower",
    "W5": "lower",
    "W6": "lower",
    "W7": "higher",
    "W8": "higher",
    "W9": "lower",
    "W10": "lower",
}


def chart(outcomes: list[Any], workloads: list[Any], path: Path, machine: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.transforms import blended_transform_factory

    shown = [wl for wl in workloads if wl.charted >= 0 and any(o.workload is wl for o in outcomes)]
    if not shown:
        return  # nothing charted ran (--only W11)
    cols = 3 if len(shown) > 2 else len(shown)
    nrows = (len(shown) + cols - 1) // cols
    size = (max(10.0, 6.2 * cols), 4.6 * nrows)
    fig, axes = plt.subplots(nrows, cols, figsize=size, squeeze=False)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    for ax, wl in zip(axes.flat, shown, strict=False):
        mine = [o for o in outcomes if o.workload is wl]
        rows, series = _panel(wl, mine)
        extra = {}  # metrics the chart does not plot go into the bar labels
        for m in wl.metrics[wl.charted or len(wl.metrics) :]:
            extra.update(
                {
                    o.case.label: f"  ({m.label} {_short(o.median(m.key) * m.scale)})"
                    for o in mine
                    if o.status == "ok"
                }
            )
        height = 0.8 / len(series)
        values = [p[0] for _, pts in series for p in pts if isinstance(p, tuple)]
        for k, (name, pts) in enumerate(series):
            labelled = False
            for i, p in enumerate(pts):
                y = i + (k - (len(series) - 1) / 2) * height
                if isinstance(p, tuple):
                    med, lo, hi = p
                    ax.barh(
                        y,
                        med,
                        height * 0.95,
                        color=colors[k % 3],
                        label=None if labelled else name,
                        xerr=[[med - lo], [hi - med]],
                        error_kw={"lw": 0.8, "capsize": 2},
                    )
                    ax.text(
                        hi, y, " " + _short(med) + extra.get(rows[i], ""), va="center", fontsize=7
                    )
                    labelled = True
                elif p:  # failed or timeout: say so at the left edge
                    ax.text(
                        0.01,
                        y,
                        p,
                        va="center",
                        fontsize=8,
                        color="#c00000",
                        transform=blended_transform_factory(ax.transAxes, ax.transData),
                    )
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(rows, fontsize=9)
        for tick in ax.get_yticklabels():
            if tick.get_text().startswith("flowdsl"):
                tick.set_fontweight("bold")
        ax.invert_yaxis()
        if wl.id in LOG_SCALE and values and min(values) > 0:
            ax.set_xscale("log")
        if wl.id in TARGET_LINES:
            x, text = TARGET_LINES[wl.id]
            ax.axvline(x, color="#c00000", ls="--", lw=1, label=text)
        ax.margins(x=0.12)
        ax.set_xlabel(f"{UNITS[wl.id]} — {BETTER[wl.id]} is better", fontsize=9)
        ax.set_title(f"{wl.id}: {wl.title}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if len(series) > 1 or wl.id in TARGET_LINES:
            ax.legend(fontsize=7, loc="best", framealpha=0.9)
    for ax in list(axes.flat)[len(shown) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"flowdsl benchmarks — {machine['date']}, {machine['cores']} cores, "
        f"{machine['python']} (median of runs, bars: min-max)",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
