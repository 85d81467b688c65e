"""A node process stopped (SIGSTOP) while its path to the hub died: after SIGCONT it reconnects at once.

Without the pause check it would wait for the keep-alive to time out (OCTOHUB_PING_INTERVAL +
OCTOHUB_PING_TIMEOUT without a pong) before it even began to reconnect.
"""
from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from octohub_sync._node.clock_jumps import MIN_PAUSE
from octohub_sync.hub import LocalHub

from .conftest import KEY, free_port
from .proxy import StallProxy
from .test_faults import ready_count
from .test_process import finish, log_text, spawn

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP/SIGCONT (POSIX)")

PING_INTERVAL, PING_TIMEOUT = MIN_PAUSE, MIN_PAUSE - 0.5
#: Longer than the keep-alive interval, shorter than the no-pong rule (interval + timeout + 1 s).
PAUSE = PING_INTERVAL + 1.5
#: Resume to node_ready on the new connection; the no-pong rule alone takes PING_TIMEOUT + 1 - 1.5 s more.
BOUND = 2.5


def stop_cleanly(node) -> None:
    """SIGTERM: the node must stop by itself with exit code 0."""
    node.send_signal(signal.SIGTERM)
    code, err = finish(node)
    assert code == 0, err[-3000:]


def keep_stopped(proc: psutil.Process, seconds: float) -> None:
    """The fault itself: the process stays stopped for ``seconds`` (nothing to wait for meanwhile)."""
    time.sleep(seconds)
    assert proc.status() == psutil.STATUS_STOPPED


def stop_while_the_path_dies(hub: LocalHub, node, proxy: StallProxy, pc_id: str, seconds: float) -> float:
    """SIGSTOP ``node``, kill its path, SIGCONT after ``seconds``; return the resume's moment (monotonic)
    once ``node_ready`` went out on a new connection."""
    assert hub.wait_for(lambda: ready_count(hub, pc_id) == 1, 20), log_text(node)
    process = psutil.Process(node.pid)
    node.send_signal(signal.SIGSTOP)
    proxy.stall()  # the path dies while the node cannot notice
    keep_stopped(process, seconds)
    node.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    assert hub.wait_for(lambda: ready_count(hub, pc_id) == 2, 20), log_text(node)
    return resumed


def test_sigstop_while_the_path_dies_reconnects_at_once_after_sigcont(tmp_path: Path) -> None:
    with LocalHub(KEY) as hub:
        proxy = StallProxy(hub.ws_port)
        hub.ws_port = proxy.port  # the API hands out the proxy's address: the path we can kill
        metrics = free_port()
        node = spawn(hub, tmp_path, "node_sleepy", "--ping-interval", str(PING_INTERVAL),
                     "--ping-timeout", str(PING_TIMEOUT), "--metrics-port", str(metrics))
        try:
            resumed = stop_while_the_path_dies(hub, node, proxy, "node_sleepy", PAUSE)
            took = time.monotonic() - resumed
            print(f"resume to node_ready on a new connection: {took:.3f} s")
            assert took < BOUND, log_text(node)
            # The new connection has a freshly signed address: asked of the API after the resume.
            assert any(r["time"] > resumed and r["status"] == 200 for r in hub.api_requests)
            assert "process paused for" in log_text(node)
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
                assert 'octohub_node_pauses_total{pc_id="node_sleepy"} 1' in response.read().decode()
            assert hub.wait_result(hub.send_task("echo", {"n": 1}, pc_id="node_sleepy"))["status"] == "completed"
            stop_cleanly(node)
        finally:
            node.kill()
            proxy.close()


#: A pause shorter than the default keep-alive (30 s): no longer waits for the keep-alive to fail.
SHORT_PAUSE = 15.0
#: Resume to node_ready on a new connection, default settings: the probe's deadline and a reconnect.
PROBE_BOUND = 5.0


def test_a_short_sigstop_on_a_dead_path_is_probed_and_reconnected_within_5_s(tmp_path: Path) -> None:
    """Default keep-alive settings, the go dialect with its hazards: the probe is a JSON ping, never a ping frame."""
    with LocalHub(KEY, dialect="go") as hub:
        proxy = StallProxy(hub.ws_port)
        hub.ws_port = proxy.port
        node = spawn(hub, tmp_path, "node_napping")
        try:
            resumed = stop_while_the_path_dies(hub, node, proxy, "node_napping", SHORT_PAUSE)
            took = time.monotonic() - resumed
            print(f"15 s SIGSTOP, default settings: resume to node_ready on a new connection in {took:.3f} s")
            assert took < PROBE_BOUND, log_text(node)
            text = log_text(node)
            assert "checking the connection to the hub" in text and "no answer from the hub within" in text, text
            # (The go table may now have forgotten the new connection when the stalled one ended: the ghost of
            # docs/protocol.md §5, which re-registration ends; tests/test_reregister.py.)
            assert hub.crashes == [] and hub.frames("ping") == 0
            stop_cleanly(node)
        finally:
            node.kill()
            proxy.close()


def test_a_short_sigstop_on_a_live_path_keeps_the_connection(tmp_path: Path) -> None:
    """The probe is answered: the connection stays, nothing reconnects."""
    with LocalHub(KEY, dialect="go") as hub:
        node = spawn(hub, tmp_path, "node_dozing")
        try:
            assert hub.wait_for(lambda: ready_count(hub, "node_dozing") == 1, 20), log_text(node)
            process = psutil.Process(node.pid)
            node.send_signal(signal.SIGSTOP)
            keep_stopped(process, MIN_PAUSE + 1.0)
            node.send_signal(signal.SIGCONT)
            assert wait_for_log(node, "the hub answered: the connection is fine", 10), log_text(node)
            assert len(hub.connections) == 1 and hub.connections[0]["closed"] is None
            stop_cleanly(node)
        finally:
            node.kill()


def wait_for_log(node, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log_text(node):
            return True
        time.sleep(0.05)  # polling the log file with a deadline
    return False
