"""Handlers bench.py loads into a node for the deep-queue measurement (``OCTOHUB_APP=bench_app``).

``hold`` sleeps until the hub sends a ``release`` message (at most two minutes), so that
every worker is busy and the tasks behind them wait in the node's queue.
"""
from __future__ import annotations

import threading
from typing import Any, Mapping

_released = threading.Event()


def setup(client: Any) -> None:
    def hold(task: Mapping[str, Any]) -> str:
        _released.wait(120)
        return "released"

    client.register_task_handler("hold", hold)
    client.register_message_handler("release", lambda message: _released.set())
