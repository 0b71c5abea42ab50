"""RunReport: per-stage figures, where time went, the bottleneck, drawing and export."""

import asyncio
import dataclasses
import json
import pickle
import time

import pytest

from flowdsl import RunReport, StageStats, sink, source, transform
from flowdsl._report import FIGURES


@source
def numbers(n):
    yield from range(n)


@source
def slow_numbers(n):
    for i in range(n):
        time.sleep(0.002)  # the workload: a source slower than its consumers
        yield i


@transform(workers=2)
def double(x):
    return 2 * x


@sink(buffer=4)
def slow_sink(x):
    time.sleep(0.002)  # the workload: a sink slower than its producers


@sink
def drop(x):
    pass


def test_figures_are_the_stats_fields_workers_publish_in_order():
    names = [f.name for f in dataclasses.fields(StageStats)]
    assert tuple(names[3 : 3 + len(FIGURES)]) == FIGURES
    assert names[3 + len(FIGURES) :] == ["restarts", "replaced"]  # counted by the driver
    stats = StageStats("s", "transform")
    stats.add(1, 2, 3, 0.5, 0.25, 0.125)
    stats.add(1, 2, 3, 0.5, 0.25, 0.125)
    assert (stats.items_in, stats.items_out, stats.errors) == (2, 4, 6)
    assert (stats.busy_seconds, stats.blocked_in_seconds, stats.blocked_out_seconds) == (
        1.0,
        0.5,
        0.25,
    )


@pytest.mark.timeout(30)
def test_a_slow_sink_is_the_bottleneck_and_its_producers_wait_for_room():
    report = (numbers(150) >> double >> slow_sink).run()
    assert report.bottleneck == "slow_sink"
    assert report["slow_sink"].busy_seconds >= 150 * 0.002
    waited = report["numbers"].blocked_out_seconds + report["double"].blocked_out_seconds
    assert waited > 0.5 * report["slow_sink"].busy_seconds, report
    assert report["slow_sink"].blocked_out_seconds == 0  # a sink has no output


@pytest.mark.timeout(30)
def test_behind_a_slow_source_the_consumers_wait_for_input():
    report = (slow_numbers(150) >> double >> drop).run()
    assert report.bottleneck == "slow_numbers"
    assert report["drop"].blocked_in_seconds > 150 * 0.002 * 0.5, report
    assert report["slow_numbers"].blocked_in_seconds == 0  # a source has no input


def test_serial_runs_never_wait():
    report = (numbers(50) >> double >> drop).run(executor="serial")
    assert all(s.blocked_in_seconds == s.blocked_out_seconds == 0 for s in report.stages.values())
    assert report["drop"].items_in == 50


@pytest.mark.timeout(30)
def test_figures_are_summed_over_workers(executor):
    report = (numbers(300) >> double >> drop).run(executor=executor)
    assert (report["double"].workers, report["double"].items_in, report["double"].items_out) == (
        2,
        300,
        300,
    )


def test_repr_is_a_table_that_marks_the_bottleneck():
    report = (numbers(20) >> double >> drop).run(executor="serial")
    text = repr(report)
    assert text.startswith("RunReport(serial, ")
    header = text.splitlines()[1].split()
    assert header[:5] == ["stage", "in", "out", "errors", "busy"]
    assert f"{report.bottleneck} *" in text and text.endswith("* bottleneck")


def test_to_dict_is_plain_json_data():
    report = (numbers(20) >> double >> drop).run(executor="serial")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["bottleneck"] == report.bottleneck and data["executor"] == "serial"
    assert data["stages"]["double"]["items_out"] == 20
    assert set(data["stages"]["double"]) >= set(FIGURES)


def test_diagram_labels_each_stage_with_its_figures_and_fills_the_bottleneck():
    report = (numbers(20) >> double >> drop).run(executor="serial")
    report.stages["double"].busy_seconds = 99.0  # make the bottleneck certain
    source = report.diagram().source
    assert 'label="double \N{MULTIPLICATION SIGN}2\\nin 20  out 20\\nbusy 99.00 s' in source
    bottleneck = next(ln for ln in source.splitlines() if "double" in ln)
    assert "fillcolor" in bottleneck
    assert sum("fillcolor" in ln for ln in source.splitlines()) == 1


def test_a_pickled_report_keeps_its_figures_but_not_the_flow():
    report = (numbers(20) >> double >> drop).run(executor="serial")
    copy = pickle.loads(pickle.dumps(report))
    assert copy == report and copy.stages["drop"].items_in == 20
    with pytest.raises(ValueError, match="no flow to draw"):
        copy.diagram()


def test_a_report_built_by_hand_works():
    report = RunReport({"a": StageStats("a", "source", items_out=3, busy_seconds=0.5)}, seconds=1.0)
    assert report.bottleneck == "a" and "a" in repr(report)
    assert RunReport().bottleneck is None


def test_no_stage_is_the_bottleneck_of_a_run_where_none_was_busy():
    report = RunReport({n: StageStats(n, "transform", items_in=3) for n in "ab"}, seconds=1.0)
    assert report.bottleneck is None
    assert report.to_dict()["bottleneck"] is None
    assert "*" not in repr(report) and "bottleneck" not in report._repr_html_()


def test_a_report_shows_itself_as_a_table_in_a_notebook():
    report = (numbers(20) >> double >> drop).run(executor="serial")
    page = report._repr_html_()
    assert page.count("<tr>") == 4  # the header, then one row per stage
    for column in ("busy %", "wait in s", "wait out s"):
        assert f"<th>{column}</th>" in page
    assert "<td>double" in page and "<td>20</td>" in page


def test_items_a_stage_never_used_are_listed_under_the_table():
    report = RunReport(
        {
            "pair": StageStats("pair", "transform", items_in=10, left_over=990),
            "cut": StageStats("cut", "transform", dropped=5),
            "ok": StageStats("ok", "sink", items_in=10),
        },
        seconds=1.0,
    )
    lines = repr(report).splitlines()
    assert lines[-2:] == [
        "  pair: 990 left over (never paired)",
        "  cut: 5 dropped (arrived after it stopped)",
    ]
    page = report._repr_html_()
    assert "<p>pair: 990 left over (never paired)</p>" in page and "ok:" not in page
    assert report.to_dict()["stages"]["cut"]["dropped"] == 5


def test_a_concurrent_stage_is_busy_by_the_share_of_its_places_in_use():
    # fetch overlaps its calls (30 ms each, one item every 20 ms) yet uses few of
    # its 8 places: parse, one worker busy all the time, is the bottleneck
    @transform
    def parse(x):
        time.sleep(0.02)
        return x

    @transform(concurrency=8)
    async def fetch(x):
        await asyncio.sleep(0.03)
        return x

    report = (numbers(60) >> parse >> fetch >> drop).run()
    assert report.bottleneck == "parse"
    share = report["fetch"].busy_seconds / report.seconds
    assert 0.05 < share < 0.5  # 60 calls x 30 ms / 8 places, over 1.2 s or more
