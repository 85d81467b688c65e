"""Fixtures: a real local hub on 127.0.0.1 (port 0) and nodes wired to it."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any, Callable, Iterator, Optional

import pytest

from octohub_sync import NodeWebSocketClient, load_settings
from octohub_sync._delivery.delivery import ResultDelivery
from octohub_sync.hub import LocalHub
from octohub_sync._delivery.ledger import MemoryStore
from octohub_sync._ops.stats import Stats

KEY = "test-key-0123456789abcdef"

#: Settings that make a node react within a test's patience (no value is a timing assertion).
FAST = dict(
    ping_interval=2.0, ping_timeout=1.0, reconnect_interval=0.2, reconnect_max_interval=1.0,
    stable_after=1.0, connect_timeout=3.0, shutdown_timeout=5.0, status_interval=0,
)


def node_threads() -> list[threading.Thread]:
    """Threads that belong to a node (the hub's are named hub-*)."""
    return [t for t in threading.enumerate() if t.name.startswith("octohub-") and t.is_alive()]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or the deadline passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def run_doc_example(page: str) -> list[str]:
    """Run the first ``python`` block of ``page`` (``docs/limits.md``) in a fresh interpreter; its stdout lines."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / page).read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)  # type: ignore[union-attr]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gate:
    """Handlers that say when they started and wait until the test releases them."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def handler(self, result: Any) -> Callable[[dict], Any]:
        def handle(task: dict) -> Any:
            self.started.set()
            self.release.wait(10)
            return result(task) if callable(result) else result
        return handle


def connected_node(make_node, handlers: dict, **opts: Any) -> NodeWebSocketClient:
    """A node with ``handlers`` registered, started and connected."""
    client = make_node(_start=False, **opts)
    for task_type, handler in handlers.items():
        client.register_task_handler(task_type, handler)
    client.start()
    assert client.wait_connected(10)
    return client


class RecordingConnection:
    """What ResultDelivery and FrameReceiver use of a Connection, without a socket: send_many(),
    ping(), abort(), begin_close(). ``fail`` makes every frame's send raise; ``on_send`` runs before
    each frame. As a real Connection, it writes nothing once begin_close() was called, and it closed
    cleanly when the hub then answered with a close frame (:meth:`hub_answered_close`)."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict] = []
        self.pings: list[bytes] = []
        self.fail = fail
        self.aborted = 0
        self.closing_since: Optional[float] = None
        self.opened_at: Optional[float] = time.monotonic()  # open: the WebSocket handshake is done
        self.close_code: Optional[int] = None
        self.on_send: Optional[Callable[[], None]] = None

    @property
    def closed_cleanly(self) -> bool:
        return self.closing_since is not None and self.close_code is not None

    def begin_close(self) -> None:
        if self.closing_since is None:
            self.closing_since = time.monotonic()

    def hub_answered_close(self, code: int = 1000) -> None:
        self.close_code = code

    def send(self, frame: str) -> None:
        if self.on_send is not None:
            self.on_send()
        if self.fail:
            raise OSError("broken pipe")
        self.sent.append(json.loads(frame))

    def send_many(self, frames: list[str]) -> bool:
        if self.closing_since is not None:
            return False
        for frame in frames:
            self.send(frame)
        return True

    def ping(self, payload: bytes) -> bool:
        if self.closing_since is not None:
            return False
        self.pings.append(payload)
        return True

    def abort(self) -> None:
        self.aborted += 1


class RecordingStore(MemoryStore):
    """A MemoryStore that remembers which results were added and which removed (confirmed or dropped)."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[str] = []
        self.removed: list[int] = []

    def add_result(self, task_id: str, frame: str, then: Any, *, finished: bool = False) -> None:
        self.added.append(task_id)
        super().add_result(task_id, frame, then, finished=finished)

    def remove_results(self, seqs: Any) -> None:
        self.removed.extend(seqs)


def make_delivery(stats: Stats, outbox_size: int = 10, store: Optional[MemoryStore] = None) -> ResultDelivery:
    """A ResultDelivery without a ledger, as a node with OCTOHUB_STATE_DIR=off has."""
    return ResultDelivery(outbox_size=outbox_size, store=MemoryStore() if store is None else store, stats=stats,
                          log=logging.LoggerAdapter(logging.getLogger("octohub_sync.test"), {}))


def result_frame(task_id: str) -> str:
    """A completed task_result frame whose result is its task_id."""
    return json.dumps({"type": "task_result", "task_id": task_id, "status": "completed", "result": task_id})


@pytest.fixture(autouse=True)
def private_state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The program keeps a ledger by default ($STATE_DIRECTORY, else $XDG_STATE_HOME/octohub-node):
    each test gives the programs it starts a fresh one, never ~/.local/state, where a ledger left by
    an earlier run (or held by another run) would answer this run's tasks from its cache, or lock it out."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state-home")))


@pytest.fixture(params=["seed", "go"])
def any_hub(request: pytest.FixtureRequest) -> Iterator[LocalHub]:
    """A local hub in each dialect: messages go out as {"type": ..} or {"action": .., "data": {..}}."""
    with LocalHub(KEY, dialect=request.param) as h:
        yield h


def connected(make_node, hub: LocalHub, handlers: dict, **opts: Any) -> NodeWebSocketClient:
    """A node of ``hub`` with ``handlers`` registered, started, and ready at both ends."""
    client = make_node(_hub=hub, _start=False, **opts)
    for task_type, handler in handlers.items():
        client.register_task_handler(task_type, handler)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    return client


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    with LocalHub(KEY) as h:
        yield h


@pytest.fixture
def make_node(hub: LocalHub) -> Iterator[Callable[..., NodeWebSocketClient]]:
    """Build nodes pointed at ``hub`` (or another hub via ``_hub=``); all are stopped afterwards.

    The node's environment is empty unless ``_environ=`` gives one (proxy variables, say).
    """
    made: list[NodeWebSocketClient] = []

    def make(_hub: LocalHub | None = None, _start: bool = True, _environ: dict[str, str] | None = None,
             **overrides: Any) -> NodeWebSocketClient:
        target = _hub or hub
        values = {**FAST, "server_host": "127.0.0.1", "server_port": target.api_port,
                  "ws_port": target.ws_port, "signature_key": target.key, "pc_id": f"node_test{len(made)}"}
        values.update(overrides)
        client = NodeWebSocketClient(settings=load_settings(values, env_file=False, environ=_environ or {}))
        made.append(client)
        if _start:
            client.start()
        return client

    yield make
    for client in made:
        client.stop(timeout=5)
    assert wait_until(lambda: not node_threads(), 10), f"threads left: {node_threads()}"


@pytest.fixture
def node(make_node: Callable[..., NodeWebSocketClient], hub: LocalHub) -> NodeWebSocketClient:
    """A started node, connected and ready."""
    client = make_node()
    assert client.wait_connected(10), client.stats()
    assert hub.wait_connected(client.pc_id, timeout=10)
    return client
