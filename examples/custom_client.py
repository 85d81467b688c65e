"""A complete custom node: your handlers, with the program's flags, .env, logging and signals.

``octohub_sync.cli.main(setup=...)`` is ``run_node.py`` plus your registrations, so this
file accepts every flag of ``python run_node.py --help`` (``--demo`` aside) and stops
gracefully on SIGTERM/SIGINT. Try it against the local hub: ``python examples/custom_client.py --local``.
"""
from __future__ import annotations

import hashlib
import secrets
import sys
from pathlib import Path
from typing import Any

from octohub_sync import NodeWebSocketClient
from octohub_sync.cli import main


def file_operation(task: dict) -> dict:
    """Hash a file named by the task; a missing file raises, and the hub gets ``failed``."""
    path = Path(task["data"]["file_path"])
    return {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def on_notification(message: dict) -> None:
    """A message handler: hub messages of a kind the node does not know itself."""
    print("notification from the hub:", message.get("notification"))


def setup(client: NodeWebSocketClient) -> None:
    client.register_task_handler("file_operation", file_operation)
    client.register_message_handler("notification", on_notification)

    @client.register_task_handler("add")  # the decorator form returns the function unchanged
    def add(task: dict) -> Any:
        return sum(task["data"]["numbers"])


def run_locally() -> int:
    """Start the local hub, run this node against it in-process, send a few tasks."""
    from octohub_sync.hub import LocalHub

    key = secrets.token_hex(16)
    with LocalHub(key) as hub:
        client = NodeWebSocketClient("127.0.0.1", hub.api_port, key, env_file=False)
        setup(client)
        with client:
            client.wait_connected(10)
            hub.send_message({"type": "notification", "notification": "hello from the hub"})
            for task_type, data in [("add", {"numbers": [1, 2, 3]}), ("file_operation", {"file_path": __file__}),
                                    ("file_operation", {"file_path": "/no/such/file"})]:
                result = hub.wait_result(hub.send_task(task_type, data))
                print(f"{task_type:<15} {result['status']:<10} {result.get('result', result.get('error'))}")
    return 0


if __name__ == "__main__":
    sys.exit(run_locally() if "--local" in sys.argv else main(setup=setup))
