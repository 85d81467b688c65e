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

__all__ = ["Chains", "Middleware", "check_middleware", "compose"]

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


class Chains:
    """What a task of each type calls: its handler inside the middleware, composed once per change.

    ``calls`` is read without a lock on every task; it changes only before the node starts.
    """

    def __init__(self, handlers: Mapping[str, Callable[..., Any]]) -> None:
        self.calls: dict[str, Callable[..., Any]] = dict(handlers)
        self.middleware: tuple[Middleware, ...] = ()

    def wrap(self, handler: Callable[..., Any], middleware: Sequence[Middleware] = (), *,
             apply: bool = True) -> Callable[..., Any]:
        """What a task calls: an isolated handler takes the chain into its children (``use_middleware``),
        any other is composed here; ``apply=False`` only checks that an isolated one can take it.

        Raises:
            ValueError: an isolated handler's child could not import a middleware.
        """
        middleware = tuple(middleware or self.middleware)
        use = getattr(handler, "use_middleware", None)
        if use is None:
            return compose(middleware, handler)
        use(middleware, apply=apply)
        return handler

    def add(self, fn: Middleware, handlers: Mapping[str, Callable[..., Any]]) -> None:
        """``fn`` inside the middleware added before, around every one of ``handlers``; all or nothing.

        Raises:
            TypeError: ``fn`` is not callable.
            ValueError: an isolated type's child could not import ``fn`` (nothing changed then).
        """
        middleware = self.middleware + (check_middleware(fn),)
        calls = {task_type: self.wrap(handler, middleware, apply=False) for task_type, handler in handlers.items()}
        for handler in handlers.values():
            self.wrap(handler, middleware)
        self.middleware, self.calls = middleware, calls
