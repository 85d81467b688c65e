"""The wire limit: the least a Python node can do per task, on websocket-client directly.

One thread, no pool, no dispatcher, no framework: get the signed URL from the hub's
API exactly as the node does, open the WebSocket, send ``node_ready``, then
recv -> ``json.loads`` -> build the same ``task_result`` the node's echo handler
builds -> ``json.dumps`` -> send. Run as its own process (``bench.py --minimal-loop``)
so that it has its own GIL, just like the node.
"""
from __future__ import annotations

import json
import os
import time

import requests
import websocket

from octohub_sync._wire.signing import api_headers

__all__ = ["run"]


def _ws_url(api: str, key: str, pc_id: str) -> str:
    params = {"pc_id": pc_id}
    headers = api_headers(key, "GET", "/node/ws", params)
    reply = requests.get(f"{api}/node/ws", params=params, headers=headers, timeout=10)
    reply.raise_for_status()
    return reply.json()["data"]["wsUrl"]


def _dumps(obj: object) -> str:
    # Same options as octohub_sync._wire.protocol._dumps, so both sides pay for the same JSON.
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _answer(message: dict) -> str:
    now = int(time.time())
    if message.get("task_type") == "sleep":
        seconds = min(10.0, max(0.1, float((message.get("data") or {}).get("sleep_time", 1))))
        time.sleep(seconds)
        result: object = f"slept {seconds:g} seconds"
    else:
        result = {"echo": message.get("data", {}), "processed_at": now}
    return _dumps({"type": "task_result", "task_id": message["task_id"], "status": "completed",
                   "result": result, "timestamp": now})


def run(api: str, pc_id: str) -> int:
    """Serve tasks until the hub closes the connection; the key comes from OCTOHUB_SIGNATURE_KEY."""
    key = os.environ["OCTOHUB_SIGNATURE_KEY"]
    # skip_utf8_validation as the node does; create_connection sets TCP_NODELAY by default.
    ws = websocket.create_connection(_ws_url(api, key, pc_id), timeout=None, skip_utf8_validation=True)
    try:
        while True:
            message = json.loads(ws.recv())
            kind = message.get("type")
            if kind == "task":
                ws.send(_answer(message))
            elif kind == "connected":
                ws.send(_dumps({"type": "node_ready", "pc_id": pc_id, "timestamp": int(time.time())}))
    except (websocket.WebSocketConnectionClosedException, ConnectionError, KeyboardInterrupt):
        return 0
    finally:
        ws.close(timeout=0.5)
