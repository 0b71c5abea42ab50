"""The ``flowdsl`` command line, run as ``python -m flowdsl`` in a subprocess
against small modules written to a temporary directory."""

import json
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import psutil
import pytest

import flowdsl
from flowdsl import _cli
from flowdsl._diagram import find_renderer

FLOWS = """
import itertools
import os
import threading
import time

from flowdsl import sink, source, transform

@source
def numbers(n=5):
    yield from range(n)

@source
def mixed():
    yield from ["plain text", (1, "a"), {1, 2}]

@source
def ticks():                    # endless, slow enough to interrupt
    for i in itertools.count():
        time.sleep(0.02)
        yield i

@source
def never():                    # waits for an event nobody sets
    threading.Event().wait()
    yield 0

@transform(workers=2)
def square(x):
    return x * x

@transform
def boom(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x

@transform
def die(x):
    os._exit(3)

@sink
def keep(x):
    with open("kept.txt", "a") as f:
        f.write(f"{x}\\n")

pipeline = numbers >> square >> keep
squares = numbers >> square
mixture = mixed >> transform(lambda x: x)
failing = numbers >> boom
dying = numbers >> die
endless = ticks >> transform(lambda x: x)
blocked = never >> keep
answer = 42

def make():
    return numbers(3) >> square

def needs(n):
    return numbers(n)

def not_a_factory():
    return 42

class Holder:
    flow = numbers(2) >> square
"""

BROKEN = """
x = 1
raise RuntimeError("cannot build")
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A directory holding flows.py and broken.py, the working directory of the runs."""
    path = tmp_path_factory.mktemp("cli")
    (path / "flows.py").write_text(textwrap.dedent(FLOWS))
    (path / "broken.py").write_text(BROKEN)
    (path / "elsewhere").mkdir()
    return path


def cli(cwd, *args, timeout=30):
    """Run ``python -m flowdsl *args`` in ``cwd``; return the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "flowdsl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(cwd, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "flowdsl", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- running -------------------------------------------------------------------------


def test_run_with_a_sink_prints_the_report_to_stderr(work):
    (work / "kept.txt").unlink(missing_ok=True)
    done = cli(work, "run", "flows:pipeline")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("RunReport(process, ")
    assert re.search(r"^\s+keep( \*)?\s+5\s+0\s+0\s", done.stderr, re.MULTILINE)
    assert sorted(map(int, (work / "kept.txt").read_text().split())) == [0, 1, 4, 9, 16]


def test_progress_draws_the_stages_before_the_report(work):
    done = cli(work, "run", "flows:pipeline", "--progress")
    assert done.returncode == 0, done.stderr
    drawn, report = done.stderr.split("RunReport(", 1)
    assert re.search(r"^keep\s.*, in 5$", drawn, re.MULTILINE), done.stderr
    assert "keep" in report


def test_run_streams_results_one_per_line(work):
    done = cli(work, "run", "flows:squares")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n1\n4\n9\n16\n"
    assert "RunReport(process" in done.stderr


def test_strings_print_as_they_are_other_results_as_their_repr(work):
    done = cli(work, "run", "flows:mixture", "--executor", "serial")
    assert done.stdout.splitlines() == ["plain text", "(1, 'a')", "{1, 2}"]


def test_factory_target_is_called(work):
    done = cli(work, "run", "flows:make")
    assert (done.returncode, done.stdout) == (0, "0\n1\n4\n")


def test_file_path_target_with_a_dotted_attribute(work):
    done = cli(work / "elsewhere", "run", f"{work / 'flows.py'}:Holder.flow")
    assert (done.returncode, done.stdout) == (0, "0\n1\n"), done.stderr


@pytest.mark.timeout(30)
def test_file_target_works_in_spawned_workers(work):
    done = cli(work / "elsewhere", "run", "../flows.py:make", "--start-method", "spawn")
    assert (done.returncode, done.stdout) == (0, "0\n1\n4\n"), done.stderr


def test_json_writes_results_then_the_report_as_json_lines(work):
    done = cli(work, "run", "flows:mixture", "--json", "--executor", "serial")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[:3] == [{"result": "plain text"}, {"result": [1, "a"]}, {"result": "{1, 2}"}]
    assert list(lines[3]) == ["report"] and len(lines) == 4
    assert lines[3]["report"]["stages"]["mixed"]["items_out"] == 3
    assert done.stderr == ""


def test_executor_serial_runs_in_the_cli_process(work):
    done = cli(work, "run", "flows:squares", "--executor", "serial")
    assert (done.returncode, done.stdout) == (0, "0\n1\n4\n9\n16\n")
    assert done.stderr.startswith("RunReport(serial, ")


def test_log_level_shows_records_on_stderr(work):
    quiet = cli(work, "run", "flows:squares", "--executor", "serial")
    loud = cli(work, "run", "flows:squares", "--executor", "serial", "--log-level", "info")
    assert "End of stream" not in quiet.stderr
    assert "INFO flowdsl numbers[0]: End of stream" in loud.stderr


def test_options_reach_the_run(work, monkeypatch):
    """--progress, --timeout and --start-method are handed to the run as options."""
    seen = {}

    class Finished:
        report = flowdsl.RunReport(executor="fake")

        def __enter__(self):
            return self

        def __iter__(self):
            return iter(())

        def __exit__(self, *exc):
            return None

    def fake_execute(flow, **options):
        seen.update(options)
        return Finished()

    monkeypatch.setattr(_cli, "execute", fake_execute)
    monkeypatch.setattr(_cli, "_configure_logging", lambda level: None)
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        assert (
            _cli.main(
                [
                    "run",
                    "flows:squares",
                    "--progress",
                    "--timeout",
                    "2.5",
                    "--start-method",
                    "spawn",
                ]
            )
            == 0
        )
    finally:
        sys.modules.pop("flows", None)
    assert seen["progress"] is True and seen["timeout"] == 2.5
    assert seen["executor"].start_method == "spawn"


# -- exit statuses -------------------------------------------------------------------


def test_a_failing_stage_exits_1_with_a_one_paragraph_message(work):
    done = cli(work, "run", "flows:failing")
    assert done.returncode == 1
    (message,) = done.stderr.splitlines()
    assert message.startswith(
        "flowdsl: error: stage 'boom' failed in worker 0 on item 3: ValueError: bad item 3"
    )
    assert "--traceback" in message


def test_traceback_shows_the_workers_traceback(work):
    done = cli(work, "run", "flows:failing", "--traceback")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and 'raise ValueError(f"bad item {x}")' in done.stderr


def test_a_dead_worker_exits_1(work):
    done = cli(work, "run", "flows:dying")
    assert done.returncode == 1
    assert "worker 0 of stage 'die' died without reporting: it exited with code 3" in done.stderr


def test_user_code_raising_on_import_exits_1(work):
    done = cli(work, "run", "broken:flow")
    assert done.returncode == 1
    assert (
        f"importing module 'broken' raised RuntimeError: cannot build at {work / 'broken.py'}:3"
    ) in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "flows"], "TARGET must be MODULE:ATTR or FILE.py:ATTR, got 'flows'"),
        (["run", "nosuchmodule:flow"], "cannot find module 'nosuchmodule'"),
        (["run", "missing.py:flow"], "no file 'missing.py'"),
        (
            ["run", "flows:nope"],
            "has no attribute 'nope'; flows defined at its top level: "
            "blocked, dying, endless, failing, mixture, pipeline, squares",
        ),
        (["run", "flows:Holder.nope"], "flows:Holder has no attribute 'nope'"),
        (["run", "flows:answer"], "'flows:answer' is 42 (of type int), not a flow"),
        (["run", "flows:needs"], "'flows:needs' cannot be called without arguments"),
        (["run", "flows:not_a_factory"], "'flows:not_a_factory' returned 42"),
        (
            ["run", "flows:squares", "--executor", "serial", "--start-method", "spawn"],
            "--start-method applies to the process executor only",
        ),
        (["run", "flows:squares", "--executor", "threads"], "invalid choice: 'threads'"),
        (["run", "flows:squares", "--timeout", "0"], "expected a positive number of seconds"),
        (["diagram", "flows:pipeline", "-o", "flow.txt"], "cannot tell the format of 'flow.txt'"),
        ([], "the following arguments are required: COMMAND"),
    ],
    ids=[
        "no-colon",
        "no-module",
        "no-file",
        "no-attribute",
        "no-nested-attribute",
        "not-a-flow",
        "factory-needs-arguments",
        "factory-returns-no-flow",
        "start-method-with-serial",
        "bad-executor",
        "bad-timeout",
        "diagram-extension",
        "no-command",
    ],
)
def test_usage_errors_exit_2(work, args, message):
    done = cli(work, *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""


@pytest.mark.timeout(20)
def test_timeout_exits_124(work):
    done = cli(work, "run", "flows:blocked", "--timeout", "0.5")
    assert done.returncode == 124
    assert "flowdsl: error: the flow did not finish within 0.5 s (--timeout)" in done.stderr


@pytest.mark.timeout(20)
def test_ctrl_c_exits_130_and_stops_the_workers(work):
    with start(work, "run", "flows:endless") as proc:
        try:
            assert proc.stdout.readline() == "0\n"
            workers = psutil.Process(proc.pid).children(recursive=True)
            assert workers
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
        finally:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip() == "flowdsl: error: interrupted"
    _, alive = psutil.wait_procs(workers, timeout=2)
    assert not alive


@pytest.mark.timeout(20)
def test_closing_stdout_early_exits_141_quietly(work):
    with start(work, "run", "flows:endless", "--executor", "serial") as proc:
        try:
            assert proc.stdout.readline() == "0\n"
            proc.stdout.close()
            err = proc.stderr.read()
            proc.wait(timeout=10)
        finally:
            proc.kill()
    assert proc.returncode == 141
    assert err == ""


def test_version():
    done = subprocess.run(
        [sys.executable, "-m", "flowdsl", "--version"], capture_output=True, text=True, timeout=30
    )
    assert (done.returncode, done.stdout) == (0, f"flowdsl {flowdsl.__version__}\n")


def test_console_script_is_registered():
    (script,) = entry_points(group="console_scripts", name="flowdsl")
    assert script.value == "flowdsl._cli:main"


# -- diagrams --------------------------------------------------------------------------

DOT = ("digraph flow {", "n0 [label=numbers shape=invhouse]", "n0 -> n1", "n1 -> n2")


def test_diagram_prints_dot_to_stdout(work):
    done = cli(work, "diagram", "flows:pipeline")
    assert done.returncode == 0, done.stderr
    assert all(line in done.stdout for line in DOT)


@pytest.mark.parametrize("name", ["flow.dot", "flow.gv"])
def test_diagram_writes_dot_source(work, name):
    done = cli(work, "diagram", "flows:pipeline", "-o", name)
    assert (done.returncode, done.stdout) == (0, "")
    assert (work / name).read_text() == cli(work, "diagram", "flows:pipeline").stdout


@pytest.mark.skipif(find_renderer() is None and shutil.which("dot") is None, reason="no renderer")
def test_diagram_writes_svg(work):
    done = cli(work, "diagram", "flows:make", "-o", "flow.svg")
    assert done.returncode == 0, done.stderr
    svg = (work / "flow.svg").read_text()
    assert "<svg" in svg and "numbers" in svg and "square" in svg


@pytest.mark.skipif(shutil.which("dot") is not None, reason="Graphviz can render pdf")
def test_diagram_that_cannot_be_rendered_exits_1(work):
    done = cli(work, "diagram", "flows:make", "-o", "flow.pdf")
    assert done.returncode == 1
    assert "cannot render 'flow.pdf'" in done.stderr and "-o flow.dot" in done.stderr
    assert not (work / "flow.pdf").exists()
