"""Resources: what a handler keeps between tasks (a browser), made and torn down where it is used.

A resource is a generator function written like a pytest fixture: setup before ``yield``,
teardown after. The node, not the handler, decides when: a resource is made lazily by the first
task that uses it on a worker thread (or in an isolated child), reused by the later tasks there,
and torn down on that same thread or child: when the node stops (the pool's loops run
:meth:`ResourceRegistry.release_thread` as they end, _execution/pool.py), after ``max_uses`` tasks
or ``max_age`` seconds, or after a handler raised :class:`~octohub_sync.exceptions.ResourceBroken`.

Why per thread and never shared: a browser driver is not thread-safe (Playwright's sync API belongs
to the thread that made it; WebDriver has no locking), and a resource that is never shared needs no lock.
"""
from __future__ import annotations

import logging
import threading
import time
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from ..exceptions import ResourceBroken, ResourceError

__all__ = ["Held", "ResourceRegistry", "ResourceSpec", "Tally", "UsingResources", "check_uses"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResourceSpec:
    """One registered resource: its name (the handler's keyword), its factory and its limits."""

    name: str
    factory: Callable[[], Any]
    max_uses: Optional[int] = None
    max_age: Optional[float] = None

    @classmethod
    def build(cls, name: Any, factory: Any, *, max_uses: Any = None, max_age: Any = None) -> "ResourceSpec":
        """Validate ``register_resource``'s arguments.

        Raises:
            ValueError: ``name`` is not an identifier (it becomes a keyword argument), a limit is not positive.
            TypeError: ``factory`` is not callable.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"resource name {name!r} must be a Python identifier: handlers get it as a keyword")
        if not callable(factory):
            raise TypeError(f"resource {name!r}: factory {factory!r} is not callable")
        for what, value in (("max_uses", max_uses), ("max_age", max_age)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"resource {name!r}: {what} must be a positive number, not {value!r}")
        if max_uses is not None and not isinstance(max_uses, int):
            raise ValueError(f"resource {name!r}: max_uses must be a whole number, not {max_uses!r}")
        return cls(name, factory, max_uses, None if max_age is None else float(max_age))


def check_uses(task_type: str, uses: Any) -> tuple[str, ...]:
    """``uses=`` of ``register_task_handler`` as a tuple of names.

    Raises:
        TypeError: not a list (or tuple) of resource names.
    """
    if uses is None:
        return ()
    if isinstance(uses, str) or not isinstance(uses, (list, tuple)) or not all(isinstance(n, str) for n in uses):
        raise TypeError(f"task type {task_type!r}: uses={uses!r} must be a list of resource names")
    return tuple(dict.fromkeys(uses))


class Tally:
    """How many of each resource live now, and how many were made and torn down (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[str, int] = {}
        self._torn: dict[str, int] = {}

    def made(self, name: str) -> None:
        with self._lock:
            self._made[name] = self._made.get(name, 0) + 1

    def torn(self, name: str, count: int = 1) -> None:
        with self._lock:
            self._torn[name] = self._torn.get(name, 0) + count

    def view(self, names: Iterable[str] = ()) -> dict[str, dict[str, int]]:
        """resource name -> ``live``, ``made``, ``torn_down`` (every name of ``names`` too, at 0)."""
        with self._lock:
            out = {}
            for name in sorted(set(names) | set(self._made)):
                made, torn = self._made.get(name, 0), self._torn.get(name, 0)
                out[name] = {"live": made - torn, "made": made, "torn_down": torn}
            return out


class _Live:
    __slots__ = ("teardown", "value", "uses", "born")

    def __init__(self, teardown: Any, value: Any) -> None:
        self.teardown = teardown  # the suspended generator, or None for a plain factory
        self.value = value
        self.uses = 0
        self.born = time.monotonic()


class Held:
    """The live resources of one worker thread, or of one child process: used and torn down only there."""

    def __init__(self, tally: Any) -> None:
        self._tally = tally  # made(name), torn(name): a Tally, or the child's messages to the node
        self._live: dict[str, _Live] = {}

    def acquire(self, specs: Sequence[ResourceSpec]) -> dict[str, Any]:
        """The handler's keyword arguments: each resource of ``specs``, made now if none lives (or it aged out).

        Raises:
            ResourceError: a setup raised (``<name>: <Type>: <text>``); the next task tries again.
        """
        now = time.monotonic()
        values = {}
        for spec in specs:
            live = self._live.get(spec.name)
            if live is not None and spec.max_age is not None and now - live.born >= spec.max_age:
                self._teardown(spec.name)
                live = None
            if live is None:
                live = self._live[spec.name] = self._make(spec)
            values[spec.name] = live.value
        return values

    def _make(self, spec: ResourceSpec) -> _Live:
        try:
            made = spec.factory()
            if isinstance(made, types.GeneratorType):
                live = _Live(made, next(made))
            else:
                live = _Live(None, made)
        except StopIteration:
            raise ResourceError(f"{spec.name}: its factory returned without yielding a value") from None
        except BaseException as exc:  # a setup's failure answers its task; the worker serves on
            raise ResourceError(f"{spec.name}: {type(exc).__name__}: {exc}") from None
        self._tally.made(spec.name)
        return live

    def used(self, specs: Sequence[ResourceSpec], *, broken: bool) -> None:
        """After a task: tear down what it broke, what reached ``max_uses`` or ``max_age``."""
        now = time.monotonic()
        for spec in specs:
            live = self._live.get(spec.name)
            if live is None:
                continue
            live.uses += 1
            if (broken or (spec.max_uses is not None and live.uses >= spec.max_uses)
                    or (spec.max_age is not None and now - live.born >= spec.max_age)):
                self._teardown(spec.name)

    def close(self) -> None:
        """Tear down every live resource, the last made first (as pytest ends fixtures)."""
        for name in reversed(list(self._live)):
            self._teardown(name)

    def _teardown(self, name: str) -> None:
        live = self._live.pop(name)
        try:
            if live.teardown is not None:
                next(live.teardown)
                live.teardown.close()  # it yielded a second time: ended at that yield
                logger.warning("resource %s yielded more than once; its teardown stopped at the second yield", name)
        except StopIteration:
            pass
        except Exception:  # one teardown's failure must not keep the others (or the worker's end) from running
            logger.exception("tearing down resource %s failed", name)
        finally:
            self._tally.torn(name)


class ResourceRegistry:
    """The node's resources: their specs, the counts, and each worker thread's :class:`Held`."""

    def __init__(self) -> None:
        self.specs: dict[str, ResourceSpec] = {}
        self.tally = Tally()
        self._local = threading.local()

    def register(self, spec: ResourceSpec) -> None:
        self.specs[spec.name] = spec

    def specs_for(self, task_type: str, uses: Sequence[str]) -> tuple[ResourceSpec, ...]:
        """The specs ``uses`` names.

        Raises:
            ValueError: a name no resource is registered under (register resources before the task types).
        """
        missing = [name for name in uses if name not in self.specs]
        if missing:
            raise ValueError(f"task type {task_type!r} uses {', '.join(map(repr, missing))}, but no resource is "
                             "registered under that name (register_resource or @handlers.resource first)")
        return tuple(self.specs[name] for name in uses)

    def held(self) -> Held:
        """This thread's resources (made on first use)."""
        held = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = Held(self.tally)
        return held

    def release_thread(self) -> None:
        """Tear down this thread's resources (a pool loop ending runs this on its own thread)."""
        held = getattr(self._local, "held", None)
        if held is not None:
            held.close()

    def view(self) -> dict[str, dict[str, int]]:
        """resource name -> ``live``, ``made``, ``torn_down``, over threads and child processes."""
        return self.tally.view(self.specs)


class UsingResources:
    """A task type's handler, called with the resources it uses as keyword arguments.

    Args:
        held: this thread's (or child's) :class:`Held`, looked up at each call.
    """

    def __init__(self, handler: Callable[..., Any], specs: Sequence[ResourceSpec], held: Callable[[], Held]) -> None:
        self.handler = handler
        self._specs = tuple(specs)
        self._held = held

    def __call__(self, task: Mapping[str, Any]) -> Any:
        held = self._held()
        values = held.acquire(self._specs)
        broken = False
        try:
            return self.handler(task, **values)
        except ResourceBroken:
            broken = True
            raise
        finally:
            held.used(self._specs, broken=broken)

    def __repr__(self) -> str:
        return f"UsingResources({self.handler!r}, {[spec.name for spec in self._specs]})"
