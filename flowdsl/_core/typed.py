"""``check_types=True``: every call of a stage checks what it takes and makes
against the stage's annotations, in the worker, so an item of the wrong type
fails its own call (through retries and ``on_error``) instead of a call far
downstream."""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any

from .._types import _TOWER, UNKNOWN, _item_parameters, is_instance, makes, show, takes

__all__ = ["typed"]


def typed(fn: Any, stage: Any, arity: int) -> Any:
    """``fn`` (the stage's call, arguments bound) checking its items and results."""
    names = _item_parameters(stage.callable)
    taken = [takes(stage, i) for i in range(arity)]
    made = makes(stage) if stage.kind == "transform" else UNKNOWN
    oks, ok_out = [_predicate(h) for h in taken], _predicate(made)
    spread = stage.is_generator or stage.is_async_generator or stage.batch is not None
    name, batched = stage.name, stage.batch is not None

    def refuse_in(i: int, v: Any) -> None:
        param = f" (parameter {names[i]!r})" if i < len(names) else ""
        raise TypeError(
            f"stage {name!r} takes {show(taken[i])}{param}, got {type(v).__name__} {_short(v)}"
        )

    def check_in(items: tuple[Any, ...]) -> None:
        for i, (x, ok) in enumerate(zip(items, oks, strict=False)):
            for v in x if batched and isinstance(x, list) else (x,):
                if not ok(v):
                    refuse_in(i, v)

    def check_out(result: Any, verb: str = "returned") -> Any:
        if result is not None and not ok_out(result):
            raise TypeError(
                f"stage {name!r} makes {show(made)}, but {verb} "
                f"{type(result).__name__} {_short(result)}"
            )
        return result

    if stage.is_async_generator:

        @functools.wraps(fn)
        async def checked_agen(*items: Any) -> Any:
            check_in(items)
            async for y in fn(*items):
                yield check_out(y, "yielded")

        return checked_agen
    if stage.is_async and batched:

        @functools.wraps(fn)
        async def checked_async_batch(*items: Any) -> Any:
            check_in(items)
            return [check_out(y, "made") for y in await fn(*items)]

        return checked_async_batch
    if stage.is_async:

        @functools.wraps(fn)
        async def checked_async(*items: Any) -> Any:
            check_in(items)
            return check_out(await fn(*items))

        return checked_async
    if stage.is_generator and inspect.isgeneratorfunction(inspect.unwrap(stage.callable)):

        @functools.wraps(fn)
        def checked_generator(*items: Any) -> Any:
            check_in(items)
            for y in fn(*items):
                yield check_out(y, "yielded")

        return checked_generator
    if arity == 1 and not batched and not spread:  # the common case, kept short
        (ok,) = oks

        @functools.wraps(fn)
        def checked_one(x: Any) -> Any:
            if not ok(x):
                refuse_in(0, x)
            result = fn(x)
            if result is not None and not ok_out(result):
                check_out(result)
            return result

        return checked_one

    @functools.wraps(fn)
    def checked(*items: Any) -> Any:
        check_in(items)
        result = fn(*items)
        if batched and made is not UNKNOWN:  # each result the list spreads into
            return [check_out(y, "made") for y in result]
        return result if spread else check_out(result)

    return checked


def _predicate(hint: Any) -> Any:
    """A fast test of one value against ``hint``: ``isinstance`` for a plain
    class (with PEP 484's int-is-a-float), beartype for the rest."""
    if hint is UNKNOWN:
        return _anything
    if isinstance(hint, type) and not typing.get_args(hint):
        classes = (hint, *_TOWER.get(hint, ()))
        return lambda v: isinstance(v, classes)
    return functools.partial(is_instance, hint=hint)


def _anything(_: Any) -> bool:
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
