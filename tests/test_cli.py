"""The program's own logging, in process (test_process.py runs the program itself)."""
from __future__ import annotations

import logging

from octohub_sync.cli import RedactingFilter


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("websocket", logging.ERROR, __file__, 1, msg, args, None)


def test_redacting_filter_masks_signatures_in_any_record() -> None:
    leaky = record("handshake to %s failed", "ws://h:8000/ws/node?pc_id=a&timestamp=1&signature=abc123def")
    assert RedactingFilter().filter(leaky) is True  # masked, never dropped
    assert "abc123def" not in leaky.getMessage() and "signature=***" in leaky.getMessage()
    assert leaky.args is None
    clean = record("node %s connected", "node_a")
    assert RedactingFilter().filter(clean) is True
    assert (clean.msg, clean.args) == ("node %s connected", ("node_a",))  # untouched, still lazy
