"""Testing your handlers against a real local hub: what the pytest plugin's fixtures hand you.

``octohub_node`` (see :mod:`octohub_sync.pytest_plugin`) is a :class:`LocalNode`: a real
node, with your handlers, connected over the real signed API request and WebSocket to a
:class:`~octohub_sync.hub.LocalHub` on 127.0.0.1. Its helpers are one line each::

    assert octohub_node.run("resize", {"path": "a.png"}) == {"resized": "a.png"}

This module imports the hub (and so the ``websockets`` library) only when a node is made.
"""
from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from ._config.settings import load_settings
from ._ops.log_safety import TRACEBACK
from .app import Setup, install_app, load_app
from .client import NodeWebSocketClient
from .exceptions import TaskFailed

if TYPE_CHECKING:
    from .hub import LocalHub

__all__ = ["TEST_SETTINGS", "LocalNode", "TaskFailed", "make_local_node"]

#: Settings of test nodes: they notice a drop, reconnect and stop within a test's patience.
TEST_SETTINGS: Mapping[str, Any] = dict(
    ping_interval=2.0, ping_timeout=1.0, reconnect_interval=0.2, reconnect_max_interval=1.0,
    stable_after=1.0, connect_timeout=3.0, shutdown_timeout=5.0, status_interval=0,
)

#: Seconds a helper waits by default (a result, a reconnection).
WAIT = 10.0

_numbers = itertools.count(1)


class _Tracebacks(logging.Handler):
    """Keeps the traceback of each ``failed`` line the node logs, by task id (for :class:`TaskFailed`)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        trace = getattr(record, TRACEBACK, None)
        if trace:
            self.found[getattr(record, "task_id", "")] = trace


class LocalNode:
    """A started node connected to a local hub, with one-line helpers for tests.

    Attributes:
        client: the :class:`NodeWebSocketClient` itself (``stats()``, ``register_task_handler``...).
        hub: the :class:`~octohub_sync.hub.LocalHub` it is connected to.
        pc_id: the node's id, as the hub knows it.
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name of a module importing it

    def __init__(self, client: NodeWebSocketClient, hub: "LocalHub") -> None:
        self.client = client
        self.hub = hub
        self.pc_id = client.pc_id

    def register(self, task_type: str, handler: Any) -> Any:
        """Serve ``task_type`` with ``handler`` from now on; returns the handler."""
        return self.client.register_task_handler(task_type, handler)

    def result(self, task_type: str, data: Any = None, *, timeout: float = WAIT,
               task_timeout: Optional[float] = None, task_id: Optional[str] = None) -> dict:
        """Send a task and return the hub's whole ``task_result`` (``status``, ``result`` or ``error``).

        Raises:
            TimeoutError: no result within ``timeout`` seconds.
        """
        sent = self.hub.send_task(task_type, {} if data is None else data, pc_id=self.pc_id,
                                  timeout=task_timeout, task_id=task_id)
        return self.hub.wait_result(sent, timeout=timeout)

    def run(self, task_type: str, data: Any = None, *, timeout: float = WAIT,
            task_timeout: Optional[float] = None) -> Any:
        """Send a task and return its result, as the handler returned it (through JSON).

        Raises:
            TaskFailed: the node answered ``failed`` (``.result["error"]`` says why).
            TimeoutError: no result within ``timeout`` seconds.
        """
        traces = _Tracebacks()
        logging.getLogger("octohub_sync").addHandler(traces)  # the node's failed line carries the traceback
        try:
            answer = self.result(task_type, data, timeout=timeout, task_timeout=task_timeout)
        finally:
            logging.getLogger("octohub_sync").removeHandler(traces)
        if answer.get("status") != "completed":
            raise TaskFailed(answer, traces.found.get(str(answer.get("task_id")), ""))
        return answer.get("result")

    def drop(self, *, reconnect: bool = True, timeout: float = WAIT) -> None:
        """Abort the connection (TCP reset, no close frame), as a dead network would.

        Args:
            reconnect: wait until the node is connected and ready again.

        Raises:
            TimeoutError: it did not reconnect within ``timeout`` seconds.
        """
        before = self._connections()
        self.hub.drop(self.pc_id)
        if reconnect and not self.hub.wait_for(
                lambda: self._connections() > before and self.hub.connected(self.pc_id)
                and any(session.ready for session in self.hub.sessions(self.pc_id)), timeout):
            raise TimeoutError(f"node {self.pc_id} did not reconnect within {timeout} s: {self.client.stats()}")
        if reconnect and not self.client.wait_connected(timeout):
            raise TimeoutError(f"node {self.pc_id} did not get ready within {timeout} s: {self.client.stats()}")

    def send_raw(self, frame: Union[str, bytes]) -> None:
        """Send one exact frame to the node (bytes go as a binary frame)."""
        self.hub.send_raw(frame, self.pc_id)

    def send_message(self, message: Mapping[str, Any]) -> None:
        """Send a JSON message to the node (for your message handlers)."""
        self.hub.send_message(dict(message), self.pc_id)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the node gracefully; returns what :meth:`NodeWebSocketClient.stop` returns."""
        return self.client.stop(timeout=timeout)

    def _connections(self) -> int:
        return sum(1 for c in self.hub.connections if c.get("pc_id") == self.pc_id)

    def __repr__(self) -> str:
        return f"LocalNode({self.pc_id!r}, hub API port {self.hub.api_port})"


def make_local_node(hub: "LocalHub", app: Union[str, Setup, None] = None, *, start: bool = True,
                    timeout: float = WAIT, **settings: Any) -> LocalNode:
    """A node for ``hub`` serving ``app``, started and connected (unless ``start=False``).

    Args:
        hub: a started local hub.
        app: a module name (``"mypackage.tasks"``, ``"mypackage.tasks:setup"``, as ``--app``)
            or a ``setup(client)`` function; None for the built-in handlers only.
        start: start the node and wait until it is connected and ready.
        **settings: settings by field name; they beat :data:`TEST_SETTINGS`. Nothing is read
            from ``.env`` or ``OCTOHUB_*`` variables: a test sees the same node everywhere.

    Raises:
        ConfigError: a setting is invalid, or the app does not load or registers nothing.
        TimeoutError: the node did not connect within ``timeout`` seconds.
    """
    values = {**TEST_SETTINGS, "server_host": "127.0.0.1", "server_port": hub.api_port, "ws_port": hub.ws_port,
              "signature_key": hub.key, "pc_id": f"node_test_{next(_numbers)}", **settings}
    client = NodeWebSocketClient(settings=load_settings(values, env_file=False, environ={}))
    if app is not None:
        name = app if isinstance(app, str) else getattr(app, "__qualname__", repr(app))
        install_app(client, load_app(app) if isinstance(app, str) else app, name)
    node = LocalNode(client, hub)
    if start:
        client.start()
        if not (client.wait_connected(timeout) and hub.wait_connected(client.pc_id, timeout)):
            client.stop(timeout=1)
            raise TimeoutError(f"node {client.pc_id} did not connect within {timeout} s: {client.stats()}")
    return node
