#!/usr/bin/env python3
"""Does a node crash the Go server? Bursts of echo tasks against the local hub's go dialect, whose crash
on a ping frame that meets its own write is the real server's (docs/protocol.md §4). Asserts nothing.

    python benchmarks/go_crash.py [--repo /tmp/old] [--runs 3] [--bursts 5]

The node is the real program (``run_node.py`` of ``--repo``, default this one) in its own process, with
default settings; the hub runs here. Prints, per run, the hub's crashes and the tasks answered.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def one_run(repo: Path, bursts: int, size: int) -> tuple[int, int]:
    from octohub_sync.hub import LocalHub

    with LocalHub(secrets.token_hex(16), dialect="go") as hub, tempfile.TemporaryDirectory() as workdir:
        env_file = Path(workdir) / "empty.env"
        env_file.write_text("")
        node = harness.node_subject(hub, "crash", str(env_file), workdir, repo=repo).start()
        try:
            node.wait_ready(hub)
            for burst in range(bursts):
                ids = [harness.send_echo(hub, node.pc_id, "crash", burst * size + n, raw=False) for n in range(size)]
                hub.wait_for(lambda: all(i in hub.results for i in ids) or bool(hub.crashes), 10)
                if hub.crashes:
                    break
            return len(hub.crashes), len(hub.results)
        finally:
            node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=harness.REPO, help="the copy of the repo to run the node from")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bursts", type=int, default=5, help="bursts of 20 echo tasks per run (default 5)")
    args = parser.parse_args()
    for run in range(args.runs):
        crashes, answered = one_run(args.repo.resolve(), args.bursts, 20)
        print(f"run {run + 1}: {crashes} hub crash(es), {answered} of {20 * args.bursts} tasks answered", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
