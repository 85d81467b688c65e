"""Benchmark plumbing: subject processes (node, minimal loop) and the hub-side load drivers.

Everything that measures lives in the bench process next to the in-process
:class:`~octohub_sync.hub.LocalHub`; every subject runs in its own process (own GIL).
"""
from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from octohub_sync.hub import LocalHub  # noqa: E402

__all__ = [
    "REPO", "Subject", "Throughput", "Usage", "echo_latency", "echo_throughput", "frame_bytes", "idle_usage",
    "ledger_bytes", "minimal_subject", "node_subject", "pool_subject", "reconnect_times", "send_echo", "sleep_wall",
    "snapshot",
]

#: Seconds without a single new result before a load run is declared stuck.
STALL_TIMEOUT = 15.0


@dataclass
class Subject:
    """One node-like process connected to the hub under its own pc_id."""

    name: str
    pc_id: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    proc: Optional[subprocess.Popen] = None
    log_path: str = ""
    _log: Any = field(default=None, repr=False)

    def start(self) -> "Subject":
        fd, self.log_path = tempfile.mkstemp(prefix=f"bench-{self.name}-", suffix=".log")
        self._log = os.fdopen(fd, "w")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        return self

    @property
    def ps(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def wait_ready(self, hub: LocalHub, timeout: float = 15.0) -> None:
        if not hub.wait_connected(self.pc_id, timeout):
            raise RuntimeError(f"{self.name} did not connect within {timeout} s; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "".join(Path(self.log_path).read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (the node's warm stop), then SIGKILL if it lingers. Idempotent."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.log_path:
            Path(self.log_path).unlink(missing_ok=True)


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the bench dies, even by SIGKILL (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _clean_env(repo: Path = REPO) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    env["PYTHONPATH"] = str(repo)
    return env


def node_subject(hub: LocalHub, name: str, env_file: str, workdir: str, *, repo: Path = REPO,
                 **settings: Any) -> Subject:
    """The real node, ``python run_node.py`` of ``repo``, configured only by OCTOHUB_* variables.

    ``app="bench_app"`` (OCTOHUB_APP) loads benchmarks/bench_app.py.
    """
    pc_id = f"bench_{name}_{os.getpid()}"
    env = _clean_env(repo)
    if settings.get("app"):
        env["PYTHONPATH"] += os.pathsep + str(Path(__file__).resolve().parent)
    # No ledger unless asked for (state_dir=...): never the program's default in the user's home.
    base = {"server_host": "127.0.0.1", "server_port": hub.api_port, "signature_key": hub.key,
            "pc_id": pc_id, "log_level": "WARNING", "status_interval": 0, "state_dir": "off"}
    for key, value in {**base, **settings}.items():
        env["OCTOHUB_" + key.upper()] = str(value)
    argv = [sys.executable, str(repo / "run_node.py"), "--env-file", env_file]
    return Subject(name, pc_id, argv, env, workdir)


def minimal_subject(hub: LocalHub, workdir: str) -> Subject:
    """The bare websocket-client loop, ``python benchmarks/bench.py --minimal-loop``."""
    return _baseline(hub, workdir, "minimal", ["--minimal-loop"])


def pool_subject(hub: LocalHub, workdir: str, workers: int, name: str = "pool") -> Subject:
    """The obvious WebSocketApp + thread pool node, ``python benchmarks/bench.py --pool-loop N``."""
    return _baseline(hub, workdir, name, ["--pool-loop", str(workers)])


def seed_subject(hub: LocalHub, workdir: str) -> Subject:
    """The seed's design, an asyncio node on websockets, ``python benchmarks/bench.py --seed-loop``."""
    return _baseline(hub, workdir, "seed", ["--seed-loop"])


def _baseline(hub: LocalHub, workdir: str, name: str, flags: list[str]) -> Subject:
    pc_id = f"bench_{name}_{os.getpid()}"
    env = _clean_env()
    env["OCTOHUB_SIGNATURE_KEY"] = hub.key  # not on the command line, where ps would show it
    argv = [sys.executable, str(REPO / "benchmarks" / "bench.py"), *flags, "--api", hub.api_url, "--pc-id", pc_id]
    return Subject(name, pc_id, argv, env, workdir)


def ledger_bytes(state_dir: Path) -> int:
    """Bytes of every file in a node's state directory (the ledger, its WAL and lock)."""
    return sum(p.stat().st_size for p in state_dir.iterdir()) if state_dir.is_dir() else 0


# -- load drivers (all run on the bench thread, against the in-process hub) -----------------------


@dataclass
class Throughput:
    tasks: int
    seconds: float
    failed: int
    hub_cpu: float      # % of one core used by the bench (hub) process during the run
    subject_cpu: float  # % of one core used by the subject process
    other_cpu: float    # % of one core used by everything else on the machine (noise)
    #: Seconds from each task's send to the bench seeing its result, under this load.
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds

    @property
    def cpu_us_per_task(self) -> float:
        """CPU time the subject spent per task, in microseconds (far less disturbed by other load than rates)."""
        return self.subject_cpu / 100 * self.seconds / self.tasks * 1e6


#: A pre-serialised echo task: the bench sends it with ``hub.send_raw``, skipping the hub's
#: per-task ``json.dumps`` and pending-task bookkeeping (results are recorded all the same).
#: Without it the hub, not the minimal loop, sets the "wire limit" (see --hub-send-task).
ECHO_FRAME = '{"type":"task","task_id":"%s","task_type":"echo","data":{"seq":%d,"run":"%s"%s}}'


def send_echo(hub: LocalHub, pc_id: str, tag: str, seq: int, raw: bool = True, pad: str = "") -> str:
    """Send one echo task to ``pc_id`` (``pad``: a string added to its data); return its task_id."""
    if not raw:
        return hub.send_task("echo", {"seq": seq, "run": tag, **({"pad": pad} if pad else {})}, pc_id=pc_id)
    task_id = f"{tag}_{seq}"
    hub.send_raw(ECHO_FRAME % (task_id, seq, tag, f',"pad":"{pad}"' if pad else ""), pc_id)
    return task_id


def _drive(hub: LocalHub, pc_id: str, total: int, inflight: int, tag: str, raw: bool,
           pad: str = "") -> tuple[list[str], list[float]]:
    """Keep ``inflight`` echo tasks outstanding until ``total`` have a result.

    Returns:
        Their ids, and each one's seconds from its send to the bench seeing its result.
    """
    results, received = hub.results, hub.received
    base, seen_at = len(results), len(received)
    ids: list[str] = []
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = 0
    while done < total:
        for _ in range(min(total, done + inflight) - len(ids)):
            now = time.perf_counter()
            ids.append(send_echo(hub, pc_id, tag, len(ids), raw, pad))
            sent[ids[-1]] = now
        seen = done
        if not hub.wait_for(lambda: len(results) - base > seen, STALL_TIMEOUT):
            raise RuntimeError(f"echo load stalled at {done}/{total} results")
        now = time.perf_counter()
        end = len(received)
        for message in received[seen_at:end]:
            start = sent.pop(message.get("task_id"), None)  # type: ignore[arg-type]
            if start is not None:
                latencies.append(now - start)
        seen_at = end
        done = len(results) - base
    return ids, latencies


def echo_throughput(hub: LocalHub, subject: Subject, total: int, inflight: int, tag: str, *,
                    raw: bool = True, pad: str = "") -> Throughput:
    """Echo tasks/s with ``inflight`` outstanding; CPU of both processes over the same window.

    ``tag`` must be new for each call and subject: it makes the task ids unique.
    """
    me, them = psutil.Process(), subject.ps
    cpu0 = (sum(me.cpu_times()[:2]), sum(them.cpu_times()[:2]), machine_busy())
    t0 = time.perf_counter()
    ids, latencies = _drive(hub, subject.pc_id, total, inflight, f"{subject.name}-{tag}", raw, pad)
    seconds = time.perf_counter() - t0
    cpu1 = (sum(me.cpu_times()[:2]), sum(them.cpu_times()[:2]), machine_busy())
    hub_s, subject_s, all_s = (b - a for a, b in zip(cpu0, cpu1))
    failed = sum(1 for tid in ids if hub.results[tid][0].get("status") != "completed")
    pct = 100 / seconds
    return Throughput(total, seconds, failed, hub_s * pct, subject_s * pct, max(0.0, all_s - hub_s - subject_s) * pct,
                      latencies)


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores) since boot."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def echo_latency(hub: LocalHub, subject: Subject, n: int, tag: str, *, raw: bool = True,
                 pad: str = "") -> list[float]:
    """Round-trip seconds of ``n`` sequential echo tasks (one in flight)."""
    results = hub.results
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        tid = send_echo(hub, subject.pc_id, f"{subject.name}-{tag}", i, raw, pad)
        if not hub.wait_for(lambda: tid in results, STALL_TIMEOUT):
            raise RuntimeError(f"no result for {tid} within {STALL_TIMEOUT} s")
        times.append(time.perf_counter() - t0)
    return times


def frame_bytes(hub: LocalHub, subject: Subject, pad: str) -> tuple[int, int]:
    """The task_result frame of one echo of ``pad``: its bytes on the wire (the hub's ``_bytes``),
    and its bytes with every non-ASCII character written as a ``\\u`` escape."""
    tid = send_echo(hub, subject.pc_id, f"{subject.name}-frame", 0, pad=pad)
    received = hub.wait_result(tid, STALL_TIMEOUT)
    sent = {key: value for key, value in received.items() if not key.startswith("_")}
    return received["_bytes"], len(json.dumps(sent, separators=(",", ":")))


def sleep_wall(hub: LocalHub, subject: Subject, n: int, seconds: float) -> float:
    """Wall time from sending ``n`` sleep tasks at once to the last result."""
    t0 = time.perf_counter()
    ids = [hub.send_task("sleep", {"sleep_time": seconds}, pc_id=subject.pc_id) for _ in range(n)]
    for tid in ids:
        hub.wait_result(tid, n * seconds + STALL_TIMEOUT)
    return time.perf_counter() - t0


def reconnect_times(hub: LocalHub, subject: Subject, drops: int, settle: float) -> list[float]:
    """Seconds from ``hub.drop(pc_id)`` to the node's next node_ready, ``drops`` times.

    Each drop waits ``settle`` seconds of connected time first, so that the node
    counts the connection as stable (OCTOHUB_STABLE_AFTER) and every drop is an
    isolated one, not part of a storm that backs off on purpose.
    """
    times = []
    for _ in range(drops):
        time.sleep(settle)
        before = hub.count("node_ready")
        arrived: list[float] = []

        def ready_again() -> bool:
            if not arrived and hub.count("node_ready") > before:
                arrived.append(time.perf_counter())
            return bool(arrived)

        t0 = time.perf_counter()
        hub.drop(subject.pc_id)
        if not hub.wait_for(ready_again, STALL_TIMEOUT):
            raise RuntimeError(f"{subject.name} did not reconnect within {STALL_TIMEOUT} s")
        times.append(arrived[0] - t0)
    return times


@dataclass
class Usage:
    cpu_percent: float
    rss_mb: float
    threads: int


def idle_usage(subjects: list[Subject], seconds: float) -> dict[str, Usage]:
    """CPU % of one core over ``seconds`` of idleness (all subjects at once), RSS and threads."""
    procs = {s.name: s.ps for s in subjects}
    before = {name: sum(p.cpu_times()[:2]) for name, p in procs.items()}
    time.sleep(seconds)
    return {name: Usage(100 * (sum(p.cpu_times()[:2]) - before[name]) / seconds, p.memory_info().rss / 2**20,
                        p.num_threads()) for name, p in procs.items()}


def snapshot(subject: Subject) -> Usage:
    """RSS and thread count right now (CPU not measured)."""
    p = subject.ps
    return Usage(float("nan"), p.memory_info().rss / 2**20, p.num_threads())


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in [0, 100]."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)
