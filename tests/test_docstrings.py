"""The public docstrings are complete, and their examples run.

The rules (a docstring, every parameter in ``Args:``, an ``Examples:`` section)
live in ``docs/_ext/reference_audit.py``, which also fails the documentation
build; here they are checked without building the site, and every example runs
as a doctest, its printed output compared.
"""

from __future__ import annotations

import builtins
import doctest
import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs" / "_ext"))
import reference_audit as audit

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _examples() -> list[doctest.DocTest]:
    finder, parser = doctest.DocTestFinder(exclude_empty=True), doctest.DocTestParser()
    found: dict[str, doctest.DocTest] = {}
    for path, obj in audit.public_objects():
        module = importlib.import_module(path.rpartition(".")[0])
        if callable(obj):
            tests = finder.find(obj, path, module=module, globs={})
        else:  # data: its docstring follows its assignment in the source
            doc = audit.own_doc(path, obj)
            tests = [parser.get_doctest(doc, {}, path, module.__file__, 0)]
        for test in tests:
            if test.examples:
                found.setdefault(test.name, test)
    return sorted(found.values(), key=lambda test: test.name)


EXAMPLES = _examples()


def test_every_public_name_has_a_complete_docstring() -> None:
    documented = {path for path, _ in audit.public_objects()}  # the site's entries aside
    assert audit.problems(documented) == []
    covered = {test.name for test in EXAMPLES}
    assert [path for path in documented if path not in covered] == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("test", EXAMPLES, ids=[test.name for test in EXAMPLES])
def test_docstring_example(test: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    output: list[str] = []
    printer = builtins.print  # Ray may swap it for its own
    try:
        runner.run(test, out=output.append)
    finally:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():  # an example that started Ray
            ray.shutdown()
        builtins.print = printer
    failed, _ = runner.summarize(verbose=False)
    assert not failed, "".join(output)


# -- the audit itself: each kind of gap is reported ------------------------------------


def undocumented(x):
    return x


def half_documented(x, factor=2):
    """Scale ``x``.

    Args:
        x: What to scale.

    Examples:
        >>> half_documented(1)
        2
    """
    return x * factor


def no_example(x):
    """Return ``x``.

    Args:
        x: Anything.
    """
    return x


class Partly:
    """A class.

    Examples:
        >>> Partly().documented()
    """

    def documented(self):
        """Does nothing."""

    def bare(self):
        pass

    @property
    def bare_property(self):
        return 1


def test_the_audit_reports_each_kind_of_gap() -> None:
    assert audit.docstring_problems("m.undocumented", undocumented) == [
        "m.undocumented has no docstring"
    ]
    assert audit.docstring_problems("m.half_documented", half_documented) == [
        "m.half_documented: parameter 'factor' is not documented (an Args: entry)"
    ]
    assert audit.docstring_problems("m.no_example", no_example) == [
        "m.no_example has no example (an Examples: section with >>> lines)"
    ]
    assert audit.docstring_problems("m.Partly", Partly) == [
        "m.Partly.bare has no docstring",
        "m.Partly.bare_property has no docstring",
    ]


def test_the_audit_reports_a_public_name_missing_from_the_reference() -> None:
    documented = {path for path, _ in audit.public_objects()} - {"flowdsl.merge"}
    assert audit.problems(documented) == [
        "flowdsl.merge is public but has no entry in docs/reference/"
    ]
