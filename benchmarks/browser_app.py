"""Handlers benchmarks/browser.py loads into a node (``OCTOHUB_APP=browser_app``).

The browser example's types (``visit`` on threads with a browser per worker, ``screenshot``
isolated), and for the comparison and the endings: ``visit_cold`` starts and quits a browser per
task; ``hold`` (isolated) loads the page in the child's browser, says so, then blocks in C;
``visit_once`` is ``visit`` isolated with ``max_tasks_per_child=1`` (a recycle after every task).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any, Mapping

from examples.browser.tasks import browser, handlers, load, start_browser, visit
from octohub_sync import current_task


def visit_cold(task: Mapping[str, Any]) -> dict:
    profile = tempfile.mkdtemp(prefix="octohub-cold-")
    driver = start_browser(profile)
    try:
        load(driver, task["data"]["url"])
        return {"title": driver.title}
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def hold(task: Mapping[str, Any], browser: Any) -> None:
    load(browser, task["data"]["url"])
    current_task().progress(0.5, f"loaded in {os.getpid()}")
    time.sleep(3600)


def setup(client: Any) -> None:
    handlers(client)
    client.register_task_handler("visit_cold", visit_cold)
    client.register_task_handler("hold", hold, isolation="process", uses=["browser"])
    client.register_task_handler("visit_once", visit, isolation="process", uses=["browser"], max_tasks_per_child=1)


__all__ = ["browser", "setup"]
