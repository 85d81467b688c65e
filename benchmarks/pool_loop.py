"""The obvious threaded node, the baseline a threaded node client is judged against.

About forty lines with no features: a ``websocket.WebSocketApp`` on its thread; ``on_message``
parses each frame and submits tasks to a ``ThreadPoolExecutor(MAX_WORKERS)``; the worker builds
the same ``task_result`` the node's echo handler builds and calls ``send``. It has the node's
hand-off (connection thread -> pool -> worker sends) and none of its bookkeeping: no dedupe, no
backpressure, no time limits, no outbox, no delivery confirmation, no stats. Run as its own
process (``bench.py --pool-loop``), like the node.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import websocket

from minimal_loop import _answer, _dumps, _ws_url

__all__ = ["run"]


def run(api: str, pc_id: str, workers: int) -> int:
    """Serve tasks until the hub closes the connection; the key comes from OCTOHUB_SIGNATURE_KEY."""
    import json
    import time

    key = os.environ["OCTOHUB_SIGNATURE_KEY"]
    pool = ThreadPoolExecutor(workers)

    def work(app: websocket.WebSocketApp, message: dict) -> None:
        app.send(_answer(message))

    def on_message(app: websocket.WebSocketApp, frame: str) -> None:
        message = json.loads(frame)
        kind = message.get("type")
        if kind == "task":
            pool.submit(work, app, message)
        elif kind == "connected":
            app.send(_dumps({"type": "node_ready", "pc_id": pc_id, "timestamp": int(time.time())}))

    app = websocket.WebSocketApp(_ws_url(api, key, pc_id), on_message=on_message)
    try:
        app.run_forever(skip_utf8_validation=True)  # as the node does
    except KeyboardInterrupt:
        pass
    pool.shutdown(wait=False, cancel_futures=True)
    return 0
