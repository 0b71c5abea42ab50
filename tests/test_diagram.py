"""Diagrams: the DOT structure of each way to wire stages, and the inline display."""

import re
import subprocess
import sys
from pathlib import Path

import graphviz
import pytest
from helpers import add, double, ignore, inc, numbers

from flowdsl import _diagram as diagram_module
from flowdsl import loop, merge, transform
from flowdsl._diagram import find_renderer, render_svg, to_text
from flowdsl._plan import compile_flow

TIMES = "\N{MULTIPLICATION SIGN}"
_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s\]]+)')
_NODE = re.compile(r"^\t(\w+) \[(.*)\]$")
_EDGE = re.compile(r"^\t(\w+) -> (\w+)(?: \[(.*)\])?$")


def _attrs(text):
    return {k: v.strip('"') for k, v in _ATTR.findall(text or "")}


def parse(dot):
    """(nodes: id -> attrs, edges: [(tail, head, attrs)]) of a Digraph's source."""
    nodes, edges = {}, []
    for line in dot.source.splitlines():
        if m := _EDGE.match(line):
            edges.append((m[1], m[2], _attrs(m[3])))
        elif (m := _NODE.match(line)) and m[1] not in ("node", "edge", "graph"):
            nodes[m[1]] = _attrs(m[2])
    return nodes, edges


def labels(nodes):
    return {nid: a["label"] for nid, a in nodes.items()}


def pairs(edges):
    return sorted((t, h) for t, h, _ in edges)


def test_chain_has_one_node_per_stage_shaped_by_kind():
    dot = (numbers >> inc >> ignore).diagram()
    assert isinstance(dot, graphviz.Digraph)
    nodes, edges = parse(dot)
    assert labels(nodes) == {"n0": "numbers", "n1": "inc", "n2": "ignore"}
    assert nodes["n0"]["shape"] == "invhouse"
    assert (nodes["n1"]["shape"], nodes["n1"]["style"]) == ("box", "rounded")
    assert nodes["n2"]["shape"] == "house"
    assert edges == [("n0", "n1", {}), ("n1", "n2", {})]


def test_fan_out_draws_one_edge_per_consumer():
    nodes, edges = parse((numbers >> [inc, double]).diagram())
    assert labels(nodes) == {"n0": "numbers", "n1": "inc", "n2": "double"}
    assert pairs(edges) == [("n0", "n1"), ("n0", "n2")]
    assert all(a == {} for _, _, a in edges)


def test_zip_edges_carry_their_input_port():
    nodes, edges = parse(([numbers, numbers >> double] >> add).diagram())
    by_label = {v: k for k, v in labels(nodes).items()}
    into_add = {t: a["label"] for t, h, a in edges if h == by_label["add"]}
    assert into_add == {by_label["numbers_0"]: "0", by_label["double"]: "1"}


def test_merge_shares_one_input_without_port_labels():
    nodes, edges = parse((merge(numbers >> inc, numbers >> double) >> ignore).diagram())
    by_label = {v: k for k, v in labels(nodes).items()}
    into_sink = [(t, a) for t, h, a in edges if h == by_label["ignore"]]
    assert sorted(t for t, _ in into_sink) == sorted([by_label["inc"], by_label["double"]])
    assert all(a == {} for _, a in into_sink)


def test_draw_streams_puts_a_stream_node_on_each_connection():
    flow = merge(numbers >> inc, numbers >> double) >> ignore
    nodes, edges = parse(flow.diagram(draw_streams=True))
    streams = {nid for nid in nodes if nid.startswith("s")}
    assert len(streams) == 3  # into inc, into double, and the shared one into ignore
    assert all(nodes[s]["shape"] == "box" for s in streams)
    assert all((t in streams) != (h in streams) for t, h, _ in edges)  # stage<->stream
    sink = next(k for k, v in labels(nodes).items() if v == "ignore")
    (shared,) = [t for t, h, _ in edges if h == sink]
    assert len([t for t, h, _ in edges if h == shared]) == 2  # the merge: two producers


def test_worker_count_shows_on_the_node():
    nodes, _ = parse((numbers >> inc.options(workers=3) >> ignore).diagram())
    assert nodes["n1"]["label"] == f"inc {TIMES}3"
    assert nodes["n0"]["label"] == "numbers"


def test_hidden_zip_helper_is_not_drawn():
    flow = [numbers, numbers] >> add.options(workers=2) >> ignore
    assert any(n.hidden for n in compile_flow(flow, want_results=False).nodes)
    for draw_streams in (False, True):
        nodes, edges = parse(flow.diagram(draw_streams=draw_streams))
        stages = {k: v for k, v in labels(nodes).items() if k.startswith("n")}
        assert sorted(stages.values()) == [f"add {TIMES}2", "ignore", "numbers_0", "numbers_1"]
        assert not any("zip" in v for v in labels(nodes).values())
        assert all(t in nodes and h in nodes for t, h, _ in edges)
        adder = next(k for k, v in stages.items() if v.startswith("add"))
        assert sorted(a["label"] for _, h, a in edges if h == adder) == ["0", "1"]


def test_loop_gate_is_a_diamond_with_a_dashed_back_edge():
    flow = numbers >> loop(inc >> double, until=lambda x: x > 100) >> ignore
    nodes, edges = parse(flow.diagram())
    by_label = {v: k for k, v in labels(nodes).items()}
    assert nodes[by_label["loop"]]["shape"] == "diamond"
    back = [(t, h, a) for t, h, a in edges if a.get("style") == "dashed"]
    assert back == [
        (by_label["double"], by_label["loop"], {"constraint": "false", "style": "dashed"})
    ]
    assert all("label" not in a for _, _, a in edges)  # the gate's inputs are not a zip
    nodes, edges = parse(flow.diagram(draw_streams=True))
    (feedback,) = [h for t, h, _ in edges if t == by_label["double"]]
    assert (by_label["double"], feedback, {"style": "dashed"}) in edges
    assert (feedback, by_label["loop"], {"constraint": "false", "style": "dashed"}) in edges


def _build_source():
    flow = merge([numbers, numbers >> inc.options(workers=2)] >> add, numbers) >> ignore
    return flow.diagram().source, flow.diagram(draw_streams=True).source


BUILD = """
import sys
sys.path.insert(0, {tests!r})
from test_diagram import _build_source
print(repr(_build_source()))
"""


def test_same_flow_gives_identical_source_in_every_build_and_process():
    first, second = _build_source(), _build_source()
    assert first == second
    code = BUILD.format(tests=str(Path(__file__).parent))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == repr(first)
    source = graphviz.Source(first[0])
    assert sorted(parse(source)[0]) == ["n0", "n1", "n2", "n3", "n4", "n5"]


def test_text_follows_chains():
    flow = numbers >> inc.options(workers=2) >> ignore
    assert to_text(compile_flow(flow, want_results=False)) == f"numbers -> inc ({TIMES}2) -> ignore"
    zipped = compile_flow([numbers, numbers] >> add, want_results=False)
    assert to_text(zipped).splitlines() == [
        "numbers_0 -> add [input 0]",
        "numbers_1 -> add [input 1]",
    ]
    looped = numbers >> loop(inc, until=lambda x: x > 3)
    assert "inc -> loop [back edge]" in to_text(compile_flow(looped, want_results=False))
    assert to_text(compile_flow(numbers._as_flow(), want_results=False)) == "numbers"


needs_renderer = pytest.mark.skipif(find_renderer() is None, reason="graphviz-pure is absent")


@needs_renderer
def test_mimebundle_has_svg_when_a_renderer_exists():
    flow = numbers >> transform(lambda x: x, name="<lambda>") >> ignore  # not an HTML label
    bundle = flow._repr_mimebundle_()
    assert bundle["image/svg+xml"].lstrip().startswith("<?xml")
    assert "&lt;lambda&gt;" in bundle["image/svg+xml"]
    assert bundle["text/plain"].endswith("numbers -> <lambda> -> ignore")


def _no_renderer(monkeypatch, tmp_path, exe=None):
    """No ``dot`` on PATH and no (or a broken) graphviz-pure."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(diagram_module, "find_renderer", lambda: exe)


def test_mimebundle_falls_back_to_text_without_renderer(monkeypatch, tmp_path):
    _no_renderer(monkeypatch, tmp_path)
    bundle = (numbers >> inc >> ignore)._repr_mimebundle_()
    assert bundle == {
        "text/plain": "<Flow of 3 stages: numbers, inc, ignore>\nnumbers -> inc -> ignore"
    }
    assert render_svg("digraph { a -> b }") is None


def test_mimebundle_falls_back_to_text_when_the_renderer_fails(monkeypatch, tmp_path):
    broken = tmp_path / "graphviz-pure"
    broken.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    broken.chmod(0o755)
    _no_renderer(monkeypatch, tmp_path, str(broken))
    bundle = (numbers >> inc)._repr_mimebundle_()
    assert list(bundle) == ["text/plain"]


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda: loop(inc, until=lambda x: x > 3), id="unfed-loop"),
        pytest.param(lambda: inc, id="no-upstream"),
    ],
)
def test_mimebundle_of_an_invalid_flow_describes_the_error(broken):
    bundle = broken()._repr_mimebundle_()
    assert list(bundle) == ["text/plain"]
    assert "invalid flow: GraphError:" in bundle["text/plain"]
    assert "'inc'" in bundle["text/plain"] or "'loop'" in bundle["text/plain"]


def test_mimebundle_never_raises_even_if_drawing_fails(monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(diagram_module, "_digraph", explode)
    bundle = (numbers >> inc)._repr_mimebundle_()
    assert list(bundle) == ["text/plain"]
    monkeypatch.setattr(diagram_module, "to_text", explode)
    assert (numbers >> inc)._repr_mimebundle_() == {
        "text/plain": "<Flow of 2 stages: numbers, inc>"
    }


class _Stream:
    """The little the planner reads from an explicit-API stream."""

    def __init__(self, name):
        self.name, self.buffer_size, self.seeds = name, 8, []


def test_cycle_through_explicit_streams_is_drawn_as_a_back_edge():
    from flowdsl._flow import Edge, Flow

    nodes = tuple(s._as_flow().nodes[0] for s in (numbers, inc, double))
    a, b = _Stream("a"), _Stream("b")
    src, body, back = nodes
    edges = (
        Edge(src, 0, body, 0, stream=a),
        Edge(body, 0, back, 0, stream=b),
        Edge(back, 0, body, 0, stream=a),
    )
    flow = Flow(nodes, edges, (), ())
    _, edges_drawn = parse(flow.diagram())
    assert edges_drawn == [
        ("n0", "n1", {}),
        ("n1", "n2", {}),
        ("n2", "n1", {"constraint": "false", "style": "dashed"}),
    ]
    nodes_s, edges_s = parse(flow.diagram(draw_streams=True))
    assert [nodes_s[s]["label"] for s in ("s0", "s1")] == ["a", "b"]
    assert sorted(edges_s) == [  # stream a carries both fresh and fed-back items
        ("n0", "s0", {}),
        ("n1", "s1", {}),
        ("n2", "s0", {"constraint": "false", "style": "dashed"}),
        ("s0", "n1", {}),
        ("s1", "n2", {}),
    ]


def test_diagram_object_displays_without_dot(monkeypatch):
    """flow.diagram() at the end of a notebook cell must never raise."""
    from flowdsl import _diagram

    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(_diagram, "find_renderer", lambda: None)
    bundle = (numbers(2) >> inc).diagram()._repr_mimebundle_()
    assert "digraph" in bundle["text/plain"] and "image/svg+xml" not in bundle
