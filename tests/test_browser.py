"""A real headless Chromium through Selenium, one per worker (examples/browser/tasks.py; issue 31).

Skipped only where Debian's ``chromium`` and ``chromium-driver`` or Selenium are not installed
(.ci/run installs them, so CI runs it). The page is served on 127.0.0.1 by this test.
"""
from __future__ import annotations

import base64
import http.server
import shutil
import threading
from typing import Any, Iterator

import psutil
import pytest

from octohub_sync.hub import LocalHub

from .conftest import wait_until

pytestmark = pytest.mark.timeout(120)

if not (shutil.which("chromedriver") and (shutil.which("chromium") or shutil.which("chromium-browser"))):
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
                allow_module_level=True)
pytest.importorskip("selenium", reason="needs Selenium (pip install 'octohub_sync[browser]')")

from examples.browser import tasks  # noqa: E402  (after the skips: it is only useful with a browser)

PAGE = b"<html><head><title>octohub test page</title></head><body><h1>hello</h1></body></html>"


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def page() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, name="test-page", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def browsers_left() -> list[psutil.Process]:
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and child.name().startswith(("chrom", "chromedriver")):
                left.append(child)
        except psutil.NoSuchProcess:
            pass
    return left


def test_a_browser_per_worker_is_reused_and_ends_with_the_node(make_node, hub: LocalHub, page: str) -> None:
    client = make_node(_start=False, max_workers=1)
    tasks.handlers(client)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    for _ in range(3):
        result = hub.wait_result(hub.send_task("visit", {"url": page}), timeout=60)
        assert result["status"] == "completed", result
        assert result["result"]["title"] == "octohub test page"
    shot = hub.wait_result(hub.send_task("screenshot", {"url": page}), timeout=60)
    assert shot["status"] == "completed", shot
    assert base64.b64decode(shot["result"]["png_base64"]).startswith(b"\x89PNG")
    assert client.stats()["resources"]["browser"] == {"live": 2, "made": 2, "torn_down": 0}  # a thread's, a child's
    assert browsers_left()
    client.stop(timeout=10)
    assert client.stats()["resources"]["browser"]["live"] == 0
    assert wait_until(lambda: not browsers_left(), 10), browsers_left()


def test_a_failed_browser_task_leaves_a_screenshot(make_node, hub: LocalHub, tmp_path, monkeypatch) -> None:
    """examples/browser/tasks.py's middleware (issue 32): on a worker thread and in an isolated child."""
    from .conftest import free_port

    monkeypatch.setenv("SCREENSHOT_DIR", str(tmp_path))  # before the child is spawned: it inherits it
    client = make_node(_start=False, max_workers=1)
    tasks.handlers(client)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    nowhere = f"http://127.0.0.1:{free_port()}/"  # nothing listens there: the page load fails
    for task_type in ("visit", "screenshot"):
        tid = hub.send_task(task_type, {"url": nowhere})
        result = hub.wait_result(tid, timeout=60)
        assert result["status"] == "failed" and "ERR_CONNECTION_REFUSED" in result["error"], result
        shot = tmp_path / f"{tid}.png"
        assert shot.read_bytes().startswith(b"\x89PNG"), task_type
