"""Peak RSS of a node process under hostile frames (issue 28, point 1), for this copy or another.

``python benchmarks/hostile_frames.py [--repo COPY] [--limit BYTES]``: a raw server on 127.0.0.1
declares a 2 GiB frame and streams it, sends a complete 1 GiB frame, floods continuation frames
of 64 KiB (68 MB); for each, the node's peak RSS growth and the close code it answered with.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile_server import GIB, declare, fragments  # noqa: E402
from tests.test_frame_bounds import peak_rss_growth  # noqa: E402

ATTACKS = {
    "2 GiB declared, streamed": declare(2 * GIB, send=2 * GIB),
    "1 GiB frame, complete": declare(GIB, send=GIB),
    "continuation flood, 68 MB": fragments(64 * 1024, total=68 * 10**6),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the copy of the project whose node runs")
    parser.add_argument("--limit", type=int, default=4 * 2**20, help="OCTOHUB_MAX_MESSAGE_BYTES")
    parser.add_argument("--seconds", type=float, default=30.0, help="the longest one attack may take")
    args = parser.parse_args()
    for name, attack in ATTACKS.items():
        started = time.monotonic()
        growth, codes = peak_rss_growth(attack, limit=args.limit, seconds=args.seconds, repo=args.repo.resolve())
        print(f"{name}: peak RSS +{growth / 2**20:.0f} MiB, close codes {codes}, "
              f"{time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
