"""run(progress=True): live per-stage counters in a terminal, in logs and in Jupyter."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time

import pytest

from flowdsl import sink, source, transform
from flowdsl._progress import (
    Progress,
    _html_table,
    _NullView,
    _PlainView,
    _Row,
    _terminal_view,
    _TerminalView,
)
from flowdsl._report import StageStats

SCRIPT = textwrap.dedent("""
    import time
    from flowdsl import sink, source, transform

    @source
    def numbers(n):
        yield from range(n)

    @transform(workers=2)
    def slow(x):
        time.sleep(0.0005)  # makes the run long enough to be drawn a few times
        return x

    @sink
    def drop(x):
        pass

    if __name__ == "__main__":
        (numbers(2000) >> slow >> drop).run(progress=True, executor="{executor}")
""")


@source
def numbers(n):
    yield from range(n)


@transform
def double(x):
    return 2 * x


@sink
def drop(x):
    pass


# -- the display, in a terminal and in logs ----------------------------------------------


def run_in_pty(script, timeout=30):
    """Run ``script`` with stderr on a 100x30 pseudo-terminal; return what it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=max(0.1, deadline - time.monotonic())) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    return b"".join(chunks).decode()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("executor", ["process", "serial"])
def test_terminal_shows_live_counters_redrawn_in_place(executor, tmp_path):
    script = tmp_path / "progress_demo.py"
    script.write_text(SCRIPT.replace("{executor}", executor))
    shown = run_in_pty(script)
    assert "\x1b[A" in shown  # the lines are redrawn in place, not appended
    final = shown.replace("\r", "\n").splitlines()
    for line in ("numbers", "slow", "drop"):
        assert any(ln.startswith(line) for ln in final), shown
    assert any(ln.startswith("numbers") and "out 2,000" in ln for ln in final), shown
    assert any(ln.startswith("slow") and "in 2,000, out 2,000" in ln for ln in final), shown
    assert any(ln.startswith("drop") and "in 2,000" in ln for ln in final), shown
    drawn = [ln for ln in final if ln.startswith("slow")]
    assert len(drawn) > 2, f"drawn only {len(drawn)} time(s): {shown}"


@pytest.mark.timeout(60)
def test_without_a_terminal_only_the_final_figures_are_written(tmp_path):
    script = tmp_path / "progress_demo.py"
    script.write_text(SCRIPT.replace("{executor}", "process"))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=50
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "\x1b" not in result.stderr
    assert [ln.split()[0] for ln in lines] == ["numbers", "slow", "drop"], result.stderr
    assert "in 2,000, out 2,000" in lines[1]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", ["process", "serial"])
def test_progress_thread_runs_only_when_asked(executor):
    def threads():
        return [t.name for t in threading.enumerate() if t.name == "flowdsl-progress"]

    flow = numbers(10) >> double
    for _ in flow.iterate(executor=executor):
        assert threads() == []
    for _ in flow.iterate(executor=executor, progress=True):
        assert threads() == ["flowdsl-progress"]
    assert threads() == []  # stopped with the run


@pytest.mark.timeout(30)
def test_progress_stops_when_the_run_fails(capsys):
    @transform
    def boom(x):
        raise ValueError("no")

    with pytest.raises(Exception, match="no"):
        (numbers(5) >> boom >> drop).run(progress=True)
    assert "flowdsl-progress" not in [t.name for t in threading.enumerate()]
    assert "boom" in capsys.readouterr().err  # the figures at the failure are shown


# -- the parts ---------------------------------------------------------------------------


class FakeExecution:
    closed = False

    def __init__(self):
        self.figures = {"a": StageStats("a", "source"), "b": StageStats("b", "sink")}

    def stats(self):
        return self.figures

    def queue_fill(self):
        return {"b": 0.5}


class Recorder:
    interval = 0.2

    def __init__(self):
        self.draws, self.closed = [], False
        self.drawn = threading.Event()

    def draw(self, rows, final):
        self.draws.append(([r.summary() for r in rows], final))
        self.drawn.set()

    def close(self):
        self.closed = True


@pytest.mark.timeout(10)
def test_progress_draws_until_closed_then_draws_the_final_figures_once():
    execution, view = FakeExecution(), Recorder()
    progress = Progress(execution, view, interval=0.001)
    assert view.drawn.wait(5)
    execution.figures["a"].items_out = 7
    execution.figures["b"].items_in = 7
    progress.close()
    (last, final), *_ = reversed(view.draws)
    assert final and view.closed
    assert [d for d in view.draws if d[1]] == [(last, True)]
    assert last[0].endswith("out 7") and last[1].endswith("in 7, queue 50%")
    assert " items/s" in last[0]


def test_row_summary_shows_what_a_stage_kind_has():
    source_row = _Row(StageStats("s", "source", items_out=1234), 1500.0, None)
    sink_row = _Row(StageStats("k", "sink", items_in=3, errors=2), 2.5e6, 1.0)
    assert source_row.summary() == "     1.5k items/s, out 1,234"
    assert sink_row.summary() == "     2.5M items/s, in 3, errors 2, queue 100%"
    assert (source_row.done, sink_row.done) == (1234, 3)


def test_plain_view_writes_a_block_per_draw_at_its_own_pace():
    import io

    out = io.StringIO()
    view = _PlainView(out, every=3600)
    rows = [_Row(StageStats("stage", "transform", items_in=1, items_out=1), 0.0, None)]
    view.draw(rows, True)
    assert out.getvalue() == "stage          0 items/s, in 1, out 1\n"
    assert Progress(FakeExecution(), view).interval == 3600  # the loop waits that long


def test_the_view_suits_where_stderr_goes(monkeypatch):
    import io

    monkeypatch.setattr(sys, "stderr", None)
    assert isinstance(_terminal_view(), _NullView)  # pythonw: no stderr, no display
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(_terminal_view(), _PlainView)  # a pipe or file: plain blocks
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            monkeypatch.setattr(sys, "stderr", tty)
            assert isinstance(_terminal_view(), _PlainView)  # a terminal of no size
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
            assert isinstance(_terminal_view(), _TerminalView)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.timeout(30)
def test_a_display_that_cannot_start_still_stops_the_run(monkeypatch):
    import flowdsl.executors as executors

    def broken(execution):
        raise RuntimeError("no display")

    monkeypatch.setattr(executors, "Progress", broken)
    with pytest.raises(RuntimeError, match="no display"):
        (numbers(10**9) >> double).run(progress=True)
    # the autouse fixture fails the test if the workers were left running


@pytest.mark.timeout(30)
def test_a_display_that_fails_at_the_end_does_not_change_the_outcome(caplog):
    class Broken(Recorder):
        interval = 0.01

        def draw(self, rows, final):
            if final:
                raise BrokenPipeError("stderr went away")

    import flowdsl.executors as executors

    real = executors.Progress
    try:
        executors.Progress = lambda execution: real(execution, Broken())
        report = (numbers(10) >> double >> drop).run(progress=True)
    finally:
        executors.Progress = real
    assert report["drop"].items_in == 10
    assert "the progress display failed" in caplog.text


def test_html_table_escapes_names():
    rows = [_Row(StageStats("<b>", "transform", items_in=2, items_out=1), 10.0, 0.25)]
    table = _html_table(rows)
    assert "&lt;b&gt;" in table and "<b>" not in table
    assert "<td>25%</td>" in table


# -- in Jupyter --------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_notebook_shows_one_table_updated_in_place_without_warnings(tmp_path):
    import nbclient
    import nbformat

    code = SCRIPT.replace('if __name__ == "__main__":\n    ', "").replace("{executor}", "process")
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    client = nbclient.NotebookClient(
        book, kernel_name="python3", timeout=90, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = book.cells[0].outputs
    kinds = [o.output_type for o in outputs]
    assert kinds == ["display_data", "execute_result"], outputs  # no stderr, no warning
    assert "RunReport(process" in outputs[1].data["text/plain"]
    assert 'class="flowdsl-report"' in outputs[1].data["text/html"]  # the report, as a table
    table = outputs[0].data["text/html"]
    assert 'class="flowdsl-progress"' in table
    assert "<td>slow</td><td>2,000</td><td>2,000</td>" in table  # the final figures
    text = outputs[0].data["text/plain"]  # where HTML is not shown: the same figures
    assert "slow" in text and "in 2,000" in text and "display" not in text


def test_a_concurrent_stage_shows_its_calls_in_flight():
    row = _Row(
        StageStats("fetch", "transform", items_in=40, items_out=30, in_flight=10, max_in_flight=16),
        100.0,
        0.5,
    )
    assert row.summary() == "      100 items/s, in 40, out 30, in flight 10, queue 50%"
    page = _html_table([row])
    assert "<th>in flight</th>" in page and "<td>10</td>" in page
    plain = _Row(StageStats("sq", "transform", items_in=4), 1.0, None)
    assert "in flight" not in plain.summary()


def test_a_supervised_stage_shows_its_timeouts_and_replaced_workers():
    row = _Row(
        StageStats(
            "parse",
            "transform",
            items_in=9,
            items_out=7,
            errors=2,
            timeouts=1,
            restarts=1,
            replaced=3,
        ),
        10.0,
        None,
    )
    assert row.summary() == (
        "       10 items/s, in 9, out 7, errors 2, timeouts 1, restarts 1, replaced 3"
    )
