"""The examples in the public docstrings run and print what they show.

Every public name of ``flowdsl`` and ``flowdsl.testing`` carries an example (the
documentation build refuses one without); here each example runs as a doctest.
"""

from __future__ import annotations

import builtins
import doctest
import importlib
import sys

import pytest

PUBLIC_MODULES = ("flowdsl", "flowdsl.testing")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _public() -> list[tuple[str, object]]:
    objects = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        objects += [(f"{module_name}.{name}", getattr(module, name)) for name in module.__all__]
    return objects


def _examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found: dict[str, doctest.DocTest] = {}
    for path, obj in _public():
        if not isinstance(obj, (type, type(_public))) and not callable(obj):
            obj = type(obj)  # data: its docstring lives on the value's class
        module = importlib.import_module(path.rpartition(".")[0])
        for test in finder.find(obj, path, module=module, globs={}):
            if test.examples:
                found.setdefault(test.name, test)
    return sorted(found.values(), key=lambda test: test.name)


EXAMPLES = _examples()


def test_every_public_name_has_an_example() -> None:
    """The doctests cover every public name (a name whose docstring lost its
    example would otherwise pass here unnoticed)."""
    covered = {test.name for test in EXAMPLES}
    missing = [path for path, _ in _public() if path not in covered]
    assert not missing, f"public names without a docstring example: {missing}"


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
