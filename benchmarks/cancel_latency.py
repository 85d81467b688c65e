#!/usr/bin/env python3
"""Measure the time from the hub's ``task_cancel`` to the node's ``failed`` result. Asserts nothing.

    python benchmarks/cancel_latency.py                 # 20 cancels of each kind, grace 1 s
    python benchmarks/cancel_latency.py -n 50 --grace 0.5

The local hub runs in this process, the node in its own (its own GIL, as in bench.py). Each
trial sends a task, waits for its first ``task_progress`` (so it runs), sends ``task_cancel``
and times until the ``task_result`` is read by the hub. Three handlers:

- ``wait``: sleeps on ``current_task().cancelled.wait()`` (cooperative, idle);
- ``busy``: pure-Python arithmetic, ``check_cancelled()`` every 1000 iterations (cooperative, busy);
- ``spin``: a pure-Python loop that never looks: the hard stop after ``OCTOHUB_CANCEL_GRACE``
  (checked every 0.25 s, so expect the grace plus up to a quarter second).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from octohub_sync import NodeWebSocketClient, current_task  # noqa: E402
from octohub_sync.hub import LocalHub  # noqa: E402

KEY = "cancel-latency-key-0123456789"


def wait(task: dict) -> str:
    control = current_task()
    control.progress(0.0, "started")
    control.cancelled.wait(60)
    control.check_cancelled()
    return "not cancelled"


def busy(task: dict) -> int:
    control = current_task()
    control.progress(0.0, "started")
    total = 0
    for i in range(10 ** 10):
        total += i * i
        if i % 1000 == 0:
            control.check_cancelled()
    return total


def spin(task: dict) -> None:
    current_task().progress(0.0, "started")
    n = 0
    while True:
        n += 1


def node(api_port: int, grace: float) -> None:
    """The node process: serves until its stdin closes."""
    client = NodeWebSocketClient("127.0.0.1", api_port, KEY, env_file=False, pc_id="node_cancel_latency",
                                 max_workers=2, cancel_grace=grace, progress_interval=0, status_interval=0)
    for handler in (wait, busy, spin):
        client.register_task_handler(handler.__name__, handler)
    with client:
        sys.stdin.read()


def measure(hub: LocalHub, task_type: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        tid = hub.send_task(task_type)
        hub.wait_progress(tid, timeout=10)
        began = time.perf_counter()
        hub.cancel(tid)
        result = hub.wait_result(tid, timeout=30)
        times.append(time.perf_counter() - began)
        assert result["error"].startswith("TaskCancelled"), result
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20, help="cancels of each kind")
    parser.add_argument("--grace", type=float, default=1.0, help="OCTOHUB_CANCEL_GRACE of the node")
    parser.add_argument("--node", type=int, metavar="API_PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.node:
        node(args.node, args.grace)
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    with LocalHub(KEY) as hub:
        proc = subprocess.Popen([sys.executable, __file__, "--node", str(hub.api_port), "--grace", str(args.grace)],
                                stdin=subprocess.PIPE, env=env)
        try:
            if not hub.wait_connected("node_cancel_latency", timeout=30):
                raise SystemExit("the node did not connect")
            print(f"task_cancel -> failed result, {args.n} of each, Python {sys.version.split()[0]}, "
                  f"load avg {os.getloadavg()[0]:.2f}, OCTOHUB_CANCEL_GRACE={args.grace:g}")
            print(f"{'handler':44} {'median':>9} {'p90':>9} {'max':>9}")
            for task_type, label in (("wait", "cooperative, waiting on cancelled"),
                                     ("busy", "cooperative, check_cancelled() in a loop"),
                                     ("spin", "ignores the flag: hard stop")):
                times = sorted(measure(hub, task_type, args.n))
                p90 = times[min(len(times) - 1, int(0.9 * len(times)))]
                print(f"{label:44} {statistics.median(times) * 1000:7.1f}ms {p90 * 1000:7.1f}ms "
                      f"{times[-1] * 1000:7.1f}ms")
        finally:
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(15)


if __name__ == "__main__":
    main()
