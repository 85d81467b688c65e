"""octohub_sync: the synchronous, threaded node client for OctoHub.

The public names load on first use (PEP 562): importing the package, as pytest does for its
plugin (``octohub_sync.pytest_plugin``) in every run of every project that installed it,
imports neither websocket-client, requests nor SQLite.
"""
from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._ops import log_safety as _log_safety
from ._version import __version__

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports them
    from ._config.settings import Settings, load_settings
    from ._execution.task_control import TaskControl, current_task
    from .app import Handlers
    from .client import NodeWebSocketClient
    from .exceptions import (ApiError, AuthError, ConfigError, GaveUpError, OctoHubError, ProtocolError, ProxyError,
                             ResourceBroken, ResourceError, TaskCancelled)

__all__ = [
    "ApiError",
    "AuthError",
    "ConfigError",
    "GaveUpError",
    "Handlers",
    "NodeWebSocketClient",
    "OctoHubError",
    "ProtocolError",
    "ProxyError",
    "ResourceBroken",
    "ResourceError",
    "Settings",
    "TaskCancelled",
    "TaskControl",
    "__version__",
    "current_task",
    "load_settings",
]

#: Public name -> the module that defines it.
_HOMES = {
    "Handlers": "app",
    "NodeWebSocketClient": "client",
    "Settings": "_config.settings",
    "load_settings": "_config.settings",
    "TaskControl": "_execution.task_control",
    "current_task": "_execution.task_control",
    **dict.fromkeys(["ApiError", "AuthError", "ConfigError", "GaveUpError", "OctoHubError", "ProtocolError",
                     "ProxyError", "ResourceBroken", "ResourceError", "TaskCancelled"], "exceptions"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:  # AttributeError, so that hasattr() and "from octohub_sync import submodule" work
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# A library never configures logging; the program that runs it does (see octohub_sync.cli).
logging.getLogger(__name__).addHandler(logging.NullHandler())
# Filters only: whatever handlers the program installs, the library's records reach them with
# signatures masked and the hub's control characters escaped (_ops/log_safety.py).
_log_safety.install()
