"""Simple use: a node with the built-in handlers plus one of yours, in a plain script.

Against a real hub, set OCTOHUB_SERVER_HOST / OCTOHUB_SERVER_PORT / OCTOHUB_SIGNATURE_KEY
(or a .env file) and run ``python examples/simple_client.py``.
With ``--local`` it starts the bundled local hub first and sends itself a few tasks.
"""
from __future__ import annotations

import logging
import secrets
import sys

from octohub_sync import ConfigError, NodeWebSocketClient


def reverse(task: dict) -> str:
    """A task handler: a plain function of the whole task message."""
    return task["data"]["text"][::-1]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    # websocket-client logs every disconnect at ERROR ("... - goodbye"); the node reports each one itself.
    logging.getLogger("websocket").setLevel(logging.CRITICAL)
    if "--local" not in sys.argv:
        try:
            client = NodeWebSocketClient()  # everything from the environment / .env
        except ConfigError as exc:
            print(f"configuration error: {exc} (or run with --local)", file=sys.stderr)
            return 2
        client.register_task_handler("reverse", reverse)
        try:
            client.run_forever()  # until Ctrl+C, which stops the node gracefully, then raises KeyboardInterrupt
        except KeyboardInterrupt:
            return 130  # the shell's code for "ended by Ctrl+C"; the log already says "node stopped"
        return 0

    from octohub_sync.hub import LocalHub

    key = secrets.token_hex(16)
    with LocalHub(key) as hub:
        with NodeWebSocketClient("127.0.0.1", hub.api_port, key, env_file=False) as client:
            client.register_task_handler("reverse", reverse)
            client.wait_connected(10)
            for task_type, data in [("reverse", {"text": "octohub"}), ("echo", {"n": 1})]:
                result = hub.wait_result(hub.send_task(task_type, data))
                print(task_type, "->", result["status"], result.get("result"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
