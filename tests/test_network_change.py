"""A network change under a connected node: a real route moves in network namespaces of our own.

Two namespaces joined by two veth pairs stand for a laptop with two ways to the hub (Wi-Fi and
Ethernet, or a VPN): the hub listens in one on an address of its loopback, the node runs in the
other, where a route of lower metric on path 1 is preferred to path 2. Taking path 1 down moves
the route: the local address the system would use towards the hub changes (_transport/netpath.py), the
node probes its connection, gets no answer on the dead path, and connects again on path 2.

The addresses (198.18.0.0/15, set aside for tests of networks) exist only inside these
namespaces, which this test makes and removes; nothing leaves them. Linux only, as root, with
``ip`` (iproute2): CI runs as root and .ci/run installs iproute2.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from .conftest import KEY
from .test_process import ROOT, finish, log_text, spawn

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not hasattr(os, "geteuid") or os.geteuid() != 0
    or shutil.which("ip") is None, reason="network namespaces need Linux, root and iproute2's ip")

HUB = "198.18.0.1"
NODE_PATH1, NODE_PATH2 = "198.18.1.2", "198.18.2.2"
#: The network change to node_ready on the new path, default settings.
BOUND = 5.0


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str]]:
    """(the hub's namespace, the node's, the node's end of path 1)."""
    tag = uuid.uuid4().hex[:6]
    hub_ns, node_ns = f"oh{tag}h", f"oh{tag}n"
    ip("netns", "add", hub_ns)
    ip("netns", "add", node_ns)
    try:
        for n in ("1", "2"):
            ip("link", "add", f"n{tag}{n}", "netns", node_ns, "type", "veth", "peer", "name", f"h{tag}{n}",
               "netns", hub_ns)
            ip("-n", node_ns, "addr", "add", f"198.18.{n}.2/24", "dev", f"n{tag}{n}")
            ip("-n", hub_ns, "addr", "add", f"198.18.{n}.1/24", "dev", f"h{tag}{n}")
            ip("-n", node_ns, "link", "set", f"n{tag}{n}", "up")
            ip("-n", hub_ns, "link", "set", f"h{tag}{n}", "up")
        for ns in (hub_ns, node_ns):
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", hub_ns, "addr", "add", f"{HUB}/32", "dev", "lo")
        ip("-n", node_ns, "route", "add", f"{HUB}/32", "via", "198.18.1.1", "metric", "100")
        ip("-n", node_ns, "route", "add", f"{HUB}/32", "via", "198.18.2.1", "metric", "200")
        yield hub_ns, node_ns, f"n{tag}1"
    finally:
        for ns in (node_ns, hub_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def start_hub(hub_ns: str, log: Path) -> subprocess.Popen:
    """The local hub's program in the hub's namespace, in the go dialect; returns once it listens."""
    with open(log, "w") as stderr:  # the child keeps its own copy of the descriptor
        hub = subprocess.Popen(["ip", "netns", "exec", hub_ns, sys.executable, "-m", "octohub_sync.hub",
                                "--host", HUB, "--key", KEY, "--dialect", "go"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=stderr, text=True)
    assert hub.stdout is not None
    line = hub.stdout.readline()  # its first line says where it listens (or why it cannot)
    assert line.startswith("local hub: API"), line
    return hub


def ready_lines(node: subprocess.Popen) -> int:
    return log_text(node).count("sent node_ready")


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)  # polling a log file, with a deadline
    return predicate()


def test_a_route_that_moves_makes_the_node_reconnect_on_the_new_path_within_5_s(
        namespaces: tuple[str, str, str], tmp_path: Path) -> None:
    hub_ns, node_ns, path1 = namespaces
    hub = start_hub(hub_ns, tmp_path / "hub.log")
    node = spawn(types.SimpleNamespace(api_port=8080), tmp_path, "node_roaming", host=HUB,  # type: ignore[arg-type]
                 prefix=("ip", "netns", "exec", node_ns))
    try:
        assert wait_for(lambda: ready_lines(node) == 1, 20), log_text(node)
        changed = time.monotonic()
        ip("-n", node_ns, "link", "set", path1, "down")  # path 1 is gone: the Wi-Fi dropped
        assert wait_for(lambda: ready_lines(node) == 2, 20), log_text(node)
        took = time.monotonic() - changed
        print(f"network change to node_ready on the new path, default settings: {took:.3f} s")
        text = log_text(node)
        assert f"the local address towards the hub changed ({NODE_PATH1} -> {NODE_PATH2})" in text, text
        assert "no answer from the hub within" in text, text
        assert took < BOUND, text
        assert "panic" not in (tmp_path / "hub.log").read_text()
        node.terminate()
        code, err = finish(node)
        assert code == 0, err[-3000:]
    finally:
        node.kill()
        hub.terminate()
        try:
            hub.wait(10)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
