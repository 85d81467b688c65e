#!/usr/bin/env python3
"""Measure the node against the wire limit and print one table. Asserts nothing.

    python benchmarks/bench.py                 # full run, about 90 s
    python benchmarks/bench.py --quick         # about 30 s, for a smoke check
    python benchmarks/bench.py --echo-only     # only the side-by-side echo table, about 35 s
    python benchmarks/bench.py --echo-only --node-repo /tmp/scratch --set MAX_WORKERS=2
                                               # a modified copy of the node, other settings

One run starts a LocalHub in this process, then two subjects, each its own process
(own GIL) on its own pc_id: the real node (``python run_node.py``, configured by
OCTOHUB_* variables) and a minimal loop written directly on websocket-client
(``bench.py --minimal-loop``, see minimal_loop.py). Both face the same hub.

Throughput is the best of several rounds (other processes on a shared machine only
slow a round down; their CPU use is shown as "other processes"); CPU per task is the
figure least disturbed by them. See also profile_node.py (where the node's time goes)
and compare.py (several modified copies of the node side by side).
"""
from __future__ import annotations

import argparse
import os
import platform
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import growth  # noqa: E402
import harness  # noqa: E402
from harness import Subject, Usage  # noqa: E402

#: The node's settings besides its defaults (the sleep test also sets 16 workers).
#: STABLE_AFTER=1 lets every drop of the reconnect test be an isolated one.
NODE_SETTINGS: dict[str, Any] = {"stable_after": 1}

#: Hub CPU (% of a core) from which the in-process hub, one GIL, is taken to be the limit.
HUB_SATURATED = 90.0

#: Latency samples are taken in blocks of this many, alternating node and minimal loop.
LATENCY_BLOCK = 100


@dataclass
class Plan:
    """What to run; the defaults are the full run."""

    tasks: int = 5000
    rounds: int = 5
    inflight: int = 200
    latency_n: int = 1000
    sleeps: int = 16
    sleep_s: float = 0.5
    drops: int = 5
    idle_s: float = 5.0
    #: Scale of the payload measurements (1.0: growth.PAYLOADS as they are).
    payload_scale: float = 1.0
    long_tasks: int = 100_000
    long_chunk: int = 10_000
    echo_only: bool = False
    raw_send: bool = True
    node_repo: Path = harness.REPO
    node_settings: dict[str, Any] = field(default_factory=lambda: dict(NODE_SETTINGS))

    @classmethod
    def quick(cls) -> "Plan":
        return cls(tasks=2000, rounds=2, latency_n=200, drops=3, idle_s=2.0, payload_scale=0.25,
                   long_tasks=20_000, long_chunk=4000)


@dataclass
class Figures:
    """What one subject measured (None/empty: not measured for it)."""

    idle: Optional[Usage] = None
    loaded: Optional[Usage] = None
    rates: list[harness.Throughput] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    sleep_wall: Optional[float] = None
    reconnects: list[float] = field(default_factory=list)
    ledger_bytes: Optional[int] = None
    growth: Optional[growth.Growth] = None

    @property
    def best(self) -> harness.Throughput:
        # Best round, not median: other processes on a shared machine only ever slow a round down.
        return max(self.rates, key=lambda t: t.rate)


#: The subjects of the echo measurements, in the table's column order.
ECHO_SUBJECTS = ("node", "node_mem", "pool", "minimal")
TITLES = {"node": "node", "node_mem": "node, no ledger", "pool": "pool baseline", "minimal": "bare loop"}


def subjects(plan: Plan, hub: Any, workdir: str, env_file: str) -> list[Subject]:
    """The real node with its ledger (the program's default) and without, and the two baselines."""
    state = str(Path(workdir) / "state")
    return [
        harness.node_subject(hub, "node", env_file, workdir, repo=plan.node_repo,
                             **{"state_dir": state, **plan.node_settings}),
        harness.node_subject(hub, "node_mem", env_file, workdir, repo=plan.node_repo,
                             **{**plan.node_settings, "state_dir": "off"}),
        harness.pool_subject(hub, workdir, workers=int(plan.node_settings.get("max_workers", 8))),
        harness.minimal_subject(hub, workdir),
    ]


def measure(plan: Plan, hub: Any, workdir: str, env_file: str, started: list[Subject]) -> dict[str, Figures]:
    """Run every measurement; ``started`` collects the processes for the caller to stop."""
    echo = subjects(plan, hub, workdir, env_file)
    for s in echo:
        started.append(s.start())
    for s in echo:
        s.wait_ready(hub)
    figs = {s.name: Figures() for s in echo}
    # Idle first, all at once: an idle process does not disturb the others.
    for name, usage in harness.idle_usage(echo, plan.idle_s).items():
        figs[name].idle = usage
    raw = plan.raw_send
    for s in echo:  # warm-up: pool threads, allocator, socket buffers
        harness.echo_throughput(hub, s, min(plan.tasks, 1000), plan.inflight, "warm", raw=raw)
        harness.echo_latency(hub, s, 50, "warm", raw=raw)
    # Rounds rotate who goes first, and latency runs in interleaved blocks, so that
    # load from other processes on the machine hits every subject alike.
    for r in range(plan.rounds):
        for s in echo[r % len(echo):] + echo[:r % len(echo)]:
            figs[s.name].rates.append(harness.echo_throughput(hub, s, plan.tasks, plan.inflight, f"r{r}", raw=raw))
    for block in range(0, plan.latency_n, LATENCY_BLOCK):
        for s in echo:
            n = min(LATENCY_BLOCK, plan.latency_n - block)
            figs[s.name].latency += harness.echo_latency(hub, s, n, f"l{block}", raw=raw)
    for s in echo:
        figs[s.name].loaded = harness.snapshot(s)
    if plan.echo_only:
        return figs
    node = echo[0]
    figs["node"].reconnects = harness.reconnect_times(hub, node, plan.drops, settle=1.3)
    wide = harness.node_subject(hub, "node16", env_file, workdir, repo=plan.node_repo,
                                **{**plan.node_settings, "state_dir": "off", "max_workers": plan.sleeps})
    started.append(wide.start())
    wide.wait_ready(hub)
    figs["node"].sleep_wall = harness.sleep_wall(hub, wide, plan.sleeps, plan.sleep_s)
    wide.stop()
    figs["node"].growth = grown = growth.Growth()
    grown.payloads = growth.payloads(hub, [echo[1], echo[2], echo[3]], plan.payload_scale)
    deep = harness.node_subject(hub, "queue", env_file, workdir, repo=plan.node_repo,
                                **{**plan.node_settings, "state_dir": "off", "max_pending": growth.QUEUED,
                                   "app": "bench_app"})
    started.append(deep.start())
    deep.wait_ready(hub)
    grown.queue_rss, grown.queue_seconds = growth.deep_queue(hub, deep)
    deep.stop()
    grown.long_run = growth.long_run(hub, node, plan.long_tasks, plan.long_chunk)
    figs["node"].ledger_bytes = harness.ledger_bytes(Path(workdir) / "state")
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
    return f"{seconds * 1000:.3f} ms"


def _row(metric: str, *cells: str) -> str:
    return f"{metric:<42}" + "".join(f"{cell:>17}" for cell in cells)


def _target(metric: str, value: float, target: str, met: bool) -> str:
    return f"{metric:<52} {value:>6.2f}x   {target:<12} {'met' if met else 'NOT MET'}"


def _echo_rows(plan: Plan, figs: dict[str, Figures]) -> list[str]:
    cols = [figs[name] for name in ECHO_SUBJECTS]
    p = harness.percentile
    return [
        _row(f"echo throughput, {plan.inflight} in flight (best)", *(f"{f.best.rate:,.0f} /s" for f in cols)),
        _row(f"  rounds of {plan.tasks} tasks, slowest-fastest /s",
             *(f"{min(t.rate for t in f.rates):.0f}-{max(t.rate for t in f.rates):.0f}" for f in cols)),
        _row("  subject CPU per task (best round)", *(f"{f.best.cpu_us_per_task:.0f} us" for f in cols)),
        _row("  CPU % of a core: subject", *(f"{f.best.subject_cpu:.0f} %" for f in cols)),
        _row("  CPU % of a core: hub (bench process)", *(f"{f.best.hub_cpu:.0f} %" for f in cols)),
        _row("  CPU % of a core: other processes", *(f"{f.best.other_cpu:.0f} %" for f in cols)),
        _row("  results 'failed' (all rounds)", *(str(sum(t.failed for t in f.rates)) for f in cols)),
        _row(f"  latency p50 / p99, {plan.inflight} in flight",
             *(f"{p(_loaded(f), 50) * 1e3:.1f}/{p(_loaded(f), 99) * 1e3:.1f} ms" for f in cols)),
        _row(f"latency p50, 1 in flight (n={len(cols[0].latency)})", *(_ms(p(f.latency, 50)) for f in cols)),
        _row("latency p99, 1 in flight", *(_ms(p(f.latency, 99)) for f in cols)),
    ]


def _loaded(f: Figures) -> list[float]:
    """Send-to-result seconds of every task of every throughput round."""
    return [t for r in f.rates for t in r.latencies]


def _usage_rows(plan: Plan, figs: dict[str, Figures]) -> list[str]:
    cols = [figs[name] for name in ECHO_SUBJECTS]
    assert all(f.idle and f.loaded for f in cols)
    return [
        _row(f"idle CPU over {plan.idle_s:g} s", *(f"{f.idle.cpu_percent:.2f} %" for f in cols)),  # type: ignore[union-attr]
        _row("RSS idle / after load", *(f"{f.idle.rss_mb:.1f}/{f.loaded.rss_mb:.1f} MB" for f in cols)),  # type: ignore[union-attr]
        _row("threads idle / after load", *(f"{f.idle.threads}/{f.loaded.threads}" for f in cols)),  # type: ignore[union-attr]
    ]


def _targets(plan: Plan, figs: dict[str, Figures]) -> list[str]:
    node, mem, pool, bare = (figs[name] for name in ECHO_SUBJECTS)
    p50 = lambda f: harness.percentile(f.latency, 50)  # noqa: E731
    n = figs["node"]
    lines = [
        _target("throughput: node without ledger / pool baseline", mem.best.rate / pool.best.rate, ">= 0.9x",
                mem.best.rate / pool.best.rate >= 0.9),
        _target("throughput: node with ledger / without", node.best.rate / mem.best.rate, ">= 0.85x",
                node.best.rate / mem.best.rate >= 0.85),
        _target("latency p50: node without ledger / bare loop", p50(mem) / p50(bare), "<= 1.3x",
                p50(mem) / p50(bare) <= 1.3),
        _target("latency p50: node with ledger / bare loop", p50(node) / p50(bare), "-", True),
        _target("CPU per task: node without ledger / pool baseline",
                mem.best.cpu_us_per_task / pool.best.cpu_us_per_task, "-", True),
    ]
    rss = max(n.idle.rss_mb, n.loaded.rss_mb)  # type: ignore[union-attr]
    lines.append(f"{'node RSS':<52} {rss:>6.1f} MB  < 40 MB       {'met' if rss < 40 else 'NOT MET'}")
    if not plan.echo_only:
        assert n.sleep_wall is not None
        med, worst = harness.median(n.reconnects), max(n.reconnects)
        lines += [
            f"{f'{plan.sleeps} x sleep {plan.sleep_s:g} s, MAX_WORKERS={plan.sleeps}':<52} {n.sleep_wall:>6.3f} s   "
            f"<= 1.2 s      {'met' if n.sleep_wall <= 1.2 else 'NOT MET'}",
            f"{'reconnect after drop, median / max':<52} {med:.3f} / {worst:.3f} s   < 1 s max  "
            f"{'met' if worst < 1.0 else 'NOT MET'}  (each: {' '.join(f'{t:.2f}' for t in n.reconnects)})",
            f"{'ledger files after the run (all of it)':<52} {(n.ledger_bytes or 0) / 1024:.0f} KiB",
        ]
    return lines


def table(plan: Plan, figs: dict[str, Figures]) -> str:
    lines = [_row("metric", *(TITLES[name] for name in ECHO_SUBJECTS)), "-" * (42 + 17 * len(ECHO_SUBJECTS))]
    lines += _echo_rows(plan, figs)
    lines += _usage_rows(plan, figs)
    lines += ["", "targets (figures, not tests):"] + _targets(plan, figs)
    grown = figs["node"].growth
    if grown is not None:
        lines += [""] + growth.rows(grown, TITLES, ["node_mem", "pool", "minimal"])
    bare = figs["minimal"]
    if bare.best.hub_cpu >= HUB_SATURATED:
        lines.append(f"\nnote: the hub (bench process) used {bare.best.hub_cpu:.0f} % of a core in the bare loop's best "
                     "round: the hub, not the loop, bounds that figure.")
    return "\n".join(lines)


def header(plan: Plan) -> str:
    import websocket
    import websockets

    settings = " ".join(f"OCTOHUB_{k.upper()}={v}" for k, v in plan.node_settings.items())
    where = "" if plan.node_repo == harness.REPO else f" from {plan.node_repo}"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"octohub_sync benchmark: Python {platform.python_version()}, {os.cpu_count()} CPUs (load avg {load}), "
            f"websocket-client {websocket.__version__}, hub on websockets {websockets.__version__}\n"
            f"node: run_node.py{where}, defaults + {settings} LOG_LEVEL=WARNING STATUS_INTERVAL=0\n"
            f"node: with its ledger (the program's default) and with OCTOHUB_STATE_DIR=off\n"
            f"pool baseline: WebSocketApp + ThreadPoolExecutor(MAX_WORKERS), no features (pool_loop.py)\n"
            f"bare loop: one thread on websocket.create_connection: recv, json.loads, json.dumps, send\n"
            f"echo: {plan.rounds} rounds x {plan.tasks} tasks per subject, {plan.inflight} outstanding; "
            f"latency: {plan.latency_n} sequential tasks each; hub sends with "
            f"{'send_raw (pre-serialised)' if plan.raw_send else 'send_task'}\n")


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.lower().removeprefix("octohub_"), value


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (smoke check, noisier figures)")
    parser.add_argument("--tasks", type=int, help="echo tasks per throughput round (default 5000)")
    parser.add_argument("--rounds", type=int, help="throughput rounds per subject (default 5)")
    parser.add_argument("--echo-only", action="store_true", help="only throughput, latency and usage")
    parser.add_argument("--hub-send-task", action="store_true",
                        help="send echo tasks with hub.send_task (slower hub) instead of pre-serialised send_raw")
    parser.add_argument("--node-repo", type=Path, help="run the node from this copy of the repo (the hub stays ours)")
    parser.add_argument("--set", type=_setting, action="append", default=[], metavar="NAME=VALUE",
                        help="extra node setting, e.g. --set MAX_WORKERS=2 (repeatable)")
    parser.add_argument("--minimal-loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pool-loop", type=int, metavar="WORKERS", help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    parser.add_argument("--pc-id", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the processes


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.minimal_loop:
        import minimal_loop

        return minimal_loop.run(args.api, args.pc_id)
    if args.pool_loop:
        import pool_loop

        return pool_loop.run(args.api, args.pc_id, args.pool_loop)
    signal.signal(signal.SIGTERM, _terminate)
    plan = Plan.quick() if args.quick else Plan()
    plan.tasks = args.tasks or plan.tasks
    plan.rounds = args.rounds or plan.rounds
    plan.echo_only = args.echo_only
    plan.raw_send = not args.hub_send_task
    plan.node_repo = (args.node_repo or harness.REPO).resolve()
    plan.node_settings.update(dict(args.set))
    print(header(plan), flush=True)
    t0 = time.monotonic()
    figs = run(plan)
    print(table(plan, figs))
    print(f"\n(run took {time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
