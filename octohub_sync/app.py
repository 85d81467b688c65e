"""A module of handlers is a node: ``octohub-node --app mypackage.tasks`` (``OCTOHUB_APP``).

``--app module:function`` calls ``function(client)`` to register handlers (the same hook as
``cli.main(setup=...)``). A bare ``--app module`` uses the module's ``setup(client)``, else its
:class:`Handlers` registry. The module is imported with the working directory first on
``sys.path``, as ``python -m`` does. Every failure is one :class:`ConfigError` line naming
``OCTOHUB_APP``: the program exits 2, since restarting will not fix it.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar, Union

from ._config.settings import APP_SPEC
from ._execution.middleware import check_middleware
from ._execution.options import TaskOptions
from ._execution.resources import ResourceSpec
from .exceptions import ConfigError

if TYPE_CHECKING:
    from .client import NodeWebSocketClient

__all__ = ["Handlers", "Setup", "install_app", "load_app"]

#: A function that registers handlers on the client before it starts.
Setup = Callable[["NodeWebSocketClient"], None]

APP_VARIABLE = "OCTOHUB_APP"

F = TypeVar("F", bound=Callable[..., Any])


class Handlers:
    """Handlers a module declares with decorators; ``--app module`` serves them.

    The decorators return each function unchanged, so a test calls the handler directly::

        handlers = Handlers()

        @handlers.task("resize")          # or @handlers.task: the task type is the function's name
        def resize(task):
            return {"path": task["data"]["path"]}

    ``@handlers.task("post", key="account", concurrency=1, rate="1/s")`` takes the keywords of
    ``register_task_handler`` (checked here, at import) and passes them on.

    A ``Handlers`` is itself a setup function: ``handlers(client)`` registers them all.
    """

    def __init__(self) -> None:
        #: task type -> handler, in the order they were declared.
        self.tasks: dict[str, Callable[..., Any]] = {}
        #: task type -> the keywords of register_task_handler it was declared with.
        self.options: dict[str, dict[str, Any]] = {}
        #: message kind -> handler.
        self.messages: dict[str, Callable[..., Any]] = {}
        #: Middleware, the outermost first (``client.add_middleware``).
        self.middlewares: list[Callable[..., Any]] = []
        #: resource name -> (generator function, its keywords of register_resource), registered first.
        self.resources: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}

    def task(self, task_type: Union[str, Callable[..., Any], None] = None, **options: Any) -> Any:
        """Decorator: ``@handlers.task("resize")``, ``@handlers.task()`` or ``@handlers.task``.

        Args:
            **options: keywords of ``register_task_handler`` (``concurrency=``, ``key=``, ``rate=``,
                ``retry_interrupted=``, ``isolation=``, ``max_tasks_per_child=``,
                ``max_memory_per_child=``, ``uses=``, ``retries=``, ``retry_on=``, ``retry_backoff=``,
                ``retry_backoff_max=``), kept per type and passed on by ``handlers(client)``.

        Raises:
            ValueError: the task type is declared twice in this registry, or an option's value is bad.
            TypeError: an option's value is of the wrong kind, or no such option.
        """
        if callable(task_type):
            return self._add(self.tasks, "task type", task_type.__name__, task_type)

        def declare(fn: F) -> F:
            name = task_type or fn.__name__
            TaskOptions.build(name, **options)  # a bad rate fails at import, naming the type
            self._add(self.tasks, "task type", name, fn)
            self.options[name] = dict(options)
            return fn
        return declare

    def middleware(self, fn: F) -> F:
        """Decorator (or call): run ``fn(task, call_next)`` around every handler (``client.add_middleware``).

        The first declared is the outermost. ``handlers(client)`` adds them before the handlers.

        Raises:
            TypeError: ``fn`` is not callable.
        """
        self.middlewares.append(check_middleware(fn))
        return fn

    def resource(self, name: str, *, max_uses: Optional[int] = None, max_age: Optional[float] = None) -> Callable[[F], F]:
        """Decorator of a generator function, written like a pytest fixture: ``@handlers.resource("browser")``.

        Setup before ``yield``, teardown after; handlers declared with ``uses=["browser"]`` get the
        yielded value as keyword ``browser``. ``handlers(client)`` passes it to ``register_resource``.

        Raises:
            ValueError: the name is declared twice, or a bad name or limit.
        """
        def declare(fn: F) -> F:
            ResourceSpec.build(name, fn, max_uses=max_uses, max_age=max_age)  # a bad limit fails at import
            if name in self.resources and self.resources[name][0] is not fn:
                raise ValueError(f"resource {name!r} is declared twice")
            self.resources[name] = (fn, {"max_uses": max_uses, "max_age": max_age})
            return fn
        return declare

    def message(self, kind: str) -> Callable[[F], F]:
        """Decorator: ``@handlers.message("notification")`` handles hub messages of that kind."""
        return lambda fn: self._add(self.messages, "message kind", kind, fn)

    def __call__(self, client: "NodeWebSocketClient") -> None:
        for fn in self.middlewares:
            client.add_middleware(fn)
        for name, (factory, keywords) in self.resources.items():  # before the task types that use them
            client.register_resource(name, factory, **keywords)
        for task_type, handler in self.tasks.items():
            client.register_task_handler(task_type, handler, **self.options.get(task_type, {}))
        for kind, handler in self.messages.items():
            client.register_message_handler(kind, handler)

    def __repr__(self) -> str:
        return f"Handlers(tasks={sorted(self.tasks)}, messages={sorted(self.messages)})"

    @staticmethod
    def _add(table: dict[str, Callable[..., Any]], what: str, name: str, fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"handler for {what} {name!r} is not callable")
        if name in table and table[name] is not fn:
            raise ValueError(f"{what} {name!r} is declared twice ({table[name].__name__} and {fn.__name__})")
        table[name] = fn
        return fn


def load_app(spec: str, *, variable: str = APP_VARIABLE) -> Setup:
    """Import the app ``module`` or ``module:function`` and return its setup function.

    The working directory goes first on ``sys.path`` (if it is not there yet), as with ``python -m``.

    Raises:
        ConfigError: one line naming ``variable``: bad syntax, the import failed, no such
            attribute, not callable, or a bare module with neither ``setup`` nor a registry.
    """
    if not APP_SPEC.match(spec):
        raise ConfigError(variable, spec, "expected module or module:function (dotted Python names)")
    module_name, _, attribute = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(variable, spec, f"no module named {exc.name!r} (looked in {cwd} and sys.path)") from None
        raise ConfigError(variable, spec, f"importing {module_name} failed: {_one_line(exc)}") from None
    except Exception as exc:  # the module's own code failed: one line, with where
        raise ConfigError(variable, spec, f"importing {module_name} failed: {_one_line(exc)}") from None
    if attribute:
        target: Any = module
        for part in attribute.split("."):
            if not hasattr(target, part):
                raise ConfigError(variable, spec, f"module {module_name!r} has no attribute {attribute!r}")
            target = getattr(target, part)
        if not callable(target):
            raise ConfigError(variable, spec, f"{spec} is not callable (it is a {type(target).__name__}); "
                                              "expected a function(client) that registers handlers")
        return target
    return _default_setup(module, spec, variable)


def _default_setup(module: Any, spec: str, variable: str) -> Setup:
    setup = getattr(module, "setup", None)
    if callable(setup):
        return setup
    registries = [name for name, value in vars(module).items() if isinstance(value, Handlers)]
    if len(registries) == 1:
        return getattr(module, registries[0])
    if registries:
        raise ConfigError(variable, spec, f"{spec} has several Handlers registries ({', '.join(registries)}): "
                                          f"name one, e.g. {spec}:{registries[0]}")
    raise ConfigError(variable, spec, f"{spec} has neither a setup(client) function nor a Handlers registry; "
                                      f"name the function that registers handlers: {spec}:function")


def install_app(client: "NodeWebSocketClient", setup: Setup, spec: str, *, variable: str = APP_VARIABLE) -> list[str]:
    """Call ``setup(client)`` and check that it registered something.

    Returns:
        The task types and message kinds it registered (or replaced), for the log.

    Raises:
        ConfigError: ``setup`` raised, or registered no handler.
    """
    tasks, messages = dict(client.runner.handlers), dict(client.receiver.message_handlers)
    try:
        setup(client)
    except Exception as exc:
        raise ConfigError(variable, spec, f"setting up the handlers failed: {_one_line(exc)}") from None
    added = [name for name, fn in client.runner.handlers.items() if tasks.get(name) is not fn]
    added += [f"message {kind}" for kind, fn in client.receiver.message_handlers.items()
              if messages.get(kind) is not fn]
    if not added:
        raise ConfigError(variable, spec, "the app registered no handler")
    return added


def _one_line(exc: BaseException) -> str:
    """``Type: message (file, line N)``: where in the user's code it happened, on one line."""
    where: Optional[str] = None
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f"{exc.filename}, line {exc.lineno}"
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            where = f"{frames[-1].filename}, line {frames[-1].lineno}"
    text = str(exc.msg if isinstance(exc, SyntaxError) else exc).splitlines()
    message = f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__
    return f"{message} ({where})" if where else message
