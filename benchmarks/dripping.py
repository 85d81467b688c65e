"""How long a server answering a byte every few seconds holds a connect attempt (issue 28, point 5).

``python benchmarks/dripping.py [--repo COPY] [--timeout 5] [--every 3]``: a node (of this copy, or
of another) with OCTOHUB_CONNECT_TIMEOUT=5 against an API server, then a WebSocket server, each
sending its whole answer a byte every 3 s; prints how long the server held the first attempt
(until the node closed the connection, or ``--limit``, when the server stops).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile_server import DripServer, api_answer, handshake_answer  # noqa: E402

NODE = """
import sys, time
from octohub_sync import NodeWebSocketClient
from octohub_sync._config.settings import load_settings
values = dict(server_host="127.0.0.1", signature_key="k" * 32, pc_id="node_drip", status_interval=0,
              connect_timeout=float(sys.argv[3]), reconnect_interval=60, reconnect_max_interval=60)
values["connect_mode" if sys.argv[1] == "ws" else "api_url"] = "direct" if sys.argv[1] == "ws" else f"http://127.0.0.1:{sys.argv[2]}"
if sys.argv[1] == "ws":
    values["ws_port"] = int(sys.argv[2])
NodeWebSocketClient(settings=load_settings(values, env_file=False, environ={})).start()
time.sleep(3600)
"""


def held(kind: str, repo: Path, timeout: float, every: float, limit: float) -> float:
    answer = api_answer("ws://127.0.0.1:9/ws/node") if kind == "api" else handshake_answer
    with DripServer(answer, every, limit=limit) as server:
        child = subprocess.Popen([sys.executable, "-c", NODE, kind, str(server.port), str(timeout)], cwd=repo,
                                 env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
        try:
            deadline = time.monotonic() + limit + 10
            while not server.held and time.monotonic() < deadline:
                time.sleep(0.1)
            return server.held[0] if server.held else float("inf")
        finally:
            child.kill()
            child.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the copy of the project whose node runs")
    parser.add_argument("--timeout", type=float, default=5.0, help="OCTOHUB_CONNECT_TIMEOUT")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between two bytes")
    parser.add_argument("--limit", type=float, default=120.0, help="the server gives up after this long")
    args = parser.parse_args()
    for kind in ("api", "ws"):
        seconds = held(kind, args.repo.resolve(), args.timeout, args.every, args.limit)
        print(f"{kind}: a byte every {args.every:g} s held the attempt {seconds:.1f} s "
              f"(OCTOHUB_CONNECT_TIMEOUT={args.timeout:g})", flush=True)


if __name__ == "__main__":
    main()
