"""The metrics server against hostile local clients: a flood of idle connections, a slowloris, a
web page's DNS rebinding (a foreign ``Host:``); and the node's word for running out of descriptors."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest
import requests

from octohub_sync._ops.status_server import REQUEST_TIMEOUT, MetricsServer
from octohub_sync.hub import LocalHub
from octohub_sync._ops.status_guard import MAX_CONNECTIONS, Slots, allowed_host

from .conftest import KEY, free_port, wait_until
from .test_log_safety import read_until
from .test_process import finish, log_text, spawn

pytestmark = pytest.mark.timeout(60)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE and SIGTERM are POSIX")

#: The flood of issue 28, point 7: more idle connections than the node's 1,024 descriptors.
FLOOD = 1100


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # a proxy from the environment must not see 127.0.0.1
        yield session


def raw_get(port: int, path: str, host: "str | None", timeout: float = 5) -> str:
    """The status line of ``GET path`` with exactly this ``Host:`` header (None: no header, HTTP/1.0)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        head = f"GET {path} HTTP/1.0\r\n" + (f"Host: {host}\r\n" if host is not None else "") + "\r\n"
        sock.sendall(head.encode())
        answer = read_until(sock, b"\r\n")
    return answer.split(b"\r\n", 1)[0].decode()


@pytest.fixture
def server(node) -> Iterator[MetricsServer]:
    metrics = MetricsServer(stats=node.stats, failed=lambda: False, host="127.0.0.1", port=0, log=node.log,
                            tasks=lambda: [{"task_id": "t1", "key": "alice@example.com"}])
    metrics.start()
    yield metrics
    metrics.stop()


def test_a_foreign_host_header_is_refused(server: MetricsServer) -> None:
    port = server.port
    for host in ("evil.example", f"evil.example:{port}", "rebind.127.0.0.1.nip.io", "localhost.evil.example",
                 "10.0.0.7", "[2001:db8::1]:80"):
        assert raw_get(port, "/tasks", host).split(" ")[1] == "403", host
    for host in ("localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", "127.8.9.10", "[::1]",
                 f"[::1]:{port}", "LOCALHOST.", None):
        assert raw_get(port, "/tasks", host).split(" ")[1] == "200", host


def test_allowed_hosts_for_other_bind_addresses() -> None:
    assert allowed_host(["node7.internal:9100"], "node7.internal")
    assert allowed_host(["192.0.2.5:9100"], "192.0.2.5")
    assert allowed_host(["[2001:db8::5]:9100"], "[2001:db8::5]")
    assert not allowed_host(["192.0.2.6:9100"], "192.0.2.5")
    # Bound to every address: a scraper may name any of them; a name (a rebinding page's) is refused.
    assert allowed_host(["192.0.2.5:9100"], "0.0.0.0") and allowed_host(["[2001:db8::5]"], "::")
    assert not allowed_host(["attacker.example:9100"], "0.0.0.0", "node7")
    assert allowed_host(["NODE7:9100"], "0.0.0.0", "node7") and not allowed_host(["node7"], "127.0.0.1", "node7")
    assert not allowed_host(["localhost", "evil.example"], "127.0.0.1")  # two Host headers


def test_slowloris_is_dropped_at_the_request_deadline(server: MetricsServer, http: requests.Session) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        sock.settimeout(0.5)
        closed_after = None
        # A header byte every 0.5 s: each read of the server gets a byte long before its socket timeout.
        while time.monotonic() - started < REQUEST_TIMEOUT * 2 + 2:
            try:
                sock.sendall(b"X")
                if sock.recv(1) == b"":
                    closed_after = time.monotonic() - started
                    break
            except socket.timeout:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None, "the server still reads a request that never ends"
    assert closed_after <= REQUEST_TIMEOUT + 2
    assert http.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status_code == 200


def test_slots_drop_the_oldest_idle_connection_and_refuse_when_all_answer() -> None:
    pairs = [socket.socketpair() for _ in range(MAX_CONNECTIONS + 2)]
    try:
        slots = Slots()
        for ours, _ in pairs[:MAX_CONNECTIONS]:
            assert slots.take(ours)
        assert slots.take(pairs[MAX_CONNECTIONS][0])  # makes room: the oldest reader is shut down
        assert pairs[0][1].recv(1) == b""  # its peer sees the end
        assert len(slots) == MAX_CONNECTIONS
        for ours, _ in pairs[1:MAX_CONNECTIONS + 1]:
            slots.answering(ours)
        assert not slots.take(pairs[-1][0])  # every slot answers: the newcomer is turned away
        slots.release(pairs[1][0])
        assert slots.take(pairs[-1][0])
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def open_idle(port: int, count: int) -> list[socket.socket]:
    """Up to ``count`` connections that never send a byte, each established before the next, within
    10 s; a few in a row that cannot connect end the flood (the server accepts no more)."""
    socks: list[socket.socket] = []
    failures = 0
    deadline = time.monotonic() + 10
    while len(socks) < count and failures < 3 and time.monotonic() < deadline:
        try:  # 3 s: a connection attempt the full accept queue dropped is tried again after 1 s
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=3))
        except OSError:
            failures += 1
    return socks


@posix_only
def test_a_flood_of_idle_connections_leaves_healthz_and_reconnecting_working(hub: LocalHub, tmp_path: Path,
                                                                            http: requests.Session) -> None:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FLOOD + 200:  # this process holds the flood's other ends
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, FLOOD + 500), hard))
    port = free_port()
    proc = spawn(hub, tmp_path, "node_flood", "--metrics-port", str(port))
    node = psutil.Process(proc.pid)
    node.rlimit(psutil.RLIMIT_NOFILE, (1024, 1024))  # the limit of issue 28's node
    flood: list[socket.socket] = []
    try:
        assert hub.wait_connected("node_flood", 15), log_text(proc)
        assert wait_until(lambda: _status(http, port) == 200, 10), log_text(proc)
        before = node.num_fds()
        started = time.monotonic()
        flood = open_idle(port, FLOOD)
        opened_in = time.monotonic() - started
        # The server keeps up: no connection waits seconds in the kernel's queue (a scraper would too).
        assert len(flood) == FLOOD, f"{len(flood)} connections in {opened_in:.1f} s, fds {node.num_fds()}/1024"
        # Answered while the flood is held open (an idle connection would hold its descriptor 5 s).
        started = time.monotonic()
        assert _status(http, port, timeout=2) == 200, f"fds {node.num_fds()}/1024\n{log_text(proc)[-2000:]}"
        answered_after = time.monotonic() - started
        held = node.num_fds()
        assert held < before + MAX_CONNECTIONS + 30, (before, held)
        assert hub.drop("node_flood") == 1  # and the node connects again, with descriptors to spare
        assert wait_until(lambda: len([c for c in hub.connections if c["pc_id"] == "node_flood"]) >= 2
                          and hub.connected("node_flood"), 10), log_text(proc)
        assert hub.wait_result(hub.send_task("echo", {"x": 1}, pc_id="node_flood"), 10)["status"] == "completed"
        print(f"fds before {before}, with {FLOOD} idle connections (opened in {opened_in:.2f} s) {held}; "
              f"/healthz answered in {answered_after:.2f} s")
    finally:
        for sock in flood:
            sock.close()
        proc.terminate()
        code, text = finish(proc)
    assert code == 0, text[-3000:]


def _status(http: requests.Session, port: int, timeout: float = 2) -> int:
    try:
        return http.get(f"http://127.0.0.1:{port}/healthz", timeout=timeout).status_code
    except requests.RequestException:
        return 0


@posix_only
def test_out_of_descriptors_the_api_failure_says_so(hub: LocalHub, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, resource
        import requests
        from octohub_sync import load_settings
        from octohub_sync._transport.api_lookup import resolve_address
        from octohub_sync.exceptions import ApiError
        import logging
        settings = load_settings({{"server_host": "127.0.0.1", "server_port": {hub.api_port},
                                   "signature_key": {KEY!r}, "pc_id": "node_emfile"}}, env_file=False, environ={{}})
        log = logging.LoggerAdapter(logging.getLogger("x"), {{}})
        with requests.Session() as warm:  # everything requests imports on first use, imported
            resolve_address(settings, "node_emfile", warm, log)
        session = requests.Session()
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        held = []
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        try:
            resolve_address(settings, "node_emfile", session, log)
        except ApiError as exc:
            print(f"{{exc}} - {{exc.hint}}")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, env=env,
                         cwd=Path(__file__).resolve().parent.parent)
    assert run.returncode == 0, run.stderr
    assert "failed: ConnectionError" in run.stdout and "too many open files" in run.stdout, run.stdout
