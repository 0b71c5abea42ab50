"""Diagrams of flows: a ``graphviz.Digraph``, SVG for Jupyter, or plain text.

All three read the compiled plan, so a diagram shows what executors run: one box
per stage (with its worker count), one arrow per connection.  Planner-made helper
stages (the pairing stage in front of a zip with several workers) are not drawn;
their inputs go straight to the stage they serve.  Node ids come from plan
indices (``n0``, ``n1``, streams ``s0``...), so the same flow gives the same DOT
source in every run and every process.

Rendering needs a Graphviz ``dot`` program.  Without one we fall back to the
``graphviz-pure`` executable (the ``render`` extra), and without that to text: the
inline display of a flow never raises.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._plan import DRIVER, NodeSpec, Plan, compile_flow

if TYPE_CHECKING:
    import graphviz

    from ._flow import Flow

__all__ = ["diagram", "mimebundle", "render", "render_svg", "to_text"]

logger = logging.getLogger("flowdsl")

RENDER_TIMEOUT = 20.0  # seconds for the fallback renderer; a diagram is small
PURE = "graphviz-pure"
TIMES = "\N{MULTIPLICATION SIGN}"  # "square", then this sign and the worker count

_SHAPES: dict[str, dict[str, str]] = {
    "source": {"shape": "invhouse"},
    "transform": {"shape": "box", "style": "rounded"},
    "sink": {"shape": "house"},
    "loop": {"shape": "diamond"},
}
_STREAM_STYLE = {
    "shape": "box",
    "style": "filled",
    "fillcolor": "lightgrey",
    "fontsize": "9",
    "height": "0.2",
}
_HIGHLIGHT = {"style": "filled,rounded", "fillcolor": "#ffd8a8", "penwidth": "2"}
_BACK_STYLE = {"style": "dashed", "constraint": "false"}


@dataclass(frozen=True)
class Link:
    """One drawn arrow: ``src`` feeds input ``port`` of ``dst`` through ``channel``.

    ``back`` marks the feedback of a cycle, drawn dashed and left out of ranking so
    that the rest of the flow still reads top to bottom.
    """

    src: int
    dst: int
    port: int
    channel: int
    back: bool = False


# -- the graph, as the diagram sees it ---------------------------------------------


def _visible(plan: Plan) -> list[NodeSpec]:
    return [n for n in plan.nodes if not n.hidden]


def _consumers(plan: Plan, consumer: tuple[int, int]) -> list[tuple[int, int]]:
    """Where an item sent to ``consumer`` really goes: through hidden helpers to the
    visible stages, keeping the port it entered the helper by (its zip position)."""
    node, port = consumer
    if node == DRIVER:
        return []
    spec = plan.nodes[node]
    if not spec.hidden:
        return [consumer]
    return [
        (real, port)
        for out in spec.outputs
        for c in out
        for dst in plan.channels[c].consumers
        for real, _ in _consumers(plan, dst)
    ]


def links(plan: Plan) -> list[Link]:
    """Every visible producer-to-consumer arrow, by producer then channel (plan
    order, so deterministic, and reading order for text)."""
    found = []
    for ch in plan.channels:
        for src, _ in ch.producers:
            if plan.nodes[src].hidden:
                continue  # its inputs are drawn straight into the real consumer
            for consumer in ch.consumers:
                found += [Link(src, dst, port, ch.id) for dst, port in _consumers(plan, consumer)]
    found.sort(key=lambda lk: lk.src)  # stable: channel order within a producer
    return _mark_back(plan, found)


def _mark_back(plan: Plan, found: list[Link]) -> list[Link]:
    """Mark loop feedback, and any other arrow closing a cycle (explicit streams)."""
    feedback = {n.loop.feedback for n in plan.nodes if n.loop is not None}
    closing = _cycle_closers(
        [lk for lk in found if lk.channel not in feedback], [n.id for n in _visible(plan)]
    )
    return [
        Link(lk.src, lk.dst, lk.port, lk.channel, back=lk.channel in feedback or lk in closing)
        for lk in found
    ]


def _cycle_closers(found: list[Link], order: list[int]) -> set[Link]:
    """The arrows a depth-first search (in plan order) finds pointing back up its
    path: removing them leaves an acyclic graph."""
    succ: dict[int, list[Link]] = {n: [] for n in order}
    for lk in found:
        succ[lk.src].append(lk)
    state: dict[int, int] = {}  # 1 on the path, 2 done
    closers: set[Link] = set()
    for root in order:
        if root in state:
            continue
        state[root] = 1
        stack = [iter(succ[root])]
        path = [root]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt.dst) == 1:
                closers.add(nxt)
            elif nxt.dst not in state:
                state[nxt.dst] = 1
                path.append(nxt.dst)
                stack.append(iter(succ[nxt.dst]))
    return closers


def _zipped(found: list[Link]) -> set[int]:
    """Stages fed by more than one input port (whose arrows carry the port number)."""
    ports: dict[int, set[int]] = {}
    for lk in found:
        ports.setdefault(lk.dst, set()).add(lk.port)
    return {n for n, p in ports.items() if len(p) > 1}


def _label(spec: NodeSpec) -> str:
    return spec.name if spec.workers <= 1 else f"{spec.name} {TIMES}{spec.workers}"


# -- graphviz ----------------------------------------------------------------------


def diagram(flow: Flow, draw_streams: bool = False) -> graphviz.Digraph:
    """A ``graphviz.Digraph`` of ``flow``; raises :class:`GraphError` if it is invalid.

    With ``draw_streams`` every channel is a small grey box between its producers
    and consumers, which shows where stages share a queue (merge, competition).
    """
    return _digraph(compile_flow(flow, want_results=False), draw_streams)


def annotated(plan: Plan, notes: dict[str, str], highlight: str | None) -> graphviz.Digraph:
    """The diagram of ``plan`` with ``notes[name]`` under each stage's label and
    the stage named ``highlight`` filled (a run report's figures and bottleneck)."""
    return _digraph(plan, False, notes, highlight)


def _digraph(
    plan: Plan,
    draw_streams: bool,
    notes: dict[str, str] | None = None,
    highlight: str | None = None,
) -> graphviz.Digraph:
    import graphviz

    found = links(plan)
    dot = _diagram_class()(
        "flow",
        node_attr={"fontname": "Helvetica", "fontsize": "11"},
        edge_attr={"fontname": "Helvetica", "fontsize": "9"},
    )
    for spec in _visible(plan):
        lines = [_label(spec), *(notes or {}).get(spec.name, "").splitlines()]
        attrs = dict(_SHAPES.get(spec.kind, {"shape": "ellipse"}))
        if spec.name == highlight:
            attrs.update(_HIGHLIGHT)
        label = "\\n".join(line.replace("\\", "\\\\") for line in lines)
        dot.node(f"n{spec.id}", graphviz.nohtml(label), **attrs)
    if draw_streams:
        _draw_with_streams(dot, plan, found)
    else:
        _draw_direct(dot, plan, found)
    return dot


def _edge_attrs(plan: Plan, lk: Link, zipped: set[int]) -> dict[str, str]:
    attrs = dict(_BACK_STYLE) if lk.back else {}
    if lk.dst in zipped and plan.nodes[lk.dst].kind != "loop":
        attrs["label"] = str(lk.port)
    return attrs


def _draw_direct(dot: graphviz.Digraph, plan: Plan, found: list[Link]) -> None:
    zipped = _zipped(found)
    for lk in found:
        dot.edge(f"n{lk.src}", f"n{lk.dst}", **_edge_attrs(plan, lk, zipped))


def _draw_with_streams(dot: graphviz.Digraph, plan: Plan, found: list[Link]) -> None:
    """Producer -> stream box -> consumer, each arrow drawn once (a channel with n
    producers and m consumers makes n * m links), the back ones dashed."""
    import graphviz

    zipped = _zipped(found)
    heads, tails = _stream_arrows(found)
    for ch in _unique(lk.channel for lk in found):
        dot.node(f"s{ch}", graphviz.escape(plan.channels[ch].name), **_STREAM_STYLE)
    for (src, ch), attrs in heads.items():
        dot.edge(f"n{src}", f"s{ch}", **attrs)
    for (ch, dst, port), back in tails.items():
        lk = Link(-1, dst, port, ch, back)
        dot.edge(f"s{ch}", f"n{dst}", **_edge_attrs(plan, lk, zipped))


def _stream_arrows(
    found: list[Link],
) -> tuple[dict[tuple[int, int], dict[str, str]], dict[tuple[int, int, int], bool]]:
    """The arrows into stream boxes (with their style) and out of them (whether back).

    An arrow is back when every link through it is.  Ranking must ignore one arrow
    per cycle: the one into the stream when the stream also carries forward items
    (a producer downstream shares its consumer's queue), else the one out of it
    (loop feedback: the box stays next to its producer).
    """
    into: dict[tuple[int, int], bool] = {}
    out: dict[tuple[int, int, int], bool] = {}
    for lk in found:
        into[lk.src, lk.channel] = into.get((lk.src, lk.channel), True) and lk.back
        key = (lk.channel, lk.dst, lk.port)
        out[key] = out.get(key, True) and lk.back
    all_back = {lk.channel for lk in found} - {lk.channel for lk in found if not lk.back}
    heads: dict[tuple[int, int], dict[str, str]] = {}
    cut_at_head = set()
    for (src, ch), back in into.items():
        heads[src, ch] = {"style": "dashed"} if back else {}
        if back and ch not in all_back:
            heads[src, ch] = dict(_BACK_STYLE)
            cut_at_head.add(ch)
    tails = {key: back and key[0] not in cut_at_head for key, back in out.items()}
    return heads, tails


def _unique(items: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(items))


# -- text --------------------------------------------------------------------------


def to_text(plan: Plan) -> str:
    """The graph as lines of text, one per chain of stages (``numbers -> square
    (x2) -> show`` with a multiplication sign), for renderer-less notebooks."""
    found = links(plan)
    zipped = _zipped(found)
    into: dict[int, list[Link]] = {}
    out: dict[int, list[Link]] = {}
    for lk in found:
        into.setdefault(lk.dst, []).append(lk)
        out.setdefault(lk.src, []).append(lk)

    def passes_through(node: int) -> bool:
        ins, outs = into.get(node, []), out.get(node, [])
        return len(ins) == len(outs) == 1 and not ins[0].back and not outs[0].back

    lines = []
    for lk in found:
        if passes_through(lk.src):
            continue  # drawn as part of the chain that reaches lk.src
        line = [_text_node(plan, lk.src)]
        while True:
            line.append(_text_step(plan, lk, zipped))
            if not passes_through(lk.dst):
                break
            (lk,) = out[lk.dst]
        lines.append(" ".join(line))
    lines += [
        _text_node(plan, s.id) for s in _visible(plan) if s.id not in into and s.id not in out
    ]
    return "\n".join(lines)


def _text_node(plan: Plan, node: int) -> str:
    spec = plan.nodes[node]
    return spec.name if spec.workers <= 1 else f"{spec.name} ({TIMES}{spec.workers})"


def _text_step(plan: Plan, lk: Link, zipped: set[int]) -> str:
    notes = []
    if lk.dst in zipped and plan.nodes[lk.dst].kind != "loop":
        notes.append(f"input {lk.port}")
    if lk.back:
        notes.append("back edge")
    suffix = f" [{', '.join(notes)}]" if notes else ""
    return f"-> {_text_node(plan, lk.dst)}{suffix}"


# -- rendering and Jupyter ---------------------------------------------------------


def mimebundle(flow: Flow) -> dict[str, str]:
    """Jupyter's ``_repr_mimebundle_``: SVG when a renderer is present, and always
    ``text/plain``.  Never raises: an invalid flow shows its error as text."""
    try:
        plan = compile_flow(flow, want_results=False)
    except Exception as exc:
        return {"text/plain": f"{_safe_repr(flow)}\ninvalid flow: {type(exc).__name__}: {exc}"}
    try:
        bundle = {"text/plain": f"{_safe_repr(flow)}\n{to_text(plan)}"}
    except Exception:  # a bug here must not break the notebook
        logger.debug("cannot describe %s as text", _safe_repr(flow), exc_info=True)
        return {"text/plain": _safe_repr(flow)}
    try:
        svg = render_svg(_digraph(plan, draw_streams=False).source)
    except Exception:
        logger.debug("cannot draw %s", _safe_repr(flow), exc_info=True)
        svg = None
    if svg is not None:
        bundle["image/svg+xml"] = svg
    return bundle


@functools.cache
def _diagram_class() -> type[graphviz.Digraph]:
    """``graphviz.Digraph`` whose notebook display never raises: it renders with
    ``dot``, else ``graphviz-pure``, else shows the DOT source as text."""
    import graphviz

    class Diagram(graphviz.Digraph):  # type: ignore[misc]  # graphviz has no types
        def _repr_mimebundle_(
            self, include: Any = None, exclude: Any = None, **_: Any
        ) -> dict[str, Any]:
            try:
                svg = render_svg(self.source)
            except Exception:  # never break the notebook
                svg = None
            bundle: dict[str, Any] = {"text/plain": self.source}
            if svg is not None:
                bundle["image/svg+xml"] = svg
            return bundle

    Diagram.__module__ = "flowdsl"
    return Diagram


def render_svg(dot_source: str) -> str | None:
    """SVG for a DOT source: with Graphviz's ``dot`` if installed, else with
    ``graphviz-pure``; ``None`` when neither works (never raises)."""
    data = render(dot_source, "svg")
    try:
        return None if data is None else data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def render(dot_source: str, fmt: str) -> bytes | None:
    """A DOT source rendered to ``fmt`` (``"svg"``, ``"png"``, ``"pdf"``...) with
    Graphviz's ``dot`` if installed, else with ``graphviz-pure`` (which has no
    ``pdf``); ``None`` when neither can (never raises)."""
    import graphviz

    try:
        return bytes(graphviz.Source(dot_source).pipe(format=fmt))
    except Exception as exc:  # ExecutableNotFound, or dot failed: try the fallback
        logger.debug("dot cannot render %s (%s); trying %s", fmt, exc, PURE)
    return _render_pure(dot_source, fmt)


def _render_pure(dot_source: str, fmt: str) -> bytes | None:
    exe = find_renderer()
    if exe is None:
        logger.debug("no %s executable found", PURE)
        return None
    try:
        done = subprocess.run(
            [exe, f"-T{fmt}"],
            input=dot_source.encode("utf-8"),
            capture_output=True,
            timeout=RENDER_TIMEOUT,
            check=True,
        )
        return done.stdout
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("%s failed: %s", exe, exc)
        return None


def find_renderer() -> str | None:
    """The ``graphviz-pure`` executable: on ``PATH``, else in the scripts directory
    of the running Python (a virtualenv that was not activated)."""
    found = shutil.which(PURE)
    if found:
        return found
    dirs = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    for d in dirs:
        for name in (PURE, f"{PURE}.exe"):
            found = shutil.which(name, path=str(d))
            if found:
                return found
    return None


def _safe_repr(obj: Any) -> str:
    try:
        return repr(obj)
    except Exception:
        return object.__repr__(obj)
