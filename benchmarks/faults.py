#!/usr/bin/env python3
"""Measure recovery with the default settings. Asserts nothing; prints figures.

    python benchmarks/faults.py                       # outage + duplicate-pc_id storm (about 4 min)
    python benchmarks/faults.py --storm-seconds 60    # shorter storm
    python benchmarks/faults.py --only ghost          # one scenario

- outage: a connected node, then the API answers 500 and the WebSocket server is down for
  10 s; counts the node's attempts during the outage and the time from the hub's return
  to the next node_ready. Then the time from a dropped connection to the next node_ready.
- ghost: the local hub in the Go server's mode (read deadline 5 s, one entry per pc_id removed by
  pc_id); the node's path to it dies silently (a stalled TCP proxy). Times from the dead path to
  the node's reconnection, to the hub forgetting it, and to a task sent then getting its result
  (the node re-registers after OCTOHUB_HUB_READ_TIMEOUT=5 plus the margin). Pings 2 s / 1 s.
- storm: two nodes with the same pc_id against a hub that keeps one connection per pc_id
  and drops the older one without a word (as the Go server does); counts each node's
  connection attempts per minute, over the whole run and over its second half.
"""
from __future__ import annotations

import argparse
import logging
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from octohub_sync import NodeWebSocketClient, load_settings  # noqa: E402
from octohub_sync.hub import LocalHub  # noqa: E402
from tests.proxy import StallProxy  # noqa: E402


def node(hub: LocalHub, pc_id: str, **overrides: object) -> NodeWebSocketClient:
    settings = load_settings({"server_host": "127.0.0.1", "server_port": hub.api_port, "signature_key": hub.key,
                              "pc_id": pc_id, "status_interval": 0, **overrides}, env_file=False, environ={})
    return NodeWebSocketClient(settings=settings).start()


def readies(hub: LocalHub, pc_id: str) -> int:
    return sum(1 for m in hub.received if m.get("type") == "node_ready" and m.get("_pc_id") == pc_id)


def outage(seconds: float) -> None:
    with LocalHub(secrets.token_hex(16)) as hub:
        client = node(hub, "node_outage")
        assert client.wait_connected(10)
        hub.api_fault = "500"
        hub.stop_ws()
        start, before = time.monotonic(), len(hub.api_requests)
        hub.wait_for(lambda: time.monotonic() - start >= seconds, seconds + 1)
        attempts = len(hub.api_requests) - before
        ready = readies(hub, "node_outage")
        hub.api_fault = None
        hub.start_ws()
        back = time.monotonic()
        hub.wait_for(lambda: readies(hub, "node_outage") > ready, 120)
        print(f"outage of {seconds:g} s: {attempts} attempts; connected again {time.monotonic() - back:.2f} s "
              f"after the hub came back")
        drops = []
        for _ in range(10):
            n = readies(hub, "node_outage")
            # the previous connection must count as stable, or the backoff would (rightly) grow
            hub.wait_for(lambda: False, client.settings.stable_after + 0.5)
            hub.drop("node_outage")
            t = time.monotonic()
            hub.wait_for(lambda: readies(hub, "node_outage") > n, 10)
            drops.append(time.monotonic() - t)
        print(f"drop -> node_ready over {len(drops)} drops: median {statistics.median(drops):.3f} s, "
              f"max {max(drops):.3f} s")
        client.stop(5)


def ghost(read_timeout: float = 5.0) -> None:
    with LocalHub(secrets.token_hex(16), dialect="go", read_deadline=read_timeout) as hub:
        proxy = StallProxy(hub.ws_port)
        client = node(hub, "node_ghost", connect_mode="direct", ws_port=proxy.port, ping_interval=2.0,
                      ping_timeout=1.0, hub_read_timeout=read_timeout)
        assert client.wait_connected(10)
        proxy.stall()
        dead = time.monotonic()
        hub.wait_for(lambda: readies(hub, "node_ghost") == 2, 60)
        back = time.monotonic() - dead
        hub.wait_for(lambda: bool(hub.forgotten), 120)
        forgotten = time.monotonic() - dead
        task = hub.send_task("echo", pc_id="node_ghost")
        hub.wait_result(task, 120)
        print(f"ghost (hub read deadline {read_timeout:g} s): node reconnected {back:.2f} s after the path died, "
              f"hub forgot it at {forgotten:.2f} s, the task sent then was answered at "
              f"{time.monotonic() - dead:.2f} s ({client.stats()['reregistrations']} re-registration)")
        client.stop(5)
        proxy.close()


def storm(seconds: float) -> None:
    with LocalHub(secrets.token_hex(16), notify_replaced=False) as hub:
        twins = [node(hub, "node_twin"), node(hub, "node_twin")]
        start = time.monotonic()
        hub.wait_for(lambda: time.monotonic() - start >= seconds / 2, seconds)
        half_connections = len(hub.connections)
        mid_attempts = [t._watchdog.attempts for t in twins]  # noqa: SLF001 - a measurement, not an API
        hub.wait_for(lambda: time.monotonic() - start >= seconds, seconds)
        attempts = [t._watchdog.attempts for t in twins]  # noqa: SLF001
        per_min = [a / seconds * 60 for a in attempts]
        late = [(a - m) / (seconds / 2) * 60 for a, m in zip(attempts, mid_attempts)]
        print(f"storm over {seconds:g} s: attempts per node {attempts} = {per_min[0]:.1f} and {per_min[1]:.1f} "
              f"per minute; second half {late[0]:.1f} and {late[1]:.1f} per minute; "
              f"hub connections {len(hub.connections)} (at half-time {half_connections})")
        for twin in twins:
            twin.stop(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-seconds", type=float, default=10)
    parser.add_argument("--storm-seconds", type=float, default=240, help="0: no storm")
    parser.add_argument("--only", choices=("outage", "ghost", "storm"), help="run one scenario")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    if args.only in (None, "outage"):
        outage(args.outage_seconds)
    if args.only in (None, "ghost"):
        ghost()
    if args.only in (None, "storm") and args.storm_seconds:
        storm(args.storm_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
