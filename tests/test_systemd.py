"""systemd readiness and liveness: READY/WATCHDOG/STOPPING on a real notify socket, /livez and /readyz."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest
import requests

from octohub_sync import NodeWebSocketClient, load_settings
from octohub_sync._ops import liveness as liveness_module
from octohub_sync._ops.liveness import Heartbeats, Verdict, liveness, readiness
from octohub_sync.sdnotify import NotifySocket, SystemdNotifier, status_text
from octohub_sync._ops.stats import NodeState
from octohub_sync.testing import TEST_SETTINGS, LocalNode

from .conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "examples" / "systemd").glob("*.service"))


class NotifyListener:
    """What systemd's end of ``$NOTIFY_SOCKET`` would receive: a real AF_UNIX datagram socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: List[str] = []

    def receive_until(self, predicate, timeout: float) -> bool:
        """Collect datagrams until ``predicate(messages)`` holds or the deadline passes."""
        deadline = time.monotonic() + timeout
        while not predicate(self.messages):
            if time.monotonic() > deadline:
                return False
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        return True

    def first(self, prefix: str) -> int:
        """Index of the first message with a line starting with ``prefix``, else -1."""
        lines = [m.split("\n") for m in self.messages]
        return next((i for i, m in enumerate(lines) if any(line.startswith(prefix) for line in m)), -1)

    def count(self, prefix: str) -> int:
        return sum(1 for m in self.messages if any(line.startswith(prefix) for line in m.split("\n")))


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    directory = tempfile.mkdtemp(prefix="sd", dir="/tmp")  # AF_UNIX paths are short (108 bytes)
    notify = NotifyListener(os.path.join(directory, "notify"))
    yield notify
    notify.sock.close()
    shutil.rmtree(directory)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # a proxy from the environment must not see 127.0.0.1
        yield session


def node_for(hub, **options) -> NodeWebSocketClient:
    """A node for the plugin's hub with client options the plugin does not pass (systemd_notify)."""
    values = {**TEST_SETTINGS, "server_host": "127.0.0.1", "server_port": hub.api_port, "signature_key": hub.key,
              "pc_id": "node_sd"}
    return NodeWebSocketClient(settings=load_settings(values, env_file=False, environ={}), **options)


# -- the decisions, without a thread ---------------------------------------------------------------

@pytest.mark.parametrize("state, ages, ok, reason", [
    (NodeState.CONNECTED, {"w": 0.2, "t": 0.3}, True, "connected; loops ticking"),
    (NodeState.RECONNECTING, {"w": 0.2, "t": 0.3}, True, "reconnecting; loops ticking"),  # a hub outage: alive
    (NodeState.CONNECTED, {"w": 0.2, "t": 12.0}, False, "t has not ticked for 12.0 s"),
    (NodeState.STOPPING, {"w": 30.0, "t": 30.0}, True, "stopping"),
    (NodeState.STOPPED, {"w": 0.0, "t": 0.0}, False, "the node is stopped"),
    (NodeState.GAVE_UP, {"w": 0.0, "t": 0.0}, False, "the node is gave up"),
])
def test_liveness(state: NodeState, ages: dict, ok: bool, reason: str) -> None:
    assert liveness(state, ages) == Verdict(ok, reason)


@pytest.mark.parametrize("state, ready, silent, ok", [
    (NodeState.CONNECTED, True, 1.0, True),
    (NodeState.CONNECTED, True, 59.0, True),
    (NodeState.CONNECTED, True, 61.0, False),     # two ping intervals of 30 s without a frame or pong
    (NodeState.CONNECTED, False, 1.0, False),     # node_ready not sent yet
    (NodeState.RECONNECTING, True, 1.0, False),
    (NodeState.CONNECTED, True, None, False),
])
def test_readiness(state: NodeState, ready: bool, silent: Optional[float], ok: bool) -> None:
    assert readiness(state, ready=ready, silent_for=silent, ping_interval=30.0).ok is ok


def test_heartbeats() -> None:
    beats = Heartbeats(["a", "b"])
    beats.reset(100.0)
    beats.beat("a", 104.0)
    assert beats.ages(105.0) == {"a": 1.0, "b": 5.0}


@pytest.mark.parametrize("environ, address, interval", [
    ({}, None, None),
    ({"NOTIFY_SOCKET": "relative/path"}, None, None),
    ({"NOTIFY_SOCKET": "vsock:2:1234"}, None, None),
    ({"NOTIFY_SOCKET": "/run/systemd/notify"}, "/run/systemd/notify", None),
    ({"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "30000000"}, "@abstract", 15.0),
    ({"NOTIFY_SOCKET": "@a", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, "@a", 15.0),
    ({"NOTIFY_SOCKET": "@a", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, "@a", None),  # another process's
    ({"NOTIFY_SOCKET": "@a", "WATCHDOG_USEC": "soon"}, "@a", None),
])
def test_notify_socket_from_environ(environ: dict, address: Optional[str], interval: Optional[float]) -> None:
    notify = NotifySocket.from_environ(environ, pid=42)
    assert (notify and notify.address, notify and notify.watchdog_interval) == (address, interval)


def test_notifier_says_what_and_when() -> None:
    sent: List[str] = []
    alive = [Verdict(True, "ok")]
    stats = {"state": "connecting", "tasks_completed": 0, "tasks_failed": 0, "tasks_rejected": 0,
             "tasks_running": 0, "tasks_queued": 0, "outbox": 0, "reconnects": 0}
    log = logging.LoggerAdapter(logging.getLogger("test"), {})
    notifier = SystemdNotifier(send=sent.append, alive=lambda: alive[0], stats=lambda: stats, watchdog_interval=5.0,
                               log=log)
    notifier.tick(0.0)
    notifier.tick(1.0)
    assert sent == ["EXTEND_TIMEOUT_USEC=30000000", "STATUS=" + status_text(stats)]  # starting: no ping yet
    stats["state"] = "connected"
    notifier.ready()
    notifier.ready()  # each reconnection's node_ready: READY=1 only once
    assert sent[2:] == ["READY=1\nSTATUS=" + status_text(stats)]
    notifier.tick(2.0)
    notifier.tick(3.0)
    notifier.tick(7.5)
    assert sent[3:] == ["WATCHDOG=1", "WATCHDOG=1"]
    alive[0] = Verdict(False, "octohub-timers has not ticked for 11.0 s")
    notifier.tick(20.0)
    assert sent[5:] == []  # withheld: systemd restarts a wedged node
    stats["tasks_completed"] = 1
    notifier.tick(20.5)
    assert sent[5:] == ["STATUS=" + status_text(stats)]
    notifier.stopping()
    notifier.tick(40.0)
    assert sent[6:] == ["STOPPING=1\nSTATUS=stopping: draining running tasks"]


# -- a real notify socket ---------------------------------------------------------------------------

def test_ready_watchdog_stopping_in_order_in_process(octohub_hub, listener: NotifyListener) -> None:
    abstract = NotifyListener(f"@octohub-test-{os.getpid()}-{time.monotonic_ns()}")  # systemd's other kind
    try:
        for where in (listener, abstract):
            client = node_for(octohub_hub, systemd_notify=NotifySocket(where.address, watchdog_interval=0.1))
            client.start()
            try:
                assert where.receive_until(lambda m: where.count("WATCHDOG=1") >= 3, 10), where.messages
                assert client.is_connected()
            finally:
                client.stop()
            assert where.receive_until(lambda m: where.first("STOPPING=1") >= 0, 5), where.messages
            assert 0 <= where.first("READY=1") < where.first("WATCHDOG=1") < where.first("STOPPING=1")
            assert where.count("READY=1") == 1 and where.first("WATCHDOG=1") > where.first("READY=1")
            after = where.messages[where.first("STOPPING=1"):]
            assert not any("WATCHDOG=1" in m for m in after)
    finally:
        abstract.sock.close()


def test_the_program_under_a_fake_systemd(octohub_hub, listener: NotifyListener, tmp_path: Path) -> None:
    # What the unit gives the program: NOTIFY_SOCKET, WATCHDOG_USEC, the key as a credential, --app.
    (tmp_path / "octohub_signature_key").write_text(octohub_hub.key + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    env.update(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="300000", CREDENTIALS_DIRECTORY=str(tmp_path))
    with open(tmp_path / "node.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "octohub_sync", "--env-file", os.devnull, "--server-host",
                                 "127.0.0.1", "--server-port", str(octohub_hub.api_port), "--app", "examples.tasks",
                                 "--pc-id", "node_unit"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        assert listener.receive_until(lambda m: listener.first("READY=1") >= 0, 30), (tmp_path / "node.log").read_text()
        assert octohub_hub.wait_connected("node_unit", 5)  # READY=1 came after node_ready
        assert octohub_hub.wait_result(octohub_hub.send_task("reverse", {"text": "ab"}))["result"] == "ba"
        assert listener.receive_until(lambda m: listener.count("WATCHDOG=1") >= 2, 10)
        # systemctl status shows the state and counts (STATUS= at most every 2 s).
        assert listener.receive_until(lambda m: any("STATUS=connected; tasks completed 1," in x for x in m), 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, (tmp_path / "node.log").read_text()
    finally:
        proc.kill()
        proc.wait()
    assert listener.receive_until(lambda m: listener.first("STOPPING=1") >= 0, 5), listener.messages
    assert 0 <= listener.first("READY=1") < listener.first("WATCHDOG=1") < listener.first("STOPPING=1")


def test_a_wedged_loop_stops_the_pings(octohub_hub, listener: NotifyListener, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(liveness_module, "MAX_TICK_AGE", 0.5)
    client = node_for(octohub_hub, systemd_notify=NotifySocket(listener.address, watchdog_interval=0.1))
    wedge, unwedge = threading.Event(), threading.Event()

    def stuck(now: float) -> None:  # the timers loop gets stuck in here while the test says so
        if wedge.is_set():
            unwedge.wait(10)

    client.runner.expire = stuck  # type: ignore[method-assign]
    client.start()
    try:
        assert client.wait_connected(10)
        assert listener.receive_until(lambda m: listener.count("WATCHDOG=1") >= 2, 5)
        wedge.set()
        assert wait_until(lambda: not client.liveness().ok, 5)
        assert "octohub-timers has not ticked" in client.liveness().reason
        listener.receive_until(lambda m: False, 0.3)  # what was sent before
        listener.messages.clear()
        listener.receive_until(lambda m: False, 0.5)
        assert listener.count("WATCHDOG=1") == 0, listener.messages
        assert caplog.text.count("not alive (octohub-timers has not ticked") == 1
        unwedge.set()
        assert listener.receive_until(lambda m: listener.count("WATCHDOG=1") >= 1, 5)
        assert client.liveness().ok
    finally:
        unwedge.set()
        client.stop()


def test_livez_stays_200_in_a_hub_outage_while_readyz_turns_503(octohub_make_node, octohub_hub,
                                                                 http: requests.Session) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node: LocalNode = octohub_make_node(metrics_port=port)
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> requests.Response:
        return http.get(base + path, timeout=5)

    assert get("/livez").status_code == 200
    assert wait_until(lambda: get("/readyz").status_code == 200, 5)
    assert get("/readyz").json() == {"status": "ok", "reason": "connected", "state": "connected", "pc_id": node.pc_id}

    octohub_hub.stop_ws()  # the hub is gone: the node reconnects, and is alive doing so
    assert wait_until(lambda: node.client.stats()["state"] == "reconnecting", 5)
    ready = get("/readyz")
    assert ready.status_code == 503 and ready.json()["reason"] == "the node is reconnecting"
    live = get("/livez")
    assert live.status_code == 200 and live.json()["reason"] == "reconnecting; loops ticking"
    assert get("/healthz").status_code == 200  # unchanged: ok while reconnecting within limits

    octohub_hub.start_ws()
    assert wait_until(lambda: get("/readyz").status_code == 200, 10)
    node.stop()
    with pytest.raises(requests.ConnectionError):
        get("/livez")


def test_not_ready_when_the_hub_goes_silent(octohub_make_node) -> None:
    node: LocalNode = octohub_make_node(ping_interval=60.0, ping_timeout=10.0, hub_read_timeout=0)
    assert node.client.readiness().ok
    # Nothing from the hub for longer than two ping intervals: a path that died without a word.
    node.client.receiver.last_frame = node.client.delivery.link.conn.last_pong = time.monotonic() - 121
    verdict = node.client.readiness()
    assert not verdict.ok and verdict.reason.startswith("no frame or pong for 121.")


# -- the example units ------------------------------------------------------------------------------

def unit_lines(path: Path) -> List[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_units_are_type_notify_with_a_watchdog_and_a_credential(unit: Path) -> None:
    lines = unit_lines(unit)
    for wanted in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30",
                   "LoadCredential=octohub_signature_key:/etc/octohub/signature_key", "RestartPreventExitStatus=2"):
        assert wanted in lines, wanted
    assert not any("SIGNATURE_KEY=" in line for line in lines)  # the key is never in the unit's environment
    assert any(line.startswith("ExecStart=") and "--app " in line for line in lines) or \
        "Environment=OCTOHUB_APP=mypackage.tasks" in lines


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_units_verify(unit: Path, tmp_path: Path) -> None:
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/octohub/venv/bin/octohub-node", "/bin/true"))
    name = copy.name.replace("@.", "@a.")
    proc = subprocess.run(["systemd-analyze", "verify", name], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_liveness_and_notifier_know_no_client() -> None:
    # They get callables (alive, stats, send), as the watchdog and the metrics server do.
    for name in ("_ops/liveness.py", "sdnotify.py"):
        source = (ROOT / "octohub_sync" / name).read_text()
        assert "from .client" not in source and "from ..client" not in source and "import client" not in source, name
