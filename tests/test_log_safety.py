"""Log records of a node embedded in a script (no CLI, no filter of the program's own): signatures
masked and the hub's control characters escaped by the library itself (_ops/log_safety.py), and the
program's log lines never split by what the hub sent."""
from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from octohub_sync import NodeWebSocketClient, load_settings
from octohub_sync.hub import LocalHub
from octohub_sync._ops.log_safety import escape_controls, library_loggers

from .conftest import FAST, wait_until
from .test_process import finish, log_text, spawn
from .test_secrets import Capture, capture  # noqa: F401 - the fixture: every record of every logger at DEBUG

pytestmark = pytest.mark.timeout(40)

SECRET = "Zq9-embedded-SECRET-k3y-7f3a9c1e5b2d4f6"

#: Any character a log line must not carry raw: C0, DEL, C1, U+2028/9.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class EchoingHub:
    """An API and a WebSocket server that fail while quoting what the node sent them.

    The API answers its first request HTTP 500 with an ``errmsg`` quoting the request's X-Signature,
    then hands out a WebSocket address carrying a signature of its own. The WebSocket server never
    completes a handshake: it answers 401 with a header quoting the request line, then 500 with a
    body quoting it, in turn (as an error page that shows the URL does).
    """

    def __init__(self) -> None:
        self.signatures: set[str] = set()
        self.api_errors = 0
        self.handshakes = {401: 0, 500: 0}
        self._lock = threading.Lock()
        hub = self

        class Api(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                signature = self.headers.get("X-Signature", "")
                with hub._lock:
                    hub.signatures.add(signature)
                    first, hub.api_errors = hub.api_errors == 0, hub.api_errors + 1
                if first:
                    body = {"errcode": 500, "errmsg": f"bad request {self.path} with X-Signature: {signature}"}
                    status = 500
                else:
                    hub.api_errors -= 1
                    url = f"ws://127.0.0.1:{hub.ws_port}/ws/node?pc_id=node_echo&timestamp=1&signature=deadbeef0ff1ce"
                    body, status = {"errcode": 0, "data": {"wsUrl": url}}, 200
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.signatures.add("deadbeef0ff1ce")
        self._api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
        self.api_port = self._api.server_address[1]
        self._ws = socket.create_server(("127.0.0.1", 0))
        self.ws_port = self._ws.getsockname()[1]
        self._threads = [threading.Thread(target=self._api.serve_forever, name="hub-echo-api", daemon=True),
                         threading.Thread(target=self._serve_ws, name="hub-echo-ws", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _serve_ws(self) -> None:
        while True:
            try:
                conn, _ = self._ws.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                head = read_until(conn, b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                query = parse_qs(urlsplit(line.split(" ")[1] if " " in line else "").query)
                with self._lock:
                    self.signatures.update(query.get("signature", []))
                    status = 401 if self.handshakes[401] <= self.handshakes[500] else 500
                    self.handshakes[status] += 1
                if status == 401:
                    answer = f"HTTP/1.1 401 Unauthorized\r\nX-Rejected: {line}\r\nContent-Length: 0\r\n\r\n"
                else:
                    body = f"<html><p>internal error serving {line}</p></html>"
                    answer = f"HTTP/1.1 500 Internal Server Error\r\nContent-Length: {len(body)}\r\n\r\n{body}"
                conn.sendall(answer.encode())

    def close(self) -> None:
        self._api.shutdown()
        self._api.server_close()
        self._ws.close()


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    """What ``sock`` sends until ``marker`` has come, or until it ends."""
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def embedded_node(**values: Any) -> NodeWebSocketClient:
    settings = {**FAST, "server_host": "127.0.0.1", "signature_key": SECRET, "pc_id": "node_embedded", **values}
    return NodeWebSocketClient(settings=load_settings(settings, env_file=False, environ={}))


def assert_no_secret(messages: list[str], signatures: set[str]) -> None:
    needles = {SECRET[i:i + 12] for i in range(len(SECRET) - 11)} | {s for s in signatures if s}
    leaks = [m for m in messages if re.search(r"signature=(?!\*\*\*)", m, re.IGNORECASE) or any(n in m for n in needles)]
    assert not leaks, f"{len(leaks)} record(s) carry a secret, e.g.:\n" + "\n".join(m[:400] for m in leaks[:5])


def test_embedded_node_logs_no_signature_when_the_hub_quotes_it(capture: Capture) -> None:
    hub = EchoingHub()
    nodes = [embedded_node(server_port=hub.api_port),  # API mode: the API's error, then the handshake's
             embedded_node(connect_mode="direct", ws_host="127.0.0.1", ws_port=hub.ws_port, pc_id="node_direct")]
    try:
        for node in nodes:
            node.start()
        assert wait_until(lambda: hub.api_errors >= 1 and min(hub.handshakes.values()) >= 3, 15), \
            (hub.api_errors, hub.handshakes)
    finally:
        for node in nodes:
            node.stop(timeout=5)
        hub.close()
    # The records did quote the hub's answers: websocket-client's among them.
    assert any(m.startswith("websocket ") and "internal error serving GET /ws/node?" in m for m in capture.texts)
    assert any("X-Signature" in m for m in capture.texts if m.startswith("octohub_sync"))
    assert_no_secret(capture.texts, hub.signatures)


def test_every_logger_of_the_package_has_the_filter() -> None:
    import importlib
    names = list(library_loggers())
    assert "octohub_sync._transport.connection" in names and "octohub_sync.hub.ws_server" in names and "websocket" in names
    for name in names:
        if name.startswith("octohub_sync.") and not name.endswith("__main__"):
            importlib.import_module(name)  # a module imported late keeps the logger made at package import
    for name in names:
        assert logging.getLogger(name).filters, name


def test_escape_controls() -> None:
    assert escape_controls("plain text, 中文, é") == "plain text, 中文, é"
    assert escape_controls("a\r\nb\tc\x1b[31md\x00\x7f\x85\u2028") == r"a\r\nb\tc\x1b[31md\x00\x7f\x85\u2028"


FORGED = "2026-01-01 00:00:00,000 - octohub_sync - ERROR - FORGED"


def hostile_session(hub: LocalHub, pc_id: str) -> list[str]:
    """Hub text with line breaks and an ANSI escape in each place the node logs it; the task ids sent."""
    ids = [hub.send_task("echo", {}, pc_id=pc_id, task_id=f"t-1\n{FORGED} task id"),
           hub.send_task("no\x1b[2Jsuch\ntype", {}, pc_id=pc_id, task_id=f"t-2\r\n{FORGED} type")]
    for task_id in ids:
        hub.wait_result(task_id, 10)
    hub.send_message({"type": "error", "code": 7, "message": f"oops\n{FORGED} error \x1b[31mred"}, pc_id=pc_id)
    hub.send_message({"type": f"kind\n{FORGED} kind"}, pc_id=pc_id)
    hub.send_message({"type": "disconnect_notification", "reason": f"bye\r\n{FORGED} reason\u2028"}, pc_id=pc_id)
    return ids


def test_hub_text_with_control_characters_is_escaped_in_every_record(capture: Capture, hub: LocalHub,
                                                                     make_node: Any) -> None:
    node = make_node(log_level="DEBUG")
    assert node.wait_connected(10) and hub.wait_connected(node.pc_id, 10)
    hostile_session(hub, node.pc_id)
    assert wait_until(lambda: any("hub is closing" in m for m in capture.texts), 10)
    node.stop(timeout=5)
    seen = [m for m in capture.texts if "FORGED" in m]
    assert len(seen) >= 4, capture.texts[-40:]  # the reason, the error, the task id, the task type
    raw = [m for m in capture.texts if CONTROL.search(m)]
    assert not raw, raw[:5]
    assert any(r"bye\r\n2026" in m for m in seen) and any(r"\x1b[31m" in m for m in seen)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM ends the node process on POSIX only")
def test_the_programs_log_lines_are_never_split_by_hub_text(hub: LocalHub, tmp_path: Path) -> None:
    proc = spawn(hub, tmp_path, "node_lines", "--log-level", "DEBUG")
    try:
        assert hub.wait_connected("node_lines", 15), log_text(proc)
        hostile_session(hub, "node_lines")
        assert wait_until(lambda: "hub is closing" in log_text(proc), 10), log_text(proc)
    finally:
        proc.terminate()
        code, text = finish(proc)
    assert code == 0, text[-3000:]
    assert text.count("FORGED") >= 4, text[-3000:]
    line_start = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - ")
    forged = [line for line in text.splitlines() if "FORGED" in line and not line_start.match(line)]
    forged += [line for line in text.splitlines() if line.startswith(FORGED)]
    assert not forged, forged[:5]
    assert "\x1b" not in text and "\r" not in text and "\u2028" not in text


def test_a_clean_stop_logs_no_error_from_websocket_client(make_node, caplog: pytest.LogCaptureFixture) -> None:
    """websocket-client's "... - goodbye" after every session is DEBUG, shown only where that is enabled."""
    caplog.set_level(logging.INFO)
    client = make_node()
    assert client.wait_connected(10)
    client.stop(timeout=5)
    loud = [r for r in caplog.records if r.name == "websocket" and r.levelno >= logging.WARNING]
    assert loud == [], [r.getMessage() for r in loud]
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="websocket")
    client = make_node()
    assert client.wait_connected(10)
    client.stop(timeout=5)
    assert any(r.name == "websocket" and r.levelno == logging.DEBUG and r.getMessage().endswith(" - goodbye")
               for r in caplog.records)
