"""Sphinx configuration for the flowdsl site: ``make docs`` builds it into
``docs/_build/html`` with warnings as errors and every cross-reference checked,
so a broken link, an unresolved reference or a public name without a complete
docstring (see ``_ext/reference_audit.py``) fails the build."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]

import flowdsl  # noqa: E402  (after the path is set)

project = "flowdsl"
author = "the flowdsl authors"
copyright = "2026, the flowdsl authors"
release = version = flowdsl.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "reference_audit",
    "dot_drawings",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext"]

# Google-style docstrings; signatures without annotations (the overloads are for
# type checkers, the Args sections say what each parameter takes).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
add_module_names = False
nitpicky = True

myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "furo"
html_title = f"flowdsl {release}"
html_static_path: list[str] = []
