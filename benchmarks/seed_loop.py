"""A stand-in for the seed's asyncio node: what ``octohub-node-client`` was, on websockets' asyncio client.

The seed (shared/seed, its README) is an asyncio client: one event loop, ``websockets``, and
``async def`` task handlers, each task run as its own asyncio task that sends its own result.
Its code is not in this repository, so this is that design in about thirty lines with none of
its features (no reconnect, no dedupe, no backpressure, no time limits): the same handshake,
the same echo answer as the node's and the other baselines', the same JSON options. Run as its
own process (``bench.py --seed-loop``), like the node.
"""
from __future__ import annotations

import asyncio
import json
import os
import time

from minimal_loop import _dumps, _ws_url

__all__ = ["run"]


async def _echo(message: dict) -> object:
    return {"echo": message.get("data", {}), "processed_at": int(time.time())}


async def _serve(url: str, pc_id: str) -> None:
    from websockets.asyncio.client import connect  # websockets >= 13, the hub extra's

    async with connect(url, compression=None, max_size=None, ping_interval=None) as ws:
        running: set[asyncio.Task] = set()

        async def work(message: dict) -> None:
            result = await _echo(message)
            await ws.send(_dumps({"type": "task_result", "task_id": message["task_id"], "status": "completed",
                                  "result": result, "timestamp": int(time.time())}))

        async for frame in ws:
            message = json.loads(frame)
            kind = message.get("type")
            if kind == "task":
                task = asyncio.create_task(work(message))
                running.add(task)
                task.add_done_callback(running.discard)
            elif kind == "connected":
                await ws.send(_dumps({"type": "node_ready", "pc_id": pc_id, "timestamp": int(time.time())}))


def run(api: str, pc_id: str) -> int:
    """Serve tasks until the hub closes the connection; the key comes from OCTOHUB_SIGNATURE_KEY."""
    from websockets.exceptions import ConnectionClosed

    url = _ws_url(api, os.environ["OCTOHUB_SIGNATURE_KEY"], pc_id)
    try:
        asyncio.run(_serve(url, pc_id))
    except KeyboardInterrupt:
        pass
    except ConnectionClosed:  # the hub closing the connection at the end of the run
        pass
    return 0
