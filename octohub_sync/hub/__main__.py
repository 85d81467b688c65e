"""``python -m octohub_sync.hub``: run the local hub on its own, to try a node against it.

It prints the settings a node needs, optionally sends an ``echo`` task to every
connected node every few seconds, prints each result, and runs until Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import threading
from typing import Optional, Sequence

from octohub_sync.hub import LocalHub


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m octohub_sync.hub", description=__doc__.splitlines()[0])
    parser.add_argument("--key", help="signature key (default: a new random one, printed)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--api-port", type=int, default=8080)
    parser.add_argument("--ws-port", type=int, default=8000)
    parser.add_argument("--dialect", choices=("seed", "go"), default="seed")
    parser.add_argument("--echo-every", type=float, default=0, metavar="SECONDS",
                        help="send an echo task to each connected node this often (0: never)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    key = args.key or secrets.token_urlsafe(24)
    hub = LocalHub(key, host=args.host, api_port=args.api_port, ws_port=args.ws_port, dialect=args.dialect)
    hub.start()
    print(f"local hub: API {hub.api_url}, WebSocket port {hub.ws_port}, {args.dialect} dialect. Point a node at it:")
    # A generated key is a throw-away of this run and must be shown to be usable; a given one is not echoed.
    shown = "<your key>" if args.key else key
    # The key goes in the environment: on the command line every user of the machine could read it.
    print(f"  OCTOHUB_SIGNATURE_KEY={shown} python run_node.py --server-host {args.host} "
          f"--server-port {hub.api_port} --ws-port {hub.ws_port}", flush=True)
    stop = threading.Event()
    seen = 0
    try:
        while not stop.wait(args.echo_every or 1.0):
            if args.echo_every:
                for pc_id in {c["pc_id"] for c in hub.connections if c["closed"] is None}:
                    hub.send_task("echo", {"from": "local hub"}, pc_id=pc_id)
            results = [r for rs in list(hub.results.values()) for r in rs]
            for result in results[seen:]:
                print("result:", json.dumps(result, ensure_ascii=False), flush=True)
            seen = len(results)
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
