"""Cost as work grows, for bench.py: payload size, a deep queue, a long run with drops. Asserts nothing.

- Payloads: echo throughput (``PAYLOAD_INFLIGHT`` in flight, best of two alternating rounds) and
  p50 with one in flight, for ``data`` of 100 B to 1 MB echoed back, for the node, the pool
  baseline and the bare loop.
- A deep queue: the node with ``OCTOHUB_MAX_PENDING=10000`` gets 10,000 tasks whose handler
  sleeps until the bench releases it (bench_app.py): RSS before, with the 10,000 queued, and
  after they all finished.
- A long run: the node (with its ledger) serves 100,000 echo tasks in chunks, the hub drops its
  connection between every other chunk; RSS, threads and open files after each chunk. Growth
  is counted from the end of the first chunk (warm-up) to the end.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import harness
from harness import Subject

#: Bytes of ``data`` echoed back, and how many tasks of each size one measurement sends.
PAYLOADS = {100: 2000, 10_000: 2000, 100_000: 400, 1_000_000: 60}
PAYLOAD_INFLIGHT = 16
#: Sequential tasks for the p50 of each size.
PAYLOAD_LATENCY = {100: 100, 10_000: 100, 100_000: 50, 1_000_000: 20}

QUEUED = 10_000


@dataclass
class Growth:
    #: (subject name, payload bytes) -> (tasks/s, p50 seconds with one in flight)
    payloads: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    #: RSS in MB: before, with QUEUED tasks waiting, after they finished
    queue_rss: tuple[float, float, float] = (0.0, 0.0, 0.0)
    queue_seconds: float = 0.0
    #: After each chunk of the long run: (tasks so far, RSS MB, threads, open files, drops so far)
    long_run: list[tuple[int, float, int, int, int]] = field(default_factory=list)


def payloads(hub: Any, subjects: list[Subject], scale: float = 1.0,
             rounds: int = 2) -> dict[tuple[str, int], tuple[float, float]]:
    """Per subject and size: the best of ``rounds`` throughput runs (the order alternates), and the p50."""
    figures = {}
    for size, tasks in PAYLOADS.items():
        pad = "x" * (size - 30 if size > 100 else 70)  # the rest of data is about 30 bytes
        n = max(10, int(tasks * scale))
        best = {s.name: 0.0 for s in subjects}
        lat: dict[str, list[float]] = {s.name: [] for s in subjects}
        for s in subjects:
            harness.echo_throughput(hub, s, min(n, 50), PAYLOAD_INFLIGHT, f"pw{size}", pad=pad)
        for r in range(rounds):
            for s in subjects if r % 2 == 0 else subjects[::-1]:
                rate = harness.echo_throughput(hub, s, n, PAYLOAD_INFLIGHT, f"p{size}-{r}", pad=pad).rate
                best[s.name] = max(best[s.name], rate)
                lat[s.name] += harness.echo_latency(hub, s, max(5, int(PAYLOAD_LATENCY[size] * scale) // rounds),
                                                    f"pl{size}-{r}", pad=pad)
        for s in subjects:
            figures[(s.name, size)] = (best[s.name], harness.percentile(lat[s.name], 50))
    return figures


def deep_queue(hub: Any, node: Subject, queued: int = QUEUED) -> tuple[tuple[float, float, float], float]:
    """RSS (MB) before, with ``queued`` tasks waiting for a worker, and after all finished; seconds taken."""
    rss = lambda: node.ps.memory_info().rss / 2**20  # noqa: E731
    before = rss()
    t0 = time.perf_counter()
    ids = [hub.send_task("hold", {}, pc_id=node.pc_id) for _ in range(queued)]
    # The node reads frames in order: once it answered this ping, every task above is in its queue.
    pongs = hub.count("pong")
    hub.send_json_ping(node.pc_id)
    if not hub.wait_for(lambda: hub.count("pong") > pongs, 60):
        raise RuntimeError("the node did not answer a ping behind the queued tasks")
    full = rss()
    hub.send_message({"type": "release"}, node.pc_id)
    last = ids[-1]
    if not hub.wait_for(lambda: last in hub.results and all(t in hub.results for t in ids), 120):
        raise RuntimeError("the queued tasks did not all finish")
    failed = sum(1 for t in ids if hub.results[t][0].get("status") != "completed")
    if failed:
        raise RuntimeError(f"{failed} queued task(s) failed: {hub.results[ids[0]][0]}")
    seconds = time.perf_counter() - t0
    return (before, full, rss()), seconds


def long_run(hub: Any, node: Subject, total: int, chunk: int) -> list[tuple[int, float, int, int, int]]:
    samples = []
    drops = 0
    for i in range(total // chunk):
        harness.echo_throughput(hub, node, chunk, 200, f"long{i}")
        if i % 2 == 1:
            harness.reconnect_times(hub, node, 1, settle=1.3)
            drops += 1
        p = node.ps
        samples.append(((i + 1) * chunk, p.memory_info().rss / 2**20, p.num_threads(), p.num_fds(), drops))
    return samples


def rows(growth: Growth, titles: dict[str, str], names: list[str]) -> list[str]:
    lines = [f"cost as work grows: echo throughput ({PAYLOAD_INFLIGHT} in flight, best of 2) / p50 latency (1 in flight)",
             f"{'data echoed':<14}" + "".join(f"{titles[n]:>26}" for n in names)]
    for size in PAYLOADS:
        cells = []
        for n in names:
            rate, p50 = growth.payloads[(n, size)]
            cells.append(f"{rate:,.0f} /s {p50 * 1e3:7.3f} ms")
        lines.append(f"{_size(size):<14}" + "".join(f"{c:>26}" for c in cells))
    for size in PAYLOADS:
        node, pool = growth.payloads[(names[0], size)][0], growth.payloads[(names[1], size)][0]
        lines.append(f"  {_size(size)}: {titles[names[0]]} / {titles[names[1]]} throughput {node / pool:.2f}x")
    before, full, after = growth.queue_rss
    lines += ["", f"{QUEUED:,} tasks queued (OCTOHUB_MAX_PENDING={QUEUED}, handlers asleep until released): "
                  f"RSS {before:.1f} MB before, {full:.1f} MB queued ({(full - before) * 2**20 / QUEUED:,.0f} B a task), "
                  f"{after:.1f} MB after all finished ({growth.queue_seconds:.1f} s)"]
    if growth.long_run:
        first, last = growth.long_run[0], growth.long_run[-1]
        lines += ["", f"long run, node with its ledger: {last[0]:,} echo tasks, {last[4]} drops; after each chunk "
                      "(tasks: RSS MB / threads / open files):",
                  "  " + "  ".join(f"{t // 1000}k: {r:.1f}/{th}/{fd}" for t, r, th, fd, _ in growth.long_run),
                  f"  growth after warm-up ({first[0]:,} tasks -> {last[0]:,}): RSS {last[1] - first[1]:+.1f} MB, "
                  f"threads {last[2] - first[2]:+d}, open files {last[3] - first[3]:+d}   (target: RSS < 5 MB)"]
    return lines


def _size(n: int) -> str:
    return f"{n // 1_000_000} MB" if n >= 1_000_000 else f"{n // 1000} KB" if n >= 1000 else f"{n} B"
