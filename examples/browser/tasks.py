"""A node whose ``visit`` and ``screenshot`` task types drive one headless Chromium per worker.

    apt-get install -y --no-install-recommends chromium chromium-driver   # Debian's browser and driver
    pip install "octohub_sync[browser]"                                     # Selenium
    octohub-node --app examples.browser.tasks --env-file .env

``visit`` runs on the node's worker threads: each thread gets its own browser, made by the first
task it runs and reused by the next ones (WebDriver is not thread-safe, so a browser is never
shared). ``screenshot`` runs with ``isolation="process"``: its browser lives in the child, and
ends with the child's process tree however the child ends. The driver is the system's
(``Service(executable_path=...)``): Selenium never downloads one. docs/resources.md explains it.
"""
from __future__ import annotations

import base64
import os
import shutil
import tempfile
from typing import Any, Iterator, Mapping

from octohub_sync import Handlers, ResourceBroken

handlers = Handlers()

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
    try:
        yield driver
    finally:
        driver.quit()  # ends chromedriver and the browser's processes
        shutil.rmtree(profile, ignore_errors=True)


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
