#!/usr/bin/env python3
"""Measure the node against the wire limit and print one table. Asserts nothing.

    python benchmarks/bench.py            # full run, about a minute
    python benchmarks/bench.py --quick    # a few seconds of each, for a smoke check

One run starts a LocalHub in this process, then two subjects, each its own process
(own GIL) on its own pc_id: the real node (``python run_node.py``, configured by
OCTOHUB_* variables) and a minimal loop written directly on websocket-client
(``bench.py --minimal-loop``, see minimal_loop.py). Both face the same hub.
"""
from __future__ import annotations

import argparse
import platform
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Subject, Usage  # noqa: E402

#: The node's settings for everything but the sleep test (which uses 16 workers).
#: MAX_PENDING is raised because 200 in flight exceed the default capacity
#: (MAX_WORKERS 8 + MAX_PENDING 100): the rest would be refused "NodeBusy".
#: STABLE_AFTER=1 lets every drop of the reconnect test be an isolated one.
NODE_SETTINGS: dict[str, Any] = {"max_pending": 256, "stable_after": 1}


@dataclass
class Plan:
    tasks: int = 5000
    rounds: int = 3
    inflight: int = 200
    latency_n: int = 500
    sleeps: int = 16
    sleep_s: float = 0.5
    drops: int = 5
    idle_s: float = 5.0

    @classmethod
    def quick(cls) -> "Plan":
        return cls(tasks=1000, rounds=1, latency_n=200, drops=3, idle_s=2.0)


@dataclass
class Figures:
    """What one subject measured (None: not measured for it)."""

    idle: Optional[Usage] = None
    loaded: Optional[Usage] = None
    rates: list[harness.Throughput] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    sleep_wall: Optional[float] = None
    reconnects: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return harness.median([t.rate for t in self.rates])


def measure(plan: Plan, hub: Any, workdir: str, env_file: str, started: list[Subject]) -> dict[str, Figures]:
    """Run every measurement; ``started`` collects the processes for the caller to stop."""
    node = harness.node_subject(hub, "node", env_file, workdir, **NODE_SETTINGS)
    minimal = harness.minimal_subject(hub, workdir)
    subjects = [node, minimal]
    for s in subjects:
        started.append(s.start())
    for s in subjects:
        s.wait_ready(hub)
    figs = {s.name: Figures() for s in subjects}
    # Idle first, both at once: an idle process does not disturb the other one.
    for name, usage in harness.idle_usage(subjects, plan.idle_s).items():
        figs[name].idle = usage
    for s in subjects:  # warm-up: pool threads, allocator, socket buffers
        harness.echo_throughput(hub, s, min(plan.tasks, 500), plan.inflight, "warm")
    for r in range(plan.rounds):  # alternate who goes first, against drift
        for s in subjects if r % 2 == 0 else subjects[::-1]:
            figs[s.name].rates.append(harness.echo_throughput(hub, s, plan.tasks, plan.inflight, f"r{r}"))
    for s in subjects:
        harness.echo_latency(hub, s, 50)
        figs[s.name].latency = harness.echo_latency(hub, s, plan.latency_n)
        figs[s.name].loaded = harness.snapshot(s)
    figs["node"].reconnects = harness.reconnect_times(hub, node, plan.drops, settle=1.3)
    wide = harness.node_subject(hub, "node16", env_file, workdir, max_workers=plan.sleeps)
    started.append(wide.start())
    wide.wait_ready(hub)
    figs["node"].sleep_wall = harness.sleep_wall(hub, wide, plan.sleeps, plan.sleep_s)
    return figs


def run(plan: Plan) -> dict[str, Figures]:
    """Start the hub and the subjects, measure, and always clean up."""
    from octohub_sync.hub import LocalHub

    started: list[Subject] = []
    hub = LocalHub(secrets.token_hex(16)).start()
    try:
        with tempfile.TemporaryDirectory(prefix="octohub-bench-") as workdir:
            env_file = str(Path(workdir) / "empty.env")
            Path(env_file).write_text("")
            try:
                return measure(plan, hub, workdir, env_file, started)
            except Exception:
                for s in started:
                    print(f"--- {s.name} log ---\n{s.log_tail()}", file=sys.stderr)
                raise
            finally:
                for s in reversed(started):
                    s.stop()
    finally:
        hub.stop()


# -- the table ----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _row(metric: str, node: str, minimal: str, ratio: str = "", target: str = "", met: Optional[bool] = None) -> str:
    status = "" if met is None else ("met" if met else "NOT MET")
    return f"{metric:<34} {node:>12} {minimal:>12} {ratio:>8}   {target:<20} {status}"


def table(plan: Plan, figs: dict[str, Figures]) -> str:
    n, m = figs["node"], figs["minimal"]
    assert n.idle and m.idle and n.loaded and m.loaded and n.sleep_wall is not None
    rate_ratio = n.rate / m.rate
    p50n, p50m = harness.percentile(n.latency, 50), harness.percentile(m.latency, 50)
    p99n, p99m = harness.percentile(n.latency, 99), harness.percentile(m.latency, 99)
    rec_med, rec_max = harness.median(n.reconnects), max(n.reconnects)
    rss = max(n.idle.rss_mb, n.loaded.rss_mb)
    lines = [
        _row("metric", "node", "minimal", "ratio", "target", None),
        "-" * 100,
        _row(f"echo throughput, {plan.inflight} in flight", f"{n.rate:,.0f} /s", f"{m.rate:,.0f} /s",
             f"{rate_ratio:.2f}x", ">= 0.8x minimal", rate_ratio >= 0.8),
        _row(f"  rounds of {plan.tasks} tasks", "/".join(f"{t.rate:.0f}" for t in n.rates),
             "/".join(f"{t.rate:.0f}" for t in m.rates)),
        _row("  results 'failed' (refused)", str(sum(t.failed for t in n.rates)), str(sum(t.failed for t in m.rates))),
        _row("  CPU % of a core: subject", _pct(n.rates, "subject_cpu"), _pct(m.rates, "subject_cpu")),
        _row("  CPU % of a core: hub (bench)", _pct(n.rates, "hub_cpu"), _pct(m.rates, "hub_cpu")),
        _row("  CPU % of a core: other procs", _pct(n.rates, "other_cpu"), _pct(m.rates, "other_cpu"),
             "", "(noise; ~0 is clean)"),
        _row(f"latency p50, 1 in flight (n={len(n.latency)})", _ms(p50n), _ms(p50m), f"{p50n / p50m:.2f}x",
             "<= 1.5x minimal", p50n / p50m <= 1.5),
        _row("latency p99, 1 in flight", _ms(p99n), _ms(p99m), f"{p99n / p99m:.2f}x"),
        _row(f"{plan.sleeps} x sleep {plan.sleep_s:g} s, {plan.sleeps} workers", f"{n.sleep_wall:.3f} s",
             "n/a", "", "<= 1.2 s", n.sleep_wall <= 1.2),
        _row(f"  (minimal loop has no pool: {plan.sleeps * plan.sleep_s:g} s)", "", ""),
        _row(f"reconnect after drop, median (n={len(n.reconnects)})", f"{rec_med:.3f} s", "n/a"),
        _row("reconnect after drop, max", f"{rec_max:.3f} s", "n/a", "", "< 1 s", rec_max < 1.0),
        _row("  each drop", " ".join(f"{t:.2f}" for t in n.reconnects), ""),
        _row(f"idle CPU over {plan.idle_s:g} s", f"{n.idle.cpu_percent:.2f} %", f"{m.idle.cpu_percent:.2f} %",
             "", "< 0.5 %", n.idle.cpu_percent < 0.5),
        _row("RSS idle / after load", f"{n.idle.rss_mb:.1f}/{n.loaded.rss_mb:.1f} MB",
             f"{m.idle.rss_mb:.1f}/{m.loaded.rss_mb:.1f} MB", f"{rss / max(m.idle.rss_mb, m.loaded.rss_mb):.2f}x",
             "< 40 MB", rss < 40),
        _row("threads idle / after load", f"{n.idle.threads}/{n.loaded.threads}", f"{m.idle.threads}/{m.loaded.threads}"),
    ]
    return "\n".join(lines)


def _pct(rates: list[harness.Throughput], attr: str) -> str:
    return f"{harness.median([getattr(t, attr) for t in rates]):.0f} %"


def header(plan: Plan) -> str:
    import websocket
    import websockets

    settings = " ".join(f"OCTOHUB_{k.upper()}={v}" for k, v in NODE_SETTINGS.items())
    return (f"octohub_sync benchmark: Python {platform.python_version()}, {harness.psutil.cpu_count()} CPUs, "
            f"websocket-client {websocket.__version__}, websockets {websockets.__version__} (hub)\n"
            f"node: run_node.py, defaults + {settings}, LOG_LEVEL=WARNING, STATUS_INTERVAL=0\n"
            f"minimal: one thread on websocket.create_connection, recv/loads/dumps/send\n")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (smoke check, noisier figures)")
    parser.add_argument("--tasks", type=int, help="echo tasks per throughput round (default 5000)")
    parser.add_argument("--rounds", type=int, help="throughput rounds per subject (default 3)")
    parser.add_argument("--minimal-loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("--pc-id", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.minimal_loop:
        import minimal_loop

        return minimal_loop.run(args.api, args.pc_id)
    plan = Plan.quick() if args.quick else Plan()
    plan.tasks = args.tasks or plan.tasks
    plan.rounds = args.rounds or plan.rounds
    print(header(plan), flush=True)
    figs = run(plan)
    print(table(plan, figs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
