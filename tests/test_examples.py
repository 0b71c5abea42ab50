"""The examples run: every script in examples/ and every notebook in examples/notebooks/."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(EXAMPLES.rglob("*.py"))
NOTEBOOKS = sorted((EXAMPLES / "notebooks").glob("*.ipynb"))

FIBONACCI = [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987]
FIB_LINES = "\n".join(map(str, FIBONACCI)) + "\n"
NEEDS_MATPLOTLIB = {"stateful_functors.py", "minipipe/stateful_functors.py"}

# What each script must print: (snippets of stdout, snippets of stderr).
EXPECTED = {
    "quickstart.py": (["last moving average:", "RunReport(process"], []),
    "typed_flows.py": (
        [
            "caught before running: to_fahrenheit >> shout: stage 'to_fahrenheit' "
            "makes float, but stage 'shout' takes str",
            "labels: ['68.0 F', '68.9 F', '69.8 F', '71.6 F', '72.5 F']",
            "property test passed",
        ],
        [],
    ),
    "toy_pipeline.py": (["x = 81", "square \N{MULTIPLICATION SIGN}2", "bottleneck:"], []),
    "pipesystem.py": (["[[0, 1, 2], [3, 4, 5]]\n", "[[0, 1, 2], [3, 4, 5], [6]]\n"], []),
    "model_search.py": (["best architecture: numpy-256"], []),
    "loops.py": (
        [
            FIB_LINES,
            "stopped by StopFlow: True",
            "9 reaches 1 after 19 steps",
            "sqrt(2) = 1.41421356237",
            "sqrt(1e+06) = 1000\n",
        ],
        [],
    ),
    "stateful_functors.py": ([FIB_LINES, "saved moving_average.png (100 steps)"], []),
    "finding_the_bottleneck.py": (
        ["bottleneck: fingerprint", "wrote report.gv"],
        ["fingerprint", "in 2,000, out 2,000"],
    ),
    "crawl.py": (
        [
            "crawled 200 pages in",
            "first: {'page': 0, 'title': 'Page 0'",
            "fetch had at most 32 requests in flight",
        ],
        [],
    ),
    "etl.py": (
        [
            "9 rows read, 7 kept",
            "'apples': {'quantity': 15, 'revenue': 7.65}",
            "2024-01-09,S2,pears,6,0.8,4.8",
        ],
        ["skipping north/2024-01.csv:4: bad number", "skipping south/2024-01.csv:3: quantity -1"],
    ),
    # its tests run here, once, under pytest: the suite's testpaths leave examples/ out
    "testing_pipelines.py": (
        [
            'index: {"bat": ["hats.txt"], "cat": ["cats.txt", "hats.txt"]',
            "rejected: latin1.txt: UnicodeDecodeError",
            " passed in ",
        ],
        [],
    ),
    "minipipe/stateful_functors.py": (
        [FIB_LINES],
        [
            "INFO - random_walk - End of stream",
            "INFO - random_walk - Local termination",
            "INFO - moving_avg - Local termination",
            "INFO - fib - Local termination",
        ],
    ),
    "minipipe/toy_pipeline.py": (
        [
            "x = 81",
            "serial loop:",
            "PipeLine, 2 processes on trans:",
            "trans \N{MULTIPLICATION SIGN}2",
        ],
        [],
    ),
    "minipipe/pipesystem.py": (
        [],
        ["INFO - batcher - End of stream", "INFO - print_gt_1 - Local termination"],
    ),
    "minipipe/model_search.py": (["[numpy-4]Epoch 9: AUC", "best architecture: numpy-256"], []),
}


def _env():
    env = {**os.environ, "MPLBACKEND": "Agg"}
    # Buffered output: a print() from a worker reaches the pipe in one write, so lines
    # of concurrent workers do not interleave.
    env.pop("PYTHONUNBUFFERED", None)
    # Scripts run as written, with the platform's start method (a script meant for
    # spawn needs an ``if __name__ == "__main__":`` guard, as with multiprocessing).
    env.pop("FLOWDSL_START_METHOD", None)
    return env


def _name(path):
    return path.relative_to(EXAMPLES).as_posix()


def test_every_script_has_expectations():
    assert sorted(_name(p) for p in SCRIPTS) == sorted(EXPECTED)


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_script_runs(script, tmp_path):
    name = _name(script)
    if name in NEEDS_MATPLOTLIB:
        pytest.importorskip("matplotlib")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stderr
    out, err = EXPECTED.get(name, ([], []))
    for snippet in out:
        assert snippet in result.stdout, f"{snippet!r} not in the output of {name}"
    for snippet in err:
        assert snippet in result.stderr, f"{snippet!r} not in the log of {name}"
    if name == "minipipe/stateful_functors.py":  # minipipe's page printed exactly this
        assert result.stdout.split() == [str(x) for x in FIBONACCI]
    if name == "stateful_functors.py":  # the plot, saved by the sink's worker
        assert (tmp_path / "moving_average.png").stat().st_size > 0
    if name == "testing_pipelines.py":
        assert re.search(r"^14 passed in ", result.stdout, re.MULTILINE), result.stdout
    if name.endswith("pipesystem.py"):  # 2 sources x 5 arrays x 2 batches, none lost
        sums = [ln for ln in result.stdout.splitlines() if ln.startswith(("1 <", "1 >"))]
        assert len(sums) == 20


# -- notebooks -------------------------------------------------------------------------


def _marked(notebook):
    if notebook.name == "stateful_functors.ipynb":
        # minipipe's page, verbatim: its term flag is a standard multiprocessing
        # Event held in a global, which reaches workers only by fork
        return pytest.param(notebook, marks=pytest.mark.fork_only("multiprocessing.Event global"))
    return notebook


@pytest.mark.timeout(120)
@pytest.mark.parametrize("notebook", [_marked(n) for n in NOTEBOOKS], ids=lambda p: p.name)
def test_notebook_runs(notebook, tmp_path, monkeypatch):
    import nbclient
    import nbformat

    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(notebook, as_version=4)
    client = nbclient.NotebookClient(
        book, kernel_name="python3", timeout=90, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    printed = "".join(
        o.get("text", "")
        for cell in book.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.output_type == "stream"
    )
    # What workers print reaches a notebook through ipykernel's forwarding of child
    # output, which does not wait for a process that exits at once: the scripts check
    # the printed numbers; here the records sent through flowdsl's own channel do.
    if notebook.name == "quickstart.ipynb":
        assert (
            "caught before any worker started: square >> shout: stage 'square' makes "
            "int, but stage 'shout' takes str" in printed
        )
        assert "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in printed
    if notebook.name == "stateful_functors.ipynb":
        assert "fib - Local termination" in printed
        assert (tmp_path / "moving_average.png").stat().st_size > 0
        assert "moving_avg - Local termination" in printed


def test_notebooks_are_stored_without_outputs():
    assert NOTEBOOKS, "no notebooks found"
    for notebook in NOTEBOOKS:
        cells = json.loads(notebook.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [], f"{notebook.name} has outputs"
                assert cell["execution_count"] is None, f"{notebook.name} has counts"


def test_examples_pass_ruff():
    # minipipe's "Stateful Functors" page, kept as it was written
    verbatim = [
        "examples/minipipe/stateful_functors.py",
        "examples/notebooks/stateful_functors.ipynb",
    ]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--extend-exclude",
            ",".join(verbatim),
            "examples",
            "tests/test_examples.py",
            "tests/test_docs.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 0, result.stdout + result.stderr
