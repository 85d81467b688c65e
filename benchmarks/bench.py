#!/usr/bin/env python3
"""Measure the node against the wire limit and print one table. Asserts nothing.

    python benchmarks/bench.py                 # full run, about 2 minutes
    python benchmarks/bench.py --quick         # about a minute, for a smoke check
    python benchmarks/bench.py --echo-only     # only the side-by-side echo tables, about a minute
    python benchmarks/bench.py --workers 16,32 # other MAX_WORKERS (the first one is the main table's)
    python benchmarks/bench.py --echo-only --node-repo /tmp/scratch --set STABLE_AFTER=2
                                               # a modified copy of the node, other settings

One run starts a LocalHub in this process, then the subjects, each its own process
(own GIL) on its own pc_id: the real node (``python run_node.py``, configured by
OCTOHUB_* variables) with its ledger and without, the pool baseline (pool_loop.py), each
of those at every worker count (``--workers``, default 8, 16 and 64), and a minimal loop
written directly on websocket-client (``bench.py --minimal-loop``, see minimal_loop.py).
All face the same hub, in the same rounds: the ratios of one run are comparable.

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

#: MAX_WORKERS of the node and of the pool baseline measured side by side: users whose handlers
#: wait on browsers and networks run 16 to 64.
WORKERS = (8, 16, 64)

#: A typical result of a Chinese page, echoed back for the frame size on the wire (UTF-8 vs \u escapes).
CJK_TEXT = "北京市今天天气晴朗，最高气温二十五度，空气质量良好，适宜外出。" * 10


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
    workers: tuple[int, ...] = WORKERS

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
    #: A CJK result's task_result frame: bytes on the wire, and as it would be with \u escapes.
    cjk_frame: Optional[tuple[int, int]] = None

    @property
    def best(self) -> harness.Throughput:
        # Best round, not median: other processes on a shared machine only ever slow a round down.
        return max(self.rates, key=lambda t: t.rate)


#: The kinds of subject of the echo measurements, in the main table's column order.
KINDS = ("node", "node_mem", "pool", "minimal")
TITLES = {"node": "node", "node_mem": "node, no ledger", "pool": "pool baseline", "minimal": "bare loop"}


def name(kind: str, workers: int) -> str:
    """The subject of ``kind`` at ``workers`` (the bare loop has no workers)."""
    return kind if kind == "minimal" else f"{kind}{workers}"


def main_names(plan: Plan) -> list[str]:
    """The main table's subjects: every kind at the first worker count."""
    return [name(kind, plan.workers[0]) for kind in KINDS]


def state_dir(workdir: str, workers: int) -> Path:
    return Path(workdir) / f"state-{workers}"


def subjects(plan: Plan, hub: Any, workdir: str, env_file: str) -> list[Subject]:
    """At each worker count the real node with its ledger (the program's default) and without, and the
    pool baseline; then the bare loop."""
    made = []
    for w in plan.workers:
        settings = {**plan.node_settings, "max_workers": w}
        made += [
            harness.node_subject(hub, name("node", w), env_file, workdir, repo=plan.node_repo,
                                 **{"state_dir": str(state_dir(workdir, w)), **settings}),
            harness.node_subject(hub, name("node_mem", w), env_file, workdir, repo=plan.node_repo,
                                 **{**settings, "state_dir": "off"}),
            harness.pool_subject(hub, workdir, workers=w, name=name("pool", w)),
        ]
    return made + [harness.seed_subject(hub, workdir), harness.minimal_subject(hub, workdir)]


def measure(plan: Plan, hub: Any, workdir: str, env_file: str, started: list[Subject]) -> dict[str, Figures]:
    """Run every measurement; ``started`` collects the processes for the caller to stop."""
    echo = subjects(plan, hub, workdir, env_file)
    for s in echo:
        started.append(s.start())
    for s in echo:
        s.wait_ready(hub)
    figs = measure_echo(plan, hub, echo)
    if not plan.echo_only:
        by_name = {s.name: s for s in echo}
        node, node_mem, pool, minimal = (by_name[n] for n in main_names(plan))
        measure_node(plan, hub, workdir, env_file, started, by_name, figs[node.name])
        figs[node.name].growth = grown = growth.Growth()
        grown.payloads = growth.payloads(hub, [node_mem, pool, minimal], plan.payload_scale)
        deep = harness.node_subject(hub, "queue", env_file, workdir, repo=plan.node_repo,
                                    **{**plan.node_settings, "state_dir": "off", "max_pending": growth.QUEUED,
                                       "app": "bench_app"})
        started.append(deep.start())
        deep.wait_ready(hub)
        grown.queue_rss, grown.queue_seconds = growth.deep_queue(hub, deep)
        deep.stop()
        grown.long_run = growth.long_run(hub, node, plan.long_tasks, plan.long_chunk)
        figs[node.name].ledger_bytes = harness.ledger_bytes(state_dir(workdir, plan.workers[0]))
    return figs


def measure_echo(plan: Plan, hub: Any, echo: list[Subject]) -> dict[str, Figures]:
    """Idle usage, echo throughput and latency of every subject, in the same rounds; the CJK frame size."""
    figs = {s.name: Figures() for s in echo}
    # Idle first, all at once: an idle process does not disturb the others.
    for subject, usage in harness.idle_usage(echo, plan.idle_s).items():
        figs[subject].idle = usage
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
    node_mem = next(s for s in echo if s.name == main_names(plan)[1])
    figs[main_names(plan)[0]].cjk_frame = harness.frame_bytes(hub, node_mem, CJK_TEXT)
    return figs


def measure_node(plan: Plan, hub: Any, workdir: str, env_file: str, started: list[Subject],
                 by_name: dict[str, Subject], figs: Figures) -> None:
    """The node's own figures: reconnect times, and sleep tasks on as many workers."""
    figs.reconnects = harness.reconnect_times(hub, by_name[main_names(plan)[0]], plan.drops, settle=1.3)
    wide = by_name.get(name("node_mem", plan.sleeps))  # already running at that worker count
    if wide is None:
        wide = harness.node_subject(hub, "sleep", env_file, workdir, repo=plan.node_repo,
                                    **{**plan.node_settings, "state_dir": "off", "max_workers": plan.sleeps})
        started.append(wide.start())
        wide.wait_ready(hub)
    figs.sleep_wall = harness.sleep_wall(hub, wide, plan.sleeps, plan.sleep_s)


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
    cols = [figs[n] for n in main_names(plan)]
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
    cols = [figs[n] for n in main_names(plan)]
    assert all(f.idle and f.loaded for f in cols)
    return [
        _row(f"idle CPU over {plan.idle_s:g} s", *(f"{f.idle.cpu_percent:.2f} %" for f in cols)),  # type: ignore[union-attr]
        _row("RSS idle / after load", *(f"{f.idle.rss_mb:.1f}/{f.loaded.rss_mb:.1f} MB" for f in cols)),  # type: ignore[union-attr]
        _row("threads idle / after load", *(f"{f.idle.threads}/{f.loaded.threads}" for f in cols)),  # type: ignore[union-attr]
    ]


def _p50(f: Figures) -> float:
    return harness.percentile(f.latency, 50)


def _worker_rows(plan: Plan, figs: dict[str, Figures]) -> list[str]:
    """Every kind at every worker count, side by side, and the ratios the issue's targets are about."""
    at = lambda kind, w: figs[name(kind, w)]  # noqa: E731
    bare, seed = figs["minimal"], figs["seed"]
    lines = [f"by MAX_WORKERS (echo, {plan.inflight} in flight, best round; p50 with 1 in flight)",
             _row("", *(f"{w} workers" for w in plan.workers)), "-" * (42 + 17 * len(plan.workers))]
    for kind in KINDS[:3]:
        lines += [_row(f"{TITLES[kind]}: tasks/s", *(f"{at(kind, w).best.rate:,.0f} /s" for w in plan.workers)),
                  _row("  CPU per task", *(f"{at(kind, w).best.cpu_us_per_task:.0f} us" for w in plan.workers)),
                  _row("  latency p50, 1 in flight", *(_ms(_p50(at(kind, w))) for w in plan.workers))]
    ratios = [
        ("tasks/s: node, no ledger / pool", lambda w: at("node_mem", w).best.rate / at("pool", w).best.rate, ">= 0.95x",
         lambda x: x >= 0.95),
        ("tasks/s: node / node, no ledger", lambda w: at("node", w).best.rate / at("node_mem", w).best.rate,
         ">= 0.85x", lambda x: x >= 0.85),
        ("tasks/s: node, no ledger / seed's asyncio", lambda w: at("node_mem", w).best.rate / seed.best.rate,
         ">= 1.2x at 16", lambda x: x >= 1.2),
        ("CPU per task: node, no ledger / pool",
         lambda w: at("node_mem", w).best.cpu_us_per_task / at("pool", w).best.cpu_us_per_task, "-", None),
        ("p50, 1 in flight: node, no ledger / bare", lambda w: _p50(at("node_mem", w)) / _p50(bare), "<= 1.3x",
         lambda x: x <= 1.3),
        ("p50, 1 in flight: node / bare loop", lambda w: _p50(at("node", w)) / _p50(bare), "-", None),
        ("p50, 1 in flight: pool / bare loop", lambda w: _p50(at("pool", w)) / _p50(bare), "-", None),
    ]
    lines += [_row("seed's asyncio design (one loop): tasks/s", f"{seed.best.rate:,.0f} /s"),
              _row("  CPU per task", f"{seed.best.cpu_us_per_task:.0f} us"),
              _row("  latency p50, 1 in flight", _ms(_p50(seed)))]
    lines += ["", _row("ratios (figures, not tests)", *(f"{w} workers" for w in plan.workers)) + "   target"]
    for label, ratio, target, met in ratios:
        values = [ratio(w) for w in plan.workers]
        verdict = "" if met is None else ("met" if all(met(v) for v in values) else "NOT MET")
        lines.append(_row(label, *(f"{v:.2f}x" for v in values)) + f"   {target:<9} {verdict}")
    return lines


def _targets(plan: Plan, figs: dict[str, Figures]) -> list[str]:
    n = figs[main_names(plan)[0]]
    lines = []
    if n.cjk_frame is not None:
        utf8, escaped = n.cjk_frame
        lines.append(f"{f'CJK result frame ({len(CJK_TEXT)} characters), bytes':<52} {utf8:>6,}   "
                     f"(as \\u escapes: {escaped:,}, {utf8 / escaped:.2f}x)")
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
    names = main_names(plan)
    lines = [_row(f"metric ({plan.workers[0]} workers)", *(TITLES[kind] for kind in KINDS)),
             "-" * (42 + 17 * len(KINDS))]
    lines += _echo_rows(plan, figs)
    lines += _usage_rows(plan, figs)
    lines += [""] + _worker_rows(plan, figs)
    lines += ["", "other figures:"] + _targets(plan, figs)
    grown = figs[names[0]].growth
    if grown is not None:
        titles = {n: TITLES[kind] for n, kind in zip(names, KINDS)}
        lines += [""] + growth.rows(grown, titles, names[1:])
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
            f"node: with its ledger (the program's default) and with OCTOHUB_STATE_DIR=off; "
            f"node and pool baseline at MAX_WORKERS={', '.join(map(str, plan.workers))}\n"
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


def _workers(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be positive, got {text!r}")
    return counts


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short run (smoke check, noisier figures)")
    parser.add_argument("--tasks", type=int, help="echo tasks per throughput round (default 5000)")
    parser.add_argument("--rounds", type=int, help="throughput rounds per subject (default 5)")
    parser.add_argument("--echo-only", action="store_true", help="only throughput, latency and usage")
    parser.add_argument("--hub-send-task", action="store_true",
                        help="send echo tasks with hub.send_task (slower hub) instead of pre-serialised send_raw")
    parser.add_argument("--workers", type=_workers, help="MAX_WORKERS of the node and the pool, comma-separated "
                        "(default 8,16,64; the first is the main table's)")
    parser.add_argument("--node-repo", type=Path, help="run the node from this copy of the repo (the hub stays ours)")
    parser.add_argument("--set", type=_setting, action="append", default=[], metavar="NAME=VALUE",
                        help="extra node setting, e.g. --set MAX_PENDING=64 (repeatable; MAX_WORKERS is --workers)")
    parser.add_argument("--idle", type=float, metavar="SECONDS",
                        help="only the wake-ups of an idle connected node per thread (idle_wakeups.py)")
    parser.add_argument("--baseline-repo", type=Path, help="with --idle: also this copy of the repo, same run")
    parser.add_argument("--dialect", choices=("seed", "go"), default="seed", help="with --idle: the hub's dialect")
    parser.add_argument("--minimal-loop", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pool-loop", type=int, metavar="WORKERS", help=argparse.SUPPRESS)
    parser.add_argument("--seed-loop", action="store_true", help=argparse.SUPPRESS)
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
    if args.seed_loop:
        import seed_loop

        return seed_loop.run(args.api, args.pc_id)
    signal.signal(signal.SIGTERM, _terminate)
    if args.idle:
        import idle_wakeups

        print(idle_wakeups.idle_wakeups(args.idle, baseline_repo=args.baseline_repo, dialect=args.dialect))
        return 0
    plan = Plan.quick() if args.quick else Plan()
    plan.tasks = args.tasks or plan.tasks
    plan.rounds = args.rounds or plan.rounds
    plan.echo_only = args.echo_only
    plan.raw_send = not args.hub_send_task
    plan.node_repo = (args.node_repo or harness.REPO).resolve()
    plan.node_settings.update(dict(args.set))
    plan.workers = args.workers or plan.workers
    print(header(plan), flush=True)
    t0 = time.monotonic()
    figs = run(plan)
    print(table(plan, figs))
    print(f"\n(run took {time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
