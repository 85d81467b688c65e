#!/usr/bin/env python3
"""Where the node's time goes under echo load: py-spy on the node process, summarised.

    /tmp/dev/bin/pip install py-spy            # once
    python benchmarks/profile_node.py          # ~20 s; prints the summary
    python benchmarks/profile_node.py --gil    # only samples of the thread holding the GIL
    python benchmarks/profile_node.py --ledger # the node with its ledger (a temp OCTOHUB_STATE_DIR)
    python benchmarks/profile_node.py --counts     # locks, wake-ups, system calls per task: node vs pool
    python benchmarks/profile_node.py --counts --workers 64    # the same with MAX_WORKERS=64 (both)

Starts a LocalHub and the real node (``run_node.py``, same settings as bench.py),
keeps 200 echo tasks in flight, and records the node with ``py-spy record --format raw``
(non-blocking sampling). The raw stacks are kept (``--out``) for flame graphs.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from bench import NODE_SETTINGS  # noqa: E402

#: Frames of a stack are "function (file:line)"; the line is dropped to group by function.
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")

#: (label, substring of a frame) in order: the first match along a stack, from the leaf up, wins.
CATEGORIES = [
    ("json encode (task_result)", "json/encoder.py"),
    ("json decode (task)", "json/decoder.py"),
    ("json.dumps/loads wrappers", "json/__init__.py"),
    ("ws frame mask (_mask)", "_mask (websocket/_abnf.py"),
    ("socket send (syscall)", "socket.send"),
    ("socket recv (syscall)", "socket.recv"),
    ("selector (epoll)", "select (selectors.py"),
    ("thread pool submit/queue", "concurrent/futures"),
    ("queue/locks/conditions", "threading.py"),
    ("logging", "logging/__init__.py"),
    ("websocket-client frame code", "websocket/_"),
    ("octohub protocol/dispatch", "octohub_sync/protocol.py"),
    ("octohub protocol/dispatch", "octohub_sync/dispatch.py"),
    ("octohub runner", "octohub_sync/runner.py"),
    ("octohub client", "octohub_sync/client.py"),
    ("octohub other", "octohub_sync/"),
]


def parse(raw: str) -> list[tuple[str, list[str], int]]:
    """``py-spy --format raw`` lines -> (thread name, frames root first, samples)."""
    stacks = []
    for line in raw.splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        frames = body.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        stacks.append((re.sub(r"[-_]\d+$", "", thread), frames[1:] if frames[0].startswith("thread") else frames, int(count)))
    return stacks


def _func(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    short = "/".join(path.split("/")[-2:]) if "site-packages" in path or "octohub_sync" in path else path.split("/")[-1]
    return f"{m.group('func')} ({short})"


def summarise(stacks: list[tuple[str, list[str], int]], top: int = 25) -> str:
    total = sum(n for _, _, n in stacks) or 1
    threads: collections.Counter[str] = collections.Counter()
    selfs: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    cats: collections.Counter[str] = collections.Counter()
    for thread, frames, n in stacks:
        threads[thread] += n
        if frames:
            selfs[_func(frames[-1])] += n
        for f in {_func(f) for f in frames}:
            incl[f] += n
        cats[next((label for f in reversed(frames) for label, key in CATEGORIES if key in f), "other")] += n

    def block(title: str, counter: collections.Counter[str], k: int) -> list[str]:
        return [title] + [f"  {100 * n / total:5.1f} %  {name}" for name, n in counter.most_common(k)]

    lines = [f"{total} samples (non-idle threads)"]
    lines += block("by thread:", threads, 10)
    lines += block("by category (leaf-most match):", cats, 20)
    lines += block("self time (leaf function):", selfs, top)
    lines += block("inclusive time:", incl, top)
    return "\n".join(lines)


def _load(hub: object, node: harness.Subject, stop: threading.Event) -> int:
    done = 0
    while not stop.is_set():
        harness.echo_throughput(hub, node, 2000, 200, f"prof{done}")  # type: ignore[arg-type]
        done += 2000
    return done


def record(seconds: float, gil: bool, out: Path, spy: str, repo: Path, workers: int, ledger: bool) -> None:
    from octohub_sync.hub import LocalHub

    hub = LocalHub(secrets.token_hex(16)).start()
    workdir = tempfile.mkdtemp(prefix="octohub-prof-")
    env_file = str(Path(workdir) / "empty.env")
    Path(env_file).write_text("")
    settings = {**NODE_SETTINGS, "max_workers": workers}
    if ledger:
        settings["state_dir"] = str(Path(workdir) / "state")
    node = harness.node_subject(hub, "node", env_file, workdir, repo=repo, **settings)
    try:
        node.start().wait_ready(hub)
        harness.echo_throughput(hub, node, 2000, 200, "warm")
        cmd = [spy, "record", "--pid", str(node.ps.pid), "--duration", str(int(seconds)), "--rate", "200",
               "--format", "raw", "--threads", "--nonblocking", "--output", str(out)] + (["--gil"] if gil else [])
        stop = threading.Event()
        result: list[int] = []
        load = threading.Thread(target=lambda: result.append(_load(hub, node, stop)), name="bench-load")
        t0 = time.perf_counter()
        load.start()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=seconds + 30)
        stop.set()
        load.join()
        elapsed = time.perf_counter() - t0
        print(f"{result[0]} echo tasks in {elapsed:.1f} s while sampling ({result[0] / elapsed:,.0f} /s, py-spy attached)")
    finally:
        node.stop()
        hub.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def counts(tasks: int, repo: Path, workers: int) -> None:
    """Per echo task: lock acquisitions, thread wake-ups and system calls, of the node and the pool baseline.

    Each runs under lock_counter.py (a profiling build that counts lock acquisitions) and
    ``strace -f`` (every system call; a wake-up is a thread woken by ``FUTEX_WAKE``).
    """
    from octohub_sync.hub import LocalHub

    hub = LocalHub(secrets.token_hex(16)).start()
    workdir = tempfile.mkdtemp(prefix="octohub-prof-")
    env_file = str(Path(workdir) / "empty.env")
    Path(env_file).write_text("")
    subjects = [harness.node_subject(hub, "node", env_file, workdir, repo=repo, **NODE_SETTINGS, max_workers=workers),
                harness.pool_subject(hub, workdir, workers)]
    table: dict[str, dict[str, float]] = {}
    try:
        for s in subjects:
            count_file = str(Path(workdir) / f"locks-{s.name}.json")
            s.argv[1:1] = [str(Path(__file__).resolve().parent / "lock_counter.py"), count_file]
            s.start()
            s.wait_ready(hub)
            harness.echo_throughput(hub, s, 1000, 200, "warm")
            trace = Path(workdir) / f"strace-{s.name}.txt"
            tracer = subprocess.Popen(["strace", "-f", "-qq", "-p", str(s.ps.pid), "-o", str(trace)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # attaching to every thread takes a moment
            before = _locks(count_file)
            harness.echo_throughput(hub, s, tasks, 200, "counted")
            after = _locks(count_file)
            tracer.terminate()
            tracer.wait(10)
            table[s.name] = {"lock acquisitions": (after["acquired"] - before["acquired"]) / tasks,
                             "locks created": (after["created"] - before["created"]) / tasks,
                             **{k: v / tasks for k, v in _syscalls(trace.read_text()).items()}}
            s.stop()
    finally:
        for s in subjects:
            s.stop()
        hub.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    names = [s.name for s in subjects]
    print(f"per echo task ({tasks} tasks, 200 in flight, MAX_WORKERS={workers}; lock_counter.py + strace -f, "
          "so slowed down)")
    print(f"{'':<28}" + "".join(f"{n:>10}" for n in names))
    keys = ["lock acquisitions", "locks created", "thread wake-ups", "system calls"]
    keys += sorted({k for row in table.values() for k in row} - set(keys),
                   key=lambda k: -max(row.get(k, 0.0) for row in table.values()))
    for key in keys:
        if max(row.get(key, 0.0) for row in table.values()) >= 0.05:
            print(f"{key:<28}" + "".join(f"{table[n].get(key, 0.0):10.2f}" for n in names))


def _locks(count_file: str) -> dict[str, int]:
    """Ask lock_counter.py for its counts (it answers within 0.1 s)."""
    Path(count_file).unlink(missing_ok=True)
    Path(count_file + ".want").touch()
    deadline = time.monotonic() + 10
    while not Path(count_file).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("lock_counter.py did not answer")
        time.sleep(0.02)
    return json.loads(Path(count_file).read_text())


_CALL = re.compile(r"^\d+\s+(?:<\.\.\. )?(\w+)(\(| resumed>)")


def _syscalls(trace: str) -> dict[str, int]:
    """``strace -f`` output -> calls by name, their total, and threads woken by FUTEX_WAKE."""
    found: collections.Counter[str] = collections.Counter()
    for line in trace.splitlines():
        m = _CALL.match(line)
        if m is None or m.group(2) != "(":  # a "resumed" line ends a call already counted
            continue
        found[m.group(1)] += 1
        found["system calls"] += 1
        if "FUTEX_WAKE" in line and "<unfinished" not in line:
            woken = line.rsplit("= ", 1)[-1].split()[0]
            found["thread wake-ups"] += int(woken) if woken.isdigit() else 0
    return dict(found)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="sampling time (default 10)")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "octohub-node-profile.raw",
                        help="where the raw stacks go")
    parser.add_argument("--node-repo", type=Path, default=harness.REPO, help="profile the node of this copy of the repo")
    parser.add_argument("--counts", action="store_true",
                        help="count lock acquisitions, wake-ups and system calls per task, node vs pool baseline")
    parser.add_argument("--summarise", type=Path, metavar="RAW", help="only summarise an existing raw file")
    parser.add_argument("--workers", type=int, default=8, help="MAX_WORKERS of the node and the pool (default 8)")
    parser.add_argument("--ledger", action="store_true", help="the node with a ledger (OCTOHUB_STATE_DIR in a temp folder)")
    args = parser.parse_args(argv)
    if args.counts:
        counts(5000, args.node_repo.resolve(), args.workers)
        return 0
    if args.summarise is None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            print("py-spy not found: pip install py-spy", file=sys.stderr)
            return 2
        record(args.seconds, args.gil, args.out, spy, args.node_repo.resolve(), args.workers, args.ledger)
    raw = Path(args.summarise or args.out).read_text()
    print(summarise(parse(raw)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
