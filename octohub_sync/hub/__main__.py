"""``python -m octohub_sync.hub``: run the local hub on its own, to try a node against it.

It prints the settings a node needs, optionally sends an ``echo`` task to every
connected node every few seconds, or your own tasks (``--send TYPE JSON``, ``--count N``),
prints each result, and runs until Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import threading
from typing import Any, Optional, Sequence

from octohub_sync._platform.console import tolerant_console
from octohub_sync._platform.stop_signals import StopRequests
from octohub_sync.hub import install_hint, lacks_websockets

PROG = "python -m octohub_sync.hub"


#: How the hint names where a node reads the key (``Settings.sources``).
KEY_SOURCES = {".env": "./.env", "environment": "the environment", "key file": "OCTOHUB_SIGNATURE_KEY_FILE",
               "credential": "the systemd credential octohub_signature_key"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--key", help="signature key (default: OCTOHUB_SIGNATURE_KEY as a node started in this "
                                      "directory reads it, from ./.env or the environment; else a new random "
                                      "one on every start, printed)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--api-port", type=int, default=8080)
    parser.add_argument("--ws-port", type=int, default=8000)
    parser.add_argument("--dialect", choices=("seed", "go"), default="seed")
    parser.add_argument("--echo-every", type=float, default=0, metavar="SECONDS",
                        help="send an echo task to each connected node this often (0: never)")
    parser.add_argument("--send", nargs=2, action="append", default=[], metavar=("TYPE", "JSON"),
                        help="send a task of this type with this JSON data to the first node that is ready "
                             "(repeatable: --send resize '{\"path\": \"a.png\"}' --send echo '{}')")
    parser.add_argument("--count", type=int, default=1, metavar="N",
                        help="send each --send task N times (default 1)")
    return parser


def _tasks(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The ``--send`` tasks, their JSON parsed; a mistake is argparse's error (exit 2), naming the task."""
    if args.count < 1:
        parser.error(f"--count {args.count}: must be at least 1")
    tasks = []
    for task_type, text in args.send:
        try:
            tasks.append((task_type, json.loads(text)))
        except ValueError as exc:
            parser.error(f"--send {task_type} {text!r}: not JSON ({exc}); quote it for the shell: '{{\"k\": 1}}'")
    return tasks * args.count


def main(argv: Optional[Sequence[str]] = None) -> int:
    tolerant_console()  # a result in Chinese must not kill the hub on a cp1252 or ascii console
    try:
        from octohub_sync.hub.core import LocalHub
    except ImportError as exc:
        if not lacks_websockets(exc):
            raise
        print(f"{PROG}: the local hub needs the websockets package: {install_hint()}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    tasks = _tasks(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    key, source = _choose_key(args.key)
    if key is None:
        return 2
    stops = StopRequests(program=PROG)
    if threading.current_thread() is threading.main_thread():  # signal.signal works only there
        stops.install()
    hub = LocalHub(key, host=args.host, api_port=args.api_port, ws_port=args.ws_port, dialect=args.dialect)
    try:
        hub.start()
    except OSError as exc:  # the port is taken, most likely
        print(f"{PROG}: cannot listen on {args.host} (API port {args.api_port}, WebSocket port {args.ws_port}): "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        _print_hint(hub, args, key, source)
        for task_type, data in tasks:  # pending until a node is ready: then it gets them, in this order
            hub.send_task(task_type, data)
        if tasks:
            print(f"{len(tasks)} task(s) waiting for the first node that is ready", flush=True)
        _serve(hub, stops.requested, args.echo_every)
    finally:
        hub.stop()
        stops.stopped.set()
    print(f"local hub stopped{' on ' + stops.reason if stops.reason else ''}", flush=True)
    return 0


def _choose_key(given: Optional[str]) -> tuple[Optional[str], str]:
    """The key and where it came from: ``--key``, else what a node here would read, else a new one."""
    if given:
        return given, "--key"
    from octohub_sync._config.settings import load_settings
    from octohub_sync.exceptions import ConfigError
    try:
        settings = load_settings({})  # ./.env beats the environment, exactly as for the node
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc} (a node started here would refuse it too; "
              "or pass --key)", file=sys.stderr)
        return None, ""
    if settings.signature_key:
        return settings.signature_key, KEY_SOURCES.get(settings.sources["signature_key"], "the settings")
    return secrets.token_urlsafe(24), ""


def _print_hint(hub: Any, args: argparse.Namespace, key: str, source: str) -> None:
    print(f"local hub: API {hub.api_url}, WebSocket port {hub.ws_port}, {args.dialect} dialect. Point a node at it:")
    # In a clone, the README's run_node.py; elsewhere (a pip install) the console script.
    program = "python run_node.py" if os.path.isfile("run_node.py") else "octohub-node"
    flags = f"{program} --server-host {args.host} --server-port {hub.api_port} --ws-port {hub.ws_port}"
    if source == "--key":  # a given key is not echoed
        print(f"  OCTOHUB_SIGNATURE_KEY=<your key> {flags}")
        print("  (a .env where the node runs beats the environment: if it has an OCTOHUB_SIGNATURE_KEY line, "
              "put the key there)")
    elif source:  # the key is not printed: it may be a real one
        print(f"  {flags}")
        print(f"  (the key: OCTOHUB_SIGNATURE_KEY from {source}, which a node started here reads too)")
    else:
        # A generated key is a throw-away of this run and must be shown to be usable. It goes in the
        # environment: on the command line every user of the machine could read it.
        print(f"  OCTOHUB_SIGNATURE_KEY={key} {flags}")
        print("  (a new key on every start: pass --key, or set OCTOHUB_SIGNATURE_KEY, to keep one; a .env where "
              "the node runs beats the environment, so put the key there if it has an OCTOHUB_SIGNATURE_KEY line)")
    sys.stdout.flush()


def _serve(hub: Any, stop: threading.Event, echo_every: float) -> None:
    """Send the echo tasks and print every result until ``stop`` is set."""
    seen = 0
    while not stop.wait(echo_every or 1.0):
        if echo_every:
            for pc_id in {c["pc_id"] for c in hub.connections if c["closed"] is None}:
                hub.send_task("echo", {"from": "local hub"}, pc_id=pc_id)
        results = [r for rs in list(hub.results.values()) for r in rs]
        for result in results[seen:]:
            # Verbatim where the console can show it; escaped (\u4efb) where not: never an error.
            print("result:", json.dumps(result, ensure_ascii=False), flush=True)
        seen = len(results)


if __name__ == "__main__":
    sys.exit(main())
