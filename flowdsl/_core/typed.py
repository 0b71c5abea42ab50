"""``check_types=True``: every call of a stage checks what it takes and makes
against the stage's annotations, in the worker, so an item of the wrong type
fails its own call (through retries and ``on_error``) instead of a call far
downstream."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from .._types import UNKNOWN, _item_parameters, is_instance, makes, show, takes

__all__ = ["typed"]


def typed(fn: Any, stage: Any, arity: int) -> Any:
    """``fn`` (the stage's call, arguments bound) checking its items and results."""
    names = _item_parameters(stage.callable)
    taken = [takes(stage, i) for i in range(arity)]
    made = makes(stage) if stage.kind == "transform" else UNKNOWN
    spread = stage.is_generator or stage.is_async_generator or stage.batch is not None
    name = stage.name

    def check_in(items: tuple[Any, ...]) -> None:
        for i, (x, hint) in enumerate(zip(items, taken, strict=False)):
            values = x if stage.batch is not None and isinstance(x, list) else (x,)
            for v in values:
                if not is_instance(v, hint):
                    param = f" (parameter {names[i]!r})" if i < len(names) else ""
                    raise TypeError(f"stage {name!r} takes {show(hint)}{param}, "
                                    f"got {type(v).__name__} {_short(v)}")

    def check_out(result: Any, verb: str = "returned") -> Any:
        if result is not None and not is_instance(result, made):
            raise TypeError(f"stage {name!r} makes {show(made)}, but {verb} "
                            f"{type(result).__name__} {_short(result)}")
        return result

    if stage.is_async and not stage.is_async_generator:
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

    @functools.wraps(fn)
    def checked(*items: Any) -> Any:
        check_in(items)
        result = fn(*items)
        return result if spread else check_out(result)

    return checked


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
