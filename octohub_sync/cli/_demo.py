"""``run_node.py --demo``: a local hub and a node in one process, a few sample tasks, results printed."""
from __future__ import annotations

import json
import secrets
import sys
from typing import Any, Mapping

from .._config.settings import load_settings
from ..client import NodeWebSocketClient
from ._exit_codes import ExitCode

__all__ = ["run_demo"]

#: (task_type, data, expected status): the built-ins, a custom handler, and two failures.
SAMPLES: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("echo", {"hello": "octohub"}, "completed"),
    ("sleep", {"sleep_time": 0.5}, "completed"),
    ("default", {}, "completed"),
    ("word_count", {"text": "the quick brown fox"}, "completed"),
    ("word_count", {"text": 42}, "failed"),
    ("no_such_type", {}, "failed"),
)


def word_count(task: Mapping[str, Any]) -> dict:
    """The demo's custom handler: counts the words of ``data.text``."""
    return {"words": len(task["data"]["text"].split())}


def run_demo(overrides: Mapping[str, Any]) -> int:
    """Run the demo; returns the exit code (0 when every sample gave the expected status)."""
    try:
        from ..hub import LocalHub
    except ImportError as exc:
        from ..hub import install_hint, lacks_websockets
        if not lacks_websockets(exc):
            raise
        print(f"octohub-node: the demo needs the local hub's WebSocket server, the websockets package: "
              f"{install_hint()}", file=sys.stderr)
        return ExitCode.FAILED
    key = secrets.token_urlsafe(24)  # a throw-away key: the hub and the node are both ours
    with LocalHub(key) as hub:
        settings = load_settings(
            {**overrides, "server_host": "127.0.0.1", "server_port": hub.api_port, "signature_key": key,
             "connect_mode": "api", "tls": False},
            env_file=False, environ={})
        client = NodeWebSocketClient(settings=settings)
        client.register_task_handler("word_count", word_count)
        with client:
            if not client.wait_connected(15):
                print(f"the node did not connect to the local hub: {client.stats()['last_error']}")
                return ExitCode.FAILED
            print(f"node {client.get_pc_id()} connected to the local hub at {hub.api_url}")
            ids = [hub.send_task(task_type, data) for task_type, data, _ in SAMPLES]
            ok = True
            for task_id, (task_type, _, expected) in zip(ids, SAMPLES):
                result = hub.wait_result(task_id, timeout=15)
                shown = result.get("result") if result["status"] == "completed" else result.get("error")
                print(f"  {task_id:<8} {task_type:<13} {result['status']:<10} {json.dumps(shown, ensure_ascii=False)}")
                ok = ok and result["status"] == expected
    print("demo finished: every task answered as expected" if ok else "demo finished: some answers were unexpected")
    return ExitCode.OK if ok else ExitCode.FAILED
