"""A node whose ``visit`` and ``screenshot`` task types drive one headless Chromium per worker.

    apt-get install -y --no-install-recommends chromium chromium-driver   # Debian's browser and driver
    pip install "octohub_sync[browser]"                                     # Selenium
    octohub-node --app examples.browser.tasks --env-file .env

``visit`` runs on the node's worker threads: each thread gets its own browser, made by the first
task it runs and reused by the next ones (WebDriver is not thread-safe, so a browser is never
shared). ``screenshot`` runs with ``isolation="process"``: its browser lives in the child, and
ends with the child's process tree however the child ends. The driver is the system's
(``Service(executable_path=...)``): Selenium never downloads one. docs/resources.md explains it.

``screenshot_on_failure`` is middleware (docs/middleware.md): when a task that uses the browser
fails, it saves what that browser shows to ``$SCREENSHOT_DIR`` (default: the temporary directory)
as ``<task id>.png`` and logs the path, then lets the error reach the hub as it was.
"""
from __future__ import annotations

import base64
import logging
import os
import shutil
import tempfile
import threading
from typing import Any, Callable, Iterator, Mapping

from octohub_sync import Handlers, ResourceBroken

log = logging.getLogger(__name__)
handlers = Handlers()

#: This thread's browser (a worker thread, or an isolated child's main thread): what the middleware shoots.
_this_thread = threading.local()

#: Where the driver is: $CHROMEDRIVER, else chromedriver on PATH (Debian's chromium-driver puts it in /usr/bin).
DRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"


def start_browser(profile: str) -> Any:
    """A headless Chromium driven through the system's chromedriver, with its own profile directory."""
    from selenium import webdriver  # imported here: a node that never runs a browser task never loads Selenium
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--no-first-run", "--disable-extensions", "--window-size=1280,800"):
        options.add_argument(flag)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        options.binary_location = chromium
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


@handlers.resource("browser", max_uses=200)
def browser() -> Iterator[Any]:
    """One browser per worker thread (or child): a fresh profile, removed with it."""
    profile = tempfile.mkdtemp(prefix="octohub-browser-")  # one live browser per profile directory
    driver = start_browser(profile)
    _this_thread.driver = driver  # made on the thread that runs the tasks using it, as resources are
    try:
        yield driver
    finally:
        _this_thread.driver = None
        driver.quit()  # ends chromedriver and the browser's processes
        shutil.rmtree(profile, ignore_errors=True)


@handlers.middleware
def screenshot_on_failure(task: Mapping[str, Any], call_next: Callable[[], Any]) -> Any:
    """A failed task's last page, saved as ``<task id>.png``; the error itself goes on unchanged."""
    try:
        return call_next()
    except Exception:
        driver = getattr(_this_thread, "driver", None)
        if driver is not None:  # a task type that uses the browser, on a thread that has one
            path = os.path.join(os.environ.get("SCREENSHOT_DIR") or tempfile.gettempdir(), f"{task['task_id']}.png")
            try:
                driver.save_screenshot(path)
                log.warning("task failed; its page is in %s", path)
            except Exception as exc:  # a browser too broken to shoot: the task's own error matters more
                log.warning("task failed; no screenshot (%s)", type(exc).__name__)
        raise


def load(driver: Any, url: str) -> None:
    from selenium.common.exceptions import InvalidSessionIdException, WebDriverException

    try:
        driver.get(url)
    except InvalidSessionIdException as exc:  # the browser died under us: make a new one for the next task
        raise ResourceBroken(f"browser session lost: {exc.msg}") from None
    except WebDriverException as exc:
        if "disconnected" in str(exc) or "crashed" in str(exc):
            raise ResourceBroken(f"browser gone: {exc.msg}") from None
        raise


@handlers.task("visit", uses=["browser"])
def visit(task: Mapping[str, Any], browser: Any) -> dict:
    """Load ``data.url`` and return its title and final address."""
    load(browser, task["data"]["url"])
    return {"title": browser.title, "url": browser.current_url}


@handlers.task("screenshot", uses=["browser"], isolation="process", max_tasks_per_child=100)
def screenshot(task: Mapping[str, Any], browser: Any) -> dict:
    """Load ``data.url`` in the child's browser and return a PNG screenshot, base64-encoded."""
    load(browser, task["data"]["url"])
    png = browser.get_screenshot_as_png()
    return {"title": browser.title, "png_base64": base64.b64encode(png).decode("ascii")}
