#!/usr/bin/env python3
"""A node process's metrics server under a flood of idle connections and a slowloris. Asserts nothing.

    python benchmarks/metrics_flood.py                    # this copy of the node
    python benchmarks/metrics_flood.py --repo /tmp/old    # another copy (a directory with run_node.py)

The node runs as its own process (``run_node.py``) with RLIMIT_NOFILE lowered to ``--nofile``
(1,024 by default, as in issue 28), against a local hub in this process, ``OCTOHUB_METRICS_PORT``
set. Each flood opens ``--connections`` connections that never send a byte, one after another
(each established before the next, for at most 10 s) or all at once (given 3 s), and holds them;
meanwhile the node's descriptors are sampled, ``/healthz`` is asked and the hub drops the node,
which must connect again. POSIX only (RLIMIT_NOFILE).
"""
from __future__ import annotations

import argparse
import os
import resource
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from octohub_sync.hub import LocalHub  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthz(port: int, timeout: float = 3.0) -> str:
    """``200 in 0.01 s`` or what went wrong."""
    started = time.monotonic()
    try:
        with requests.Session() as session:
            session.trust_env = False
            status = session.get(f"http://127.0.0.1:{port}/healthz", timeout=timeout).status_code
        return f"{status} in {time.monotonic() - started:.2f} s"
    except requests.RequestException as exc:
        return f"no answer ({type(exc).__name__}) after {time.monotonic() - started:.2f} s"


def one_by_one(port: int, count: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    deadline = time.monotonic() + 10
    failures = 0
    while len(socks) < count and failures < 3 and time.monotonic() < deadline:
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=3))
        except OSError:
            failures += 1
    return socks


def all_at_once(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    time.sleep(3)  # a measurement's fixed window: the flood is given 3 s to be accepted
    return socks


def dripping(port: int, count: int, seconds: float = 60.0) -> list[socket.socket]:
    """``count`` connections, each sending a byte every 2 s for ``seconds`` (one the server ends is
    opened again): a per-read timeout never ends them. Returns the connections, still open."""
    def opened() -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        return sock

    socks = [opened() for _ in range(count)]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(2)  # the drip's period
        for i, sock in enumerate(socks):
            try:
                sock.send(b"G")
            except BlockingIOError:
                pass  # not connected yet: still waiting in the server's queue
            except OSError:
                sock.close()
                socks[i] = opened()
    return socks


def slowloris(port: int, seconds: float = 15.0) -> str:
    """How long the server reads a request that gains a byte every 0.5 s (at most ``seconds``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.settimeout(0.5)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            try:
                sock.sendall(b"X")
                if sock.recv(1) == b"":
                    break
            except socket.timeout:
                continue
            except OSError:
                break
        else:
            return f"still open after {seconds:.0f} s"
        return f"dropped after {time.monotonic() - started:.1f} s"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=ROOT, help="copy of the node to run (default: this one)")
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--nofile", type=int, default=1024, help="the node's RLIMIT_NOFILE")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2 * args.connections + 500)), hard))
    key = secrets.token_hex(16)
    port = free_port()
    with LocalHub(key) as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
        env.update(OCTOHUB_SERVER_HOST="127.0.0.1", OCTOHUB_SERVER_PORT=str(hub.api_port), OCTOHUB_SIGNATURE_KEY=key,
                   OCTOHUB_PC_ID="node_flood", OCTOHUB_METRICS_PORT=str(port), OCTOHUB_STATE_DIR="off",
                   OCTOHUB_RECONNECT_INTERVAL="0.2", OCTOHUB_RECONNECT_MAX_INTERVAL="1", OCTOHUB_LOG_LEVEL="WARNING",
                   OCTOHUB_STATUS_INTERVAL="0", PYTHONPATH=str(args.repo))
        limit = args.nofile
        node = subprocess.Popen([sys.executable, str(args.repo / "run_node.py"), "--env-file", os.devnull],
                                cwd=args.repo, env=env, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
        try:
            if not hub.wait_connected("node_flood", 20):
                print("the node did not connect")
                return 1
            proc = psutil.Process(node.pid)
            print(f"node {args.repo}: RLIMIT_NOFILE {limit}, {proc.num_fds()} descriptors at rest, "
                  f"/healthz {healthz(port)}")
            for name, flood in (("one by one", one_by_one), ("all at once", all_at_once), ("dripping 60 s", dripping)):
                started = time.monotonic()
                socks = flood(port, args.connections)
                opened = time.monotonic() - started
                fds = proc.num_fds()
                answer = healthz(port)
                before = len([c for c in hub.connections if c["pc_id"] == "node_flood"])
                hub.drop("node_flood")
                t0 = time.monotonic()
                back = hub.wait_for(lambda: len([c for c in hub.connections if c["pc_id"] == "node_flood"]) > before
                                    and hub.connected("node_flood"), 15)
                again = f"in {time.monotonic() - t0:.1f} s" if back else "not within 15 s"
                print(f"{name:>12}: {len(socks)} connections in {opened:.1f} s; node descriptors {fds}; "
                      f"/healthz {answer}; connected again {again}")
                for sock in socks:
                    sock.close()
                time.sleep(6)  # a measurement's fixed pause: the server's read timeouts end what is left
            print(f"   slowloris: {slowloris(port)}")
        finally:
            node.terminate()
            _, err = node.communicate(timeout=30)
        lines = [line for line in err.splitlines() if "connection" in line and "failed" in line]
        print(f"connect failures logged: {len(lines)}" + (f", e.g. {lines[0][-160:]}" if lines else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
