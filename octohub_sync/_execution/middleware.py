"""Middleware: ``fn(task, call_next)`` around every handler call, composed once (docs/middleware.md).

The first registered is the outermost. The chain is built when a middleware or a handler is
registered, never per task: a task pays one call per middleware, and nothing at all without any.
It runs where the handler runs -- the worker thread, or the child process of an isolated type
(_isolation/child.py composes the same chain there, each middleware found again by module and name)
-- so ``current_task()``, cancellation, time limits and progress work inside it as in the handler.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping, Sequence

__all__ = ["Middleware", "check_middleware", "compose"]

#: ``fn(task, call_next)``: ``call_next()`` runs the inner middlewares and the handler.
Middleware = Callable[[Mapping[str, Any], Callable[[], Any]], Any]


def check_middleware(fn: Any) -> Middleware:
    """``fn`` if it can be a middleware.

    Raises:
        TypeError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"middleware {fn!r} is not callable; expected a function(task, call_next)")
    return fn


def compose(middleware: Sequence[Middleware], handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` wrapped by ``middleware``, the first the outermost; ``handler`` itself without any."""
    call = handler
    for fn in reversed(middleware):
        call = _Layer(fn, call)
    return call


class _Layer:
    """One middleware around the rest of the chain (a class: its two references are set once)."""

    __slots__ = ("_fn", "_inner")

    def __init__(self, fn: Middleware, inner: Callable[..., Any]) -> None:
        self._fn = fn
        self._inner = inner

    def __call__(self, task: Mapping[str, Any]) -> Any:
        return self._fn(task, partial(self._inner, task))
