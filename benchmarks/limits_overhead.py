#!/usr/bin/env python3
"""What per-type limits cost on the runner's own path, without a socket (reported, never asserted).

    python benchmarks/limits_overhead.py                    # this tree: unlimited, and limited types
    python benchmarks/limits_overhead.py --repo /tmp/base   # a copy of the tree at another commit

Submits echo tasks straight to a ``TaskRunner`` (its real pool, 8 workers) and waits for every
result: CPU microseconds per task of the whole process, best of ``--rounds``. ``unlimited`` is a type
registered without keywords (the path every node without limits takes); ``limited`` has
``concurrency`` equal to the workers (never waits: the lane's bookkeeping alone); ``keyed`` adds
``key="account"`` over 100 accounts. Run the variants of two trees in turn on a quiet machine.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.repo.resolve()))
    from octohub_sync._execution.runner import TaskRunner

    variants = ["unlimited"]
    TaskOptions = None
    if hasattr(TaskRunner, "configure"):  # a tree from before _execution/limits.py has only the first
        from octohub_sync._execution.limits import TaskOptions
        variants += ["limited", "keyed"]
    print(f"tree {args.repo}: best of {args.rounds} rounds of {args.tasks} echo tasks; CPU us per task of the "
          "submitting thread (the connection thread's share) and of the whole process")
    for variant in variants:
        rounds = [run_round(TaskRunner, TaskOptions, variant, args.tasks) for _ in range(args.rounds)]
        print(f"  {variant:<10} submit {min(r[0] for r in rounds):7.2f}   process {min(r[1] for r in rounds):7.2f}")
    return 0


def run_round(runner_class, options_class, variant: str, n: int) -> tuple[float, float]:
    from octohub_sync._wire.protocol import Task
    from octohub_sync._ops.stats import Stats
    from octohub_sync._delivery.store import MemoryStore

    done = threading.Semaphore(0)
    runner = runner_class(deliver=lambda tid, frame, finished=False: done.release(), stats=Stats(), max_workers=8,
                          max_pending=n, task_timeout=0, cache_size=n, store=MemoryStore(),
                          log=logging.LoggerAdapter(logging.getLogger("bench"), {}))
    if variant != "unlimited":
        key = "account" if variant == "keyed" else None
        runner.configure("echo", options_class.build("echo", concurrency=8, key=key))
    runner.start()
    tasks = []
    for i in range(n):
        message = {"type": "task", "task_id": f"t{i}", "task_type": "echo", "data": {"account": f"a{i % 100}"}}
        tasks.append(Task(f"t{i}", "echo", message["data"], None, message))
    cpu, mine = time.process_time(), time.thread_time()
    for task in tasks:
        runner.submit(task)
    submitting = time.thread_time() - mine
    for _ in range(n):
        done.acquire()
    used = time.process_time() - cpu
    runner.stop_accepting()
    runner.drain(5)
    runner.shutdown()
    return submitting / n * 1e6, used / n * 1e6


if __name__ == "__main__":
    sys.exit(main())
