"""Item types: what a stage's annotations say it takes and makes, and whether
the two ends of an edge agree.

A stage's types come from its callable's annotations (``run`` of an object):

- it *takes* the annotation of its item parameter (parameter *i* on input *i* of
  a zip), the element type of ``list[T]`` with ``batch=n``;
- it *makes* its return annotation, with ``None`` removed from an ``Optional``
  (returning ``None`` sends nothing); the element type of ``Iterator[T]``,
  ``Iterable[T]``, ``Generator[T, ...]`` (and their async kinds) for a
  generator, a source, or a ``batch=n`` stage whose results are spread.

What is not annotated, or not understood, is unknown and never checked, so
lambdas and unannotated code keep working.  Whether a made type fits a taken
one is asked of beartype (``beartype.door.is_subhint``), imported only when a
question is not plain ``issubclass`` between classes.
"""

from __future__ import annotations

import collections.abc as abc
import functools
import inspect
import operator
import re
import types
import typing
from typing import Any

from .errors import GraphError

__all__ = [
    "UNKNOWN",
    "_item_parameters",
    "check_edge",
    "fits",
    "hint_error",
    "hints_of",
    "is_instance",
    "makes",
    "show",
    "takes",
]

UNKNOWN: Any = None  # a type the annotations do not say

_ITERABLES = {
    abc.Iterator,
    abc.Iterable,
    abc.Generator,
    abc.AsyncIterator,
    abc.AsyncIterable,
    abc.AsyncGenerator,
    abc.Collection,
    abc.Sequence,
    list,
    tuple,
    set,
    frozenset,
    typing.Iterator,
    typing.Iterable,
    typing.Generator,
    typing.AsyncIterator,
    typing.AsyncIterable,
    typing.AsyncGenerator,
}


_TOWER = {float: (int, bool), complex: (float, int, bool)}  # PEP 484's promotions


def hints_of(stage: Any) -> dict[str, Any]:
    """The evaluated annotations of ``stage``'s callable, kept on the stage once
    they could be evaluated: they are evaluated in the driver, where the names
    they use are defined, and go to the workers with it (a function sent by value
    to a spawned worker takes only the globals its code uses, not those its
    annotations name).  Annotations that cannot be evaluated yet (a class defined
    further down) are tried again next time."""
    cached = stage.__dict__.get("_hints")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    hints, error = _evaluate(stage.callable)
    if error is None:
        stage.__dict__["_hints"] = hints
    return hints


def hint_error(stage: Any) -> str | None:
    """Why ``stage``'s annotations cannot be evaluated (None: they can)."""
    if stage.__dict__.get("_hints") is not None:
        return None
    return _evaluate(stage.callable)[1]


def _evaluate(f: Any) -> tuple[dict[str, Any], str | None]:
    """``f``'s evaluated annotations, and what went wrong evaluating them."""
    target = inspect.unwrap(f) if callable(f) else f
    if inspect.isclass(target) or inspect.isbuiltin(target) or not callable(target):
        return {}, None  # a constructor or a builtin: its types are not annotations
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = type(target).__call__  # an object called per item
    try:
        return typing.get_type_hints(target), None
    except Exception as exc:  # a name not defined yet, or only for type checkers
        return {}, f"{type(exc).__name__}: {exc}"


def _hints(f: Any) -> dict[str, Any]:
    """``f``'s evaluated annotations; empty when they cannot be evaluated."""
    return _evaluate(f)[0]


def _item_parameters(f: Any) -> list[str]:
    """The names of ``f``'s positional parameters, in order."""
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _element(hint: Any) -> Any:
    """``T`` of ``Iterator[T]`` and kin; UNKNOWN when ``hint`` says no element type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in _ITERABLES and args:
        if origin is tuple:
            return args[0] if len(args) == 2 and args[1] is Ellipsis else UNKNOWN
        return args[0]
    return UNKNOWN


def _known(hint: Any) -> bool:
    return (
        hint is not UNKNOWN
        and hint is not Any
        and hint is not object
        and not isinstance(hint, typing.TypeVar)
    )


def _without_none(hint: Any) -> Any:
    """``T`` for ``Optional[T]``: a stage that returns None sends nothing."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) != len(typing.get_args(hint)):
            return UNKNOWN if not rest else functools.reduce(operator.or_, rest)
    return UNKNOWN if hint is type(None) else hint


def takes(stage: Any, port: int = 0) -> Any:
    """The type ``stage`` takes on input ``port``, or UNKNOWN."""
    if stage.kind == "loop":  # what enters a loop enters its body
        head = getattr(stage, "head", None)
        if head is None or port != 0 or len(_item_parameters(head.callable)) > 1:
            return UNKNOWN  # (a head of N parameters takes tuples, unpacked)
        return takes(head, 0)
    if stage.kind not in ("transform", "sink") or _hidden(stage):
        return UNKNOWN
    f = stage.callable
    names = _item_parameters(f)
    if port >= len(names):
        return UNKNOWN
    hint = hints_of(stage).get(names[port], UNKNOWN)
    if stage.batch is not None:
        hint = _element(hint)
    return hint if _known(hint) else UNKNOWN


def makes(stage: Any) -> Any:
    """The type of the items ``stage`` sends downstream, or UNKNOWN."""
    if stage.kind == "loop":
        return getattr(stage, "item_type", UNKNOWN)
    if stage.kind == "sink" or _hidden(stage):
        return UNKNOWN
    f = stage.callable
    if stage.kind == "source" and not callable(f):
        return UNKNOWN  # an iterable given as it is
    hint = hints_of(stage).get("return", UNKNOWN)
    if hint is UNKNOWN:
        return UNKNOWN
    if (
        stage.kind == "source"
        or stage.is_generator
        or stage.is_async_generator
        or stage.batch is not None
    ):
        hint = _element(hint)
    else:
        hint = _without_none(hint)
    return hint if _known(hint) else UNKNOWN


def _hidden(stage: Any) -> bool:
    """Stages whose item types are not their callable's (regulators: a batch)."""
    return not getattr(stage, "annotated_items", True)


def fits(made: Any, taken: Any) -> bool:
    """Whether every value of type ``made`` is a value of type ``taken`` (an int
    is a float, and both are complex, as type checkers have it: PEP 484)."""
    if not _known(made) or not _known(taken) or made == taken:
        return True
    if typing.get_origin(made) in (typing.Union, types.UnionType):
        return all(fits(m, taken) for m in typing.get_args(made))
    if _TOWER.get(taken, ()) and made in _TOWER[taken]:
        return True
    if typing.get_origin(taken) in (typing.Union, types.UnionType) and any(
        made in _TOWER.get(t, ()) for t in typing.get_args(taken)
    ):
        return True
    if isinstance(made, type) and isinstance(taken, type) and not typing.get_args(taken):
        try:
            return issubclass(made, taken)
        except TypeError:
            pass
    made = _as_checked(made)
    if made is UNKNOWN:
        return True
    from beartype.door import is_subhint  # here: a heavy import, and rarely needed

    try:
        return bool(is_subhint(made, _widened(taken)))
    except Exception:  # a hint beartype does not handle: say nothing against it
        return True


def _widened(hint: Any) -> Any:
    """``hint`` with PEP 484's promotions at every depth: ``Sequence[float]``
    takes a ``list[int]``, as type checkers have it."""
    if hint in _TOWER:
        return functools.reduce(operator.or_, (hint, *_TOWER[hint]))
    args = typing.get_args(hint)
    if not args or any(isinstance(a, list) for a in args):  # (Callable's parameters)
        return hint
    wider = tuple(a if a is Ellipsis else _widened(a) for a in args)
    if wider == args:
        return hint
    origin = typing.get_origin(hint)
    try:
        if origin in (typing.Union, types.UnionType):
            return functools.reduce(operator.or_, wider)
        return origin[wider]
    except TypeError:
        return hint


def _as_checked(made: Any) -> Any:
    """A made type as beartype can compare it: a NamedTuple as the tuple of its
    fields' types; a TypedDict is not compared (UNKNOWN)."""
    if isinstance(made, type) and typing.is_typeddict(made):
        return UNKNOWN
    if isinstance(made, type) and issubclass(made, tuple) and hasattr(made, "_fields"):
        fields = typing.get_type_hints(made)
        if all(f in fields for f in made._fields):
            return tuple[tuple(fields[f] for f in made._fields)]  # type: ignore[misc]
    return made


def is_instance(value: Any, hint: Any) -> bool:
    """Whether ``value`` is a ``hint`` (beartype's check: one element of a big
    container is sampled, so the cost is the same for any size)."""
    if not _known(hint):
        return True
    if isinstance(hint, type) and not typing.get_args(hint):
        return isinstance(value, (hint, *_TOWER.get(hint, ())))
    from beartype import BeartypeConf
    from beartype.door import is_bearable

    try:
        return bool(is_bearable(value, hint, conf=BeartypeConf(is_pep484_tower=True)))
    except Exception:
        return True


def show(hint: Any) -> str:
    """A type as written in code: ``int``, ``list[str]``, ``Sequence[Point]``."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__qualname__.rpartition("<locals>.")[2]
    return _MODULES.sub("", repr(hint))


_MODULES = re.compile(r"\b(?:[A-Za-z_]\w*\.|<locals>\.)+(?=[A-Za-z_])")  # a.b.Name -> Name


def check_edge(src: Any, dst: Any, port: int, where: str) -> None:
    """Raise :class:`GraphError` when what ``src`` makes cannot be what ``dst``
    takes on input ``port``; ``where`` names the edge in the message."""
    made, taken = makes(src), takes(dst, port)
    if fits(made, taken):
        return
    head = dst.head if dst.kind == "loop" else dst  # a loop takes what its body does
    names = _item_parameters(head.callable)
    param = f" (parameter {names[port]!r})" if port < len(names) else ""
    if head.batch is not None:
        param += f", in lists of up to {head.batch}"
    body = f" (its body's first stage, {head.name!r})" if head is not dst else ""
    raise GraphError(
        f"{where}: stage {src.name!r} makes {show(made)}, but stage {dst.name!r}{body} "
        f"takes {show(taken)} on input {port}{param}. Fix the annotations, convert the "
        f"items in a stage between, or leave one end unannotated to skip the check"
    )
