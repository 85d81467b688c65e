#!/usr/bin/env python3
"""Compare node variants (copies of the repo) on the echo path, side by side, against one hub.

    python benchmarks/compare.py /tmp/scratch/base /tmp/scratch/inline ...
    python benchmarks/compare.py /tmp/scratch/base . --app .=middleware_app   # . once more, with middleware

Each path is a directory holding ``run_node.py`` and ``octohub_sync/`` (a scratch copy
with a proposed change). All variants, the pool baseline and the bare loop run at once, each
in its own process on its own pc_id (``--ledger``: each variant with a ledger of its own), and are measured in interleaved rounds, so that load from other
processes hits them alike. CPU per task (the subject's own CPU time / tasks) is the
figure least disturbed by a shared machine.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from bench import NODE_SETTINGS  # noqa: E402


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repos", nargs="+", type=Path, help="copies of the repo to run the node from")
    parser.add_argument("--tasks", type=int, default=5000, help="echo tasks per round (default 5000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (default 5)")
    parser.add_argument("--latency", type=int, default=500, help="sequential tasks for latency (default 500)")
    parser.add_argument("--ledger", action="store_true", help="run each variant with a ledger (OCTOHUB_STATE_DIR)")
    parser.add_argument("--inflight", type=int, default=200, help="echo tasks outstanding (default 200)")
    parser.add_argument("--workers", type=int, default=8, help="the nodes' MAX_WORKERS and the pool's (default 8)")
    parser.add_argument("--app", action="append", default=[], metavar="REPO=MODULE",
                        help="also run REPO's node serving MODULE of benchmarks/ (OCTOHUB_APP), e.g. .=middleware_app")
    args = parser.parse_args(argv)
    from octohub_sync.hub import LocalHub

    hub = LocalHub(secrets.token_hex(16)).start()
    subjects: list[harness.Subject] = []
    try:
        with tempfile.TemporaryDirectory(prefix="octohub-compare-") as workdir:
            env_file = str(Path(workdir) / "empty.env")
            Path(env_file).write_text("")
            for i, repo in enumerate(args.repos):
                name = f"v{i}-{repo.resolve().name}"
                settings = dict(NODE_SETTINGS, max_workers=args.workers)
                if args.ledger:
                    settings["state_dir"] = str(Path(workdir) / f"state-{i}")
                subjects.append(harness.node_subject(hub, name, env_file, workdir, repo=repo.resolve(), **settings))
            for i, spec in enumerate(args.app):
                repo, _, module = spec.partition("=")
                settings = dict(NODE_SETTINGS, max_workers=args.workers, app=module)
                name = f"a{i}-{Path(repo).resolve().name}-{module}"[:24]
                subjects.append(harness.node_subject(hub, name, env_file, workdir, repo=Path(repo).resolve(), **settings))
            subjects.append(harness.pool_subject(hub, workdir, args.workers))
            subjects.append(harness.minimal_subject(hub, workdir))
            try:
                for s in subjects:
                    s.start()
                for s in subjects:
                    s.wait_ready(hub)
                print(report(hub, subjects, args.tasks, args.rounds, args.latency, args.inflight))
            finally:
                for s in subjects:
                    s.stop()
    finally:
        hub.stop()
    return 0


def report(hub: object, subjects: list[harness.Subject], tasks: int, rounds: int, latency_n: int,
           inflight: int = 200) -> str:
    rates: dict[str, list[harness.Throughput]] = {s.name: [] for s in subjects}
    lat: dict[str, list[float]] = {s.name: [] for s in subjects}
    for s in subjects:
        harness.echo_throughput(hub, s, 1000, inflight, "warm")  # type: ignore[arg-type]
    for r in range(rounds):
        order = subjects if r % 2 == 0 else subjects[::-1]
        for s in order:
            rates[s.name].append(harness.echo_throughput(hub, s, tasks, inflight, f"r{r}"))  # type: ignore[arg-type]
        for s in order:
            lat[s.name] += harness.echo_latency(hub, s, latency_n // rounds, f"l{r}")  # type: ignore[arg-type]
    ref_cpu = harness.median([t.cpu_us_per_task for t in rates[subjects[0].name]])
    lines = [f"{'variant':<24} {'best /s':>9} {'median /s':>10} {'CPU us/task':>12} {'vs first':>9} "
             f"{'p50 ms':>8} {'p99 ms':>8} {'hub CPU %':>10} {'other %':>8}", "-" * 106]
    for s in subjects:
        rs = rates[s.name]
        cpu = harness.median([t.cpu_us_per_task for t in rs])
        best = max(rs, key=lambda t: t.rate)
        lines.append(f"{s.name:<24} {best.rate:9,.0f} {harness.median([t.rate for t in rs]):10,.0f} {cpu:12.0f} "
                     f"{cpu / ref_cpu:8.2f}x {harness.percentile(lat[s.name], 50) * 1e3:8.3f} "
                     f"{harness.percentile(lat[s.name], 99) * 1e3:8.3f} {best.hub_cpu:10.0f} "
                     f"{harness.median([t.other_cpu for t in rs]):8.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
