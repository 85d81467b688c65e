"""A local OctoHub hub (API + WebSocket servers) for tests, demos and benchmarks.

Example::

    with LocalHub("my-key") as hub:
        ...  # point a node at hub.api_url
        task_id = hub.send_task("echo", {"x": 1})
        result = hub.wait_result(task_id)

How it is built: :class:`LocalHub` (``core.py``) owns a ``HubState`` (``state.py``: what the hub
knows and saw; its connection table, ``table.py``, follows the seed's or the Go server's rule) and
``HubServers`` (``servers.py``), which hand that state and the settings each part uses to
``api_server.py``, ``ws_server.py`` and ``deadline.py``. ``messages.py`` says what is sent;
``sockets.py`` holds the socket helpers they share.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = ["API_FAULTS", "GO_READ_DEADLINE", "LocalHub", "NodeSession", "WS_FAULTS", "install_hint", "lacks_websockets"]

#: Public name -> the module defining it. Imported on first use (PEP 562), so that this package,
#: and ``python -m octohub_sync.hub``, load without the ``hub`` extra and can say what is missing.
_LAZY = {"API_FAULTS": "core", "WS_FAULTS": "core", "LocalHub": "core",
         "GO_READ_DEADLINE": "deadline", "NodeSession": "table"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:  # AttributeError lets ``from octohub_sync.hub import messages`` import the module
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def install_hint() -> str:
    """How to install the local hub's dependency (``websockets``, the ``hub`` extra), for this install."""
    hint = "pip install 'octohub_sync[hub]'"
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "setup.cfg").is_file() and (checkout / "run_node.py").is_file():  # a clone, not site-packages
        hint += f", or in the clone {checkout}: pip install -e '.[hub]'"
    return hint


def lacks_websockets(exc: ImportError) -> bool:
    """True when ``exc`` says that ``websockets``, the hub's one dependency of its own, is not installed."""
    return (exc.name or "").split(".")[0] == "websockets"
