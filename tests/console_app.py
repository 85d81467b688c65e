"""Handlers that speak Chinese, for the console tests (``--app tests.console_app``).

``汉字任务`` logs its input, prints it to stdout (as a handler's own debugging might) and
returns a Chinese result; ``失败任务`` raises with a Chinese message.
"""
from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("console_app")


def chinese(task: dict) -> dict:
    text = task["data"]["text"]
    logger.warning("处理任务 %s", text)
    print(f"打印 {text}", flush=True)
    return {"结果": f"{text}完成"}


def failing(task: dict) -> Any:
    raise ValueError(f"出错了 {task['data']['text']}")


def setup(client: Any) -> None:
    client.register_task_handler("汉字任务", chinese)
    client.register_task_handler("失败任务", failing)
