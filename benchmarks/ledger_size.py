#!/usr/bin/env python3
"""The ledger's size on disk while a node serves many tasks: it must stay flat. Asserts nothing.

    python benchmarks/ledger_size.py                 # 100,000 echo tasks, 200 in flight
    python benchmarks/ledger_size.py --tasks 20000

The real node (``run_node.py``, its own process) keeps its ledger in a temporary directory;
every 10 % of the run the size of its files (database, WAL, lock) is printed.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--inflight", type=int, default=200)
    args = parser.parse_args()
    from octohub_sync.hub import LocalHub

    with LocalHub(secrets.token_hex(16)) as hub, tempfile.TemporaryDirectory(prefix="octohub-ledger-") as workdir:
        env_file = Path(workdir) / "empty.env"
        env_file.write_text("")
        state = Path(workdir) / "state"
        node = harness.node_subject(hub, "node", str(env_file), workdir, state_dir=str(state), log_level="INFO").start()
        try:
            node.wait_ready(hub)
            step = max(1, args.tasks // 10)
            started = time.perf_counter()
            for done in range(0, args.tasks, step):
                harness.echo_throughput(hub, node, step, args.inflight, f"s{done}")
                print(f"{done + step:>8} tasks: ledger {harness.ledger_bytes(state) / 1024:8.0f} KiB, "
                      f"{(done + step) / (time.perf_counter() - started):,.0f} tasks/s so far", flush=True)
        except Exception:
            print(f"--- node log ---\n{node.log_tail(40)}", file=sys.stderr)
            raise
        finally:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
