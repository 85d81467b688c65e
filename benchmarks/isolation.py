#!/usr/bin/env python3
"""Measure ``isolation="process"`` against the thread pool in the same run. Asserts nothing.

    python benchmarks/isolation.py              # about a minute
    python benchmarks/isolation.py --quick      # fewer tasks and trials

One LocalHub runs in this process; two real nodes (``python run_node.py``), each its own
process, face it: ``thread`` serves the built-in ``echo`` on its worker threads, ``process``
serves the same function with ``isolation="process"`` (benchmarks/isolation_app.py). Printed:
echo throughput (tasks/s) and p50/p90 round trip under load, sequential p50, the child
start time (first task of a fresh node minus a warm one; and ``IsolatedHandler`` started
in this process), RSS per child, and the time from ``task_cancel`` to the ``failed`` answer
of an isolated handler blocked in ``time.sleep(3600)`` with OCTOHUB_CANCEL_GRACE=1.
"""
from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Imports stay in the functions: under spawn, every child this script starts imports it again.


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def child_starts(n: int) -> list[float]:
    """Seconds from starting an IsolatedHandler's child to its first answer, minus a warm answer."""
    from octohub_sync._execution.builtin_tasks import echo
    from octohub_sync._isolation.pool import IsolatedHandler

    starts = []
    for _ in range(n):
        handler = IsolatedHandler("echo", echo)
        t0 = time.perf_counter()
        handler({"data": {}})
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        handler({"data": {}})
        starts.append(cold - (time.perf_counter() - t0))
        handler.stop()
    return starts


def cancels(hub, pc_id: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        tid = hub.send_task("nap", pc_id=pc_id)
        hub.wait_progress(tid, timeout=30)
        began = time.perf_counter()
        hub.cancel(tid, "bench")
        result = hub.wait_result(tid, timeout=30)
        times.append(time.perf_counter() - began)
        assert result["error"].startswith("TaskCancelled"), result
    return times


def child_rss(subject) -> list[int]:
    return [c.memory_info().rss for c in subject.ps.children()
            if not any("resource_tracker" in part for part in c.cmdline())]


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness
    from octohub_sync.hub import LocalHub

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=4, help="OCTOHUB_MAX_WORKERS of both nodes")
    args = parser.parse_args()
    total, rounds, seq, trials = (500, 2, 100, 3) if args.quick else (2000, 3, 300, 10)
    hub = LocalHub(secrets.token_hex(16)).start()
    started = []
    try:
        with tempfile.TemporaryDirectory(prefix="octohub-bench-iso-") as workdir:
            env_file = str(Path(workdir) / "empty.env")
            Path(env_file).write_text("")
            settings = dict(max_workers=args.workers, cancel_grace=1, log_level="ERROR")
            thread = harness.node_subject(hub, "thread", env_file, workdir, **settings)
            process = harness.node_subject(hub, "process", env_file, workdir, app="isolation_app", **settings)
            for subject in (thread, process):
                started.append(subject.start())
                subject.wait_ready(hub)
            print(f"Python {sys.version.split()[0]} on {platform.system()}, {os.cpu_count()} cores, "
                  f"load avg {os.getloadavg()[0]:.2f}; {args.workers} workers per node")
            first = harness.echo_latency(hub, process, 1, "cold")[0]
            rows = {}
            for subject in (thread, process):
                best = None
                for r in range(rounds):
                    run = harness.echo_throughput(hub, subject, total, args.workers * 4, f"t{r}")
                    best = run if best is None or run.rate > best.rate else best
                lat = harness.echo_latency(hub, subject, seq, "seq")
                rows[subject.name] = (best, lat)
            print("(CPU/task: the node process only; an isolated task's work is in its child)")
            print(f"{'echo':10} {'tasks/s':>9} {'p50 load':>9} {'p90 load':>9} {'p50 seq':>9} {'CPU/task':>9}")
            for name, (best, lat) in rows.items():
                print(f"{name:10} {best.rate:9.0f} {p(best.latencies, .5) * 1e3:7.2f}ms "
                      f"{p(best.latencies, .9) * 1e3:7.2f}ms {statistics.median(lat) * 1e3:7.2f}ms "
                      f"{best.cpu_us_per_task:7.0f}us")
            warm = statistics.median(rows["process"][1])
            rss = child_rss(process)
            print(f"children of the process node: {len(rss)}, RSS each "
                  f"{', '.join(f'{r / 1048576:.1f}' for r in rss)} MB "
                  f"(the node itself: {process.ps.memory_info().rss / 1048576:.1f} MB)")
            print(f"child start in the node (first isolated echo {first * 1e3:.0f} ms - warm {warm * 1e3:.2f} ms): "
                  f"{(first - warm) * 1e3:.0f} ms")
            starts = child_starts(trials)
            print(f"child start, IsolatedHandler in this process ({trials}): median {statistics.median(starts) * 1e3:.0f} ms, "
                  f"max {max(starts) * 1e3:.0f} ms")
            times = cancels(hub, process.pc_id, trials)
            print(f"task_cancel -> failed, isolated time.sleep(3600), grace 1 s ({trials}): median "
                  f"{statistics.median(times) * 1e3:.0f} ms, p90 {p(times, .9) * 1e3:.0f} ms, max {max(times) * 1e3:.0f} ms")
    finally:
        for subject in reversed(started):
            subject.stop()
        hub.stop()


if __name__ == "__main__":
    main()
