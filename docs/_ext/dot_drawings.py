"""Draw the diagrams the docs print: an ``output`` block holding DOT source
(what ``print(flow.diagram().source)`` shows) is followed on the site by its
drawing, rendered at build time with the renderer flowdsl itself uses."""

from __future__ import annotations

from typing import Any

from docutils import nodes
from pygments.lexers.special import TextLexer
from sphinx.application import Sphinx
from sphinx.util import logging

from flowdsl._diagram import render_svg

log = logging.getLogger(__name__)


def draw(app: Sphinx, doctree: nodes.document) -> None:
    for block in list(doctree.findall(nodes.literal_block)):
        source = block.astext()
        if block.get("language") != "output" or not source.startswith("digraph"):
            continue
        svg = render_svg(source)
        if svg is None:
            log.warning("no Graphviz renderer: install graphviz-pure", location=block)
            continue
        svg = svg[svg.index("<svg") :]  # drop the XML prologue and doctype
        figure = nodes.raw("", f'<div class="flowdsl-diagram">{svg}</div>', format="html")
        block.parent.insert(block.parent.index(block) + 1, figure)


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_lexer("output", TextLexer)  # printed output: shown as plain text
    app.connect("doctree-read", draw)
    return {"parallel_read_safe": True}
