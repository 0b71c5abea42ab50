"""The reference is complete, or the build fails.

Every public name (``flowdsl.__all__``, ``flowdsl.testing.__all__``) must be
documented in ``docs/reference/``, and its docstring must document each of its
parameters (an ``Args:`` entry; a dataclass's fields may be ``Attributes:``
instead) and carry an example (an ``Examples:`` section with ``>>>`` lines,
which the test suite runs). Every public method and property a public class
declares must have a docstring. Each gap is a warning, an error under ``-W``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import itertools
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

PUBLIC_MODULES = ("flowdsl", "flowdsl.testing")
PARAMETER_SECTIONS = ("Args", "Arguments", "Parameters", "Keyword Args", "Attributes")
SECTION = re.compile(r"^(?P<title>[A-Z][\w ]*):\s*$")
ENTRY = re.compile(r"^\*{0,2}(?P<name>\w+)\s*(\(.*\))?:")


def public_objects() -> Iterator[tuple[str, Any]]:
    """``(dotted name, object)`` for every public name, in ``__all__`` order."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            yield f"{module_name}.{name}", getattr(module, name)


def problems(documented: set[str]) -> list[str]:
    """One sentence per gap; ``documented`` holds the names the site describes."""
    found = []
    for path, obj in public_objects():
        if path not in documented:
            found.append(f"{path} is public but has no entry in docs/reference/")
        found += docstring_problems(path, obj)
    return found


def docstring_problems(path: str, obj: Any) -> list[str]:
    """What the docstring of public ``obj`` lacks."""
    doc = own_doc(path, obj)
    if not doc:
        return [f"{path} has no docstring"]
    sections = parse_sections(doc)
    found = []
    if ">>>" not in sections.get("Examples", "") + sections.get("Example", ""):
        found.append(f"{path} has no example (an Examples: section with >>> lines)")
    described = {
        match["name"]
        for title in PARAMETER_SECTIONS
        for line in sections.get(title, "").splitlines()
        if (match := ENTRY.match(line))
    }
    found += [
        f"{path}: parameter {name!r} is not documented (an Args: entry)"
        for name in parameters(obj)
        if name not in described
    ]
    if inspect.isclass(obj):
        found += [f"{path}.{name} has no docstring" for name in undocumented_members(obj)]
    return found


def own_doc(path: str, obj: Any) -> str:
    """The docstring ``obj`` itself has: a class does not inherit its base's here,
    and data (a constant) has the string literal that follows its assignment."""
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")
    elif callable(obj) or inspect.ismodule(obj):
        doc = getattr(obj, "__doc__", None)
    else:
        doc = attribute_doc(path)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def attribute_doc(path: str) -> str | None:
    """The docstring of module-level data ``path`` (``package.NAME``): the string
    literal after its assignment, in the module or the submodule defining it."""
    package, _, name = path.rpartition(".")
    modules = [m for key, m in sorted(sys.modules.items()) if key.startswith(package)]
    for module in modules:
        try:
            tree = ast.parse(inspect.getsource(module))
        except (OSError, TypeError):
            continue
        for first, second in itertools.pairwise(tree.body):
            targets = first.targets if isinstance(first, ast.Assign) else []
            named = any(isinstance(t, ast.Name) and t.id == name for t in targets)
            if named and isinstance(second, ast.Expr) and isinstance(second.value, ast.Constant):
                return str(second.value.value)
    return None


def parse_sections(doc: str) -> dict[str, str]:
    """Google-style sections: ``{title: the indented lines under it, dedented}``."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in doc.splitlines():
        if match := SECTION.match(line):
            current = sections.setdefault(match["title"], [])
        elif current is not None and (line.startswith("    ") or not line.strip()):
            current.append(line[4:])
        else:
            current = None
    return {title: "\n".join(lines) for title, lines in sections.items()}


def parameters(obj: Any) -> list[str]:
    """The parameters a user passes: a function's, or a class's constructor's
    where the class itself defines one (an inherited constructor is documented
    where it is defined; a dataclass's fields may be its ``Attributes:``)."""
    if inspect.isclass(obj):
        if "__init__" not in obj.__dict__ and not dataclasses.is_dataclass(obj):
            return []
    elif not inspect.isfunction(obj):
        return []  # a stage object, data: nothing to pass
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in signature.parameters.values()
        if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def undocumented_members(cls: type) -> list[str]:
    """Public methods and properties ``cls`` declares without a docstring."""
    found = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            doc = member.fget.__doc__ if member.fget else None
        elif isinstance(member, (staticmethod, classmethod)) or inspect.isfunction(member):
            doc = member.__doc__
        else:
            continue  # data: documented in the class's Attributes section
        if not (doc or "").strip():
            found.append(name)
    return found


def check(app: Sphinx, env: BuildEnvironment) -> None:
    from sphinx.util import logging

    log = logging.getLogger(__name__)
    documented = set(env.get_domain("py").objects)
    for problem in problems(documented):
        log.warning(problem, type="flowdsl", subtype="reference")


def data_docstring(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """autodoc reads a constant's docstring only in the module that defines it:
    give it to the public name too (``flowdsl.testing.FAULT_KINDS``)."""
    if what == "data" and not callable(obj) and (doc := attribute_doc(name)):
        from sphinx.ext.napoleon.docstring import GoogleDocstring

        google = GoogleDocstring(inspect.cleandoc(doc), app.config, app, what, name, obj, options)
        lines[:] = google.lines()


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", data_docstring)
    app.connect("env-check-consistency", check)
    return {"parallel_read_safe": True}
