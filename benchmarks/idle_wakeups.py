"""How often an idle, connected node's threads wake up: a laptop on battery pays for every wake-up.

Counts each thread's context switches (voluntary and not, from /proc: Linux only) over a quiet
stretch, for a node with the program's default settings (its ledger on, keep-alive every 30 s)
connected to a hub of the dialect chosen, and for the same node from another copy of the repo
(``--baseline-repo``) in the same run. The node is the real program (``run_node.py``); the hub
runs in this process, so none of its threads is counted. Python does not give its threads' names
to the system, so ``py-spy dump`` (``pip install py-spy``) names them; without it, threads are
listed by id.

    python benchmarks/bench.py --idle 30 [--baseline-repo /tmp/old] [--dialect go]
"""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import harness

__all__ = ["idle_wakeups"]


def _switches(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (thread name, context switches so far)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text().splitlines()
        except OSError:  # the thread ended meanwhile
            continue
        count = sum(int(line.split()[1]) for line in status if "ctxt_switches:" in line)
        found[int(task.name)] = (name, count)
    return found


def _names(pid: int) -> dict[int, str]:
    """tid -> the Python thread's name, from py-spy where it is installed."""
    spy = shutil.which("py-spy")
    if spy is None:
        return {}
    dump = subprocess.run([spy, "dump", "--pid", str(pid), "--json"], capture_output=True, text=True, timeout=30)
    if dump.returncode:
        return {}
    return {thread["os_thread_id"]: thread["thread_name"] or "?" for thread in json.loads(dump.stdout)}


def _per_second(pid: int, seconds: float) -> dict[str, float]:
    names = _names(pid)
    before = _switches(pid)
    time.sleep(seconds)  # the measured stretch itself: nothing to wait for
    after = _switches(pid)
    rates: Counter[str] = Counter()
    for tid, (name, count) in after.items():
        rates[names.get(tid, f"{name} {tid}")] += (count - before.get(tid, (name, 0))[1]) / seconds
    return dict(rates)


def idle_wakeups(seconds: float, *, baseline_repo: Optional[Path], dialect: str = "seed") -> str:
    """Measure, and return the table as Markdown."""
    from octohub_sync.hub import LocalHub

    repos = {"node": harness.REPO} if baseline_repo is None else {"baseline": baseline_repo, "node": harness.REPO}
    hub = LocalHub(secrets.token_hex(16), dialect=dialect).start()
    started = []
    try:
        with tempfile.TemporaryDirectory(prefix="octohub-idle-") as workdir:
            env_file = str(Path(workdir) / "empty.env")
            Path(env_file).write_text("")
            results = {}
            for label, repo in repos.items():
                subject = harness.node_subject(hub, label, env_file, workdir, repo=repo,
                                               state_dir=str(Path(workdir) / label)).start()
                started.append(subject)
                subject.wait_ready(hub)
                time.sleep(2.0)  # let the start settle (the first keep-alive, the ledger's first writes)
                assert subject.proc is not None
                results[label] = _per_second(subject.proc.pid, seconds)
                subject.stop()
    finally:
        for subject in started:
            subject.stop()
        hub.stop()
    names = sorted({name for rates in results.values() for name in rates if name.startswith("octohub")})
    lines = [f"Idle, connected ({dialect} dialect, default settings), context switches per second over {seconds:g} s:",
             "", "| thread | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{rates.get(name, 0.0):.2f}" for rates in results.values()) + " |")
    totals = [sum(rate for name, rate in rates.items() if name.startswith("octohub")) for rates in results.values()]
    lines.append("| **all octohub threads** | " + " | ".join(f"**{t:.2f}**" for t in totals) + " |")
    process = [sum(rates.values()) for rates in results.values()]
    lines.append("| the whole process | " + " | ".join(f"{t:.2f}" for t in process) + " |")
    return "\n".join(lines)
