"""The pytest plugin: as the project's own tests use it, as a user's test file uses it, and what it imports."""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from octohub_sync.exceptions import TaskFailed
from octohub_sync.testing import LocalNode

from .conftest import node_threads, wait_until

ROOT = Path(__file__).resolve().parent.parent


def run_pytest(directory: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """pytest in its own process on a user's directory (its own rootdir and configuration)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OCTOHUB_", "PYTEST_"))}
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=directory,
                          env=environ, capture_output=True, text=True, timeout=120)


def test_the_entry_point_is_registered() -> None:
    points = [p for p in importlib.metadata.entry_points().get("pytest11", [])] if sys.version_info < (3, 10) \
        else list(importlib.metadata.entry_points(group="pytest11"))
    # A set: from a checkout, Python 3.9 also sees the build's octohub_sync.egg-info in the working directory.
    assert {p.value for p in points if p.name == "octohub"} == {"octohub_sync.pytest_plugin"}, \
        "reinstall the package (pip install -e .) to register the pytest11 entry point"


# -- the fixtures, in this process ------------------------------------------------------------------

def test_octohub_node_runs_tasks(octohub_node: LocalNode) -> None:
    assert octohub_node.run("echo", {"x": 1})["echo"] == {"x": 1}
    assert octohub_node.result("nope")["error"] == "UnknownTaskType: no handler for task_type 'nope'"
    with pytest.raises(TaskFailed, match="failed: UnknownTaskType") as failed:
        octohub_node.run("nope")
    assert "octohub_app = mypackage.tasks" in str(failed.value)  # what such a test most likely lacks
    octohub_node.register("twice", lambda task: task["data"]["n"] * 2)
    assert octohub_node.run("twice", {"n": 21}) == 42


def test_drop_and_raw_frames(octohub_node: LocalNode) -> None:
    connections = len(octohub_node.hub.connections)
    octohub_node.drop()
    assert len(octohub_node.hub.connections) == connections + 1 and octohub_node.client.is_connected()
    octohub_node.send_raw("{not json")
    octohub_node.send_raw(b"\x00binary")
    assert wait_until(lambda: octohub_node.client.stats()["bad_frames"] == 2, 5)
    assert octohub_node.run("echo", {"after": "drop"})["echo"] == {"after": "drop"}


def test_make_node_serves_an_app_with_settings(octohub_make_node) -> None:
    node = octohub_make_node(app="examples.tasks", max_workers=2)
    assert node.run("reverse", {"text": "abc"}) == "cba"
    assert node.client.settings.max_workers == 2
    quiet = octohub_make_node(app=None, start=False)
    assert not quiet.client.is_connected()
    assert node.stop() and not node.client.is_connected()
    assert wait_until(lambda: [t for t in node_threads() if t.name.startswith("octohub-watchdog")] == [], 5)


# -- a user's test file, in a pytest of its own ------------------------------------------------------

def readme_test_file() -> str:
    """The test file shown in the README's "Testing your handlers" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Testing your handlers"):]
    return re.search(r"```python\n# test_tasks\.py\n(.*?)```", section, re.DOTALL).group(1)


USER_MODULE = '''
from octohub_sync import Handlers

handlers = Handlers()


@handlers.task("resize")
def resize(task):
    return {"resized": task["data"]["path"]}
'''


def test_a_users_test_file_passes(tmp_path: Path) -> None:
    (tmp_path / "mypackage").mkdir()
    (tmp_path / "mypackage" / "__init__.py").write_text("")
    (tmp_path / "mypackage" / "tasks.py").write_text(USER_MODULE)
    (tmp_path / "pytest.ini").write_text("[pytest]\noctohub_app = mypackage.tasks\n")
    test_file = readme_test_file()
    assert len(test_file.strip().splitlines()) <= 8, test_file
    (tmp_path / "test_tasks.py").write_text(test_file)
    (tmp_path / "test_plain.py").write_text(textwrap.dedent('''
        from mypackage.tasks import resize

        def test_resize_is_a_plain_function():
            assert resize({"data": {"path": "x"}}) == {"resized": "x"}

        def test_register_by_hand(octohub_node):
            octohub_node.register("again", resize)
            assert octohub_node.run("again", {"path": "y"}) == {"resized": "y"}
    '''))
    proc = run_pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"\b(\d+) passed\b", proc.stdout).group(1) == str(2 + test_file.count("def test_"))

    # The same with --octohub-app instead of the configuration, and a broken app: a clear error.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    assert run_pytest(tmp_path, "--octohub-app", "mypackage.tasks:handlers").returncode == 0
    broken = run_pytest(tmp_path, "--octohub-app", "mypackage.nothing", "test_tasks.py")
    assert broken.returncode == 1 and "OCTOHUB_APP='mypackage.nothing': no module named" in broken.stdout


def test_the_plugin_imports_nothing_optional(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    # A websockets that cannot be imported, as in a project installed without the hub extra.
    (blocked / "websockets.py").write_text("raise ImportError('websockets is not installed')\n")
    check = ("import sys, octohub_sync.pytest_plugin; "
             "loaded = [m for m in ('websockets', 'octohub_sync.hub', 'octohub_sync.testing') if m in sys.modules]; "
             "assert not loaded, loaded")
    proc = subprocess.run([sys.executable, "-c", check], env={**os.environ, "PYTHONPATH": str(blocked)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

    # Someone else's project, with the package installed but not the hub: their tests run as before,
    # and a test that asks for a hub is told what to install.
    (tmp_path / "test_other.py").write_text("def test_other():\n    assert True\n\n"
                                            "def test_wants_a_hub(octohub_hub):\n    pass\n")
    proc = run_pytest(tmp_path, "test_other.py", PYTHONPATH=str(blocked))
    assert "1 passed, 1 error" in proc.stdout and "During handling" not in proc.stdout, proc.stdout + proc.stderr
    assert "the octohub fixtures need the local hub: pip install 'octohub_sync[testing]'" in proc.stdout


# -- what loading the plugin costs --------------------------------------------------------------------

#: What pytest must not import for the plugin: the node's transports, SQLite, the optional extras.
HEAVY = ("websocket", "requests", "urllib3", "sqlite3", "websockets", "dotenv", "filelock", "platformdirs",
         "python_socks", "socks", "prometheus_client", "octohub_sync.client", "octohub_sync._delivery.ledger")


def fresh_python(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``python *args`` in a fresh interpreter, not measured by coverage (which imports sqlite3 itself)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OCTOHUB_", "PYTEST_", "COVERAGE_"))}
    environ.update(env)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True,
                          timeout=120)


def test_loading_the_plugin_imports_nothing_heavy(tmp_path: Path) -> None:
    # Whatever the interpreter's start loaded (coverage's subprocess .pth imports sqlite3 on some
    # versions) is set aside first, so an import by the plugin shows either way.
    proc = fresh_python(tmp_path, "-c", "import sys\n"
                        f"heavy = {HEAVY!r}\n"
                        "for m in [m for m in sys.modules if m.split('.')[0] in heavy]: del sys.modules[m]\n"
                        "import octohub_sync.pytest_plugin\n"
                        "print(sorted(m for m in heavy if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    # The public names still work, loaded on first use.
    proc = fresh_python(tmp_path, "-c", "import octohub_sync\n"
                        "assert all(getattr(octohub_sync, name) is not None for name in octohub_sync.__all__)\n"
                        "assert set(octohub_sync.__all__) <= set(dir(octohub_sync))\n"
                        "assert not hasattr(octohub_sync, 'no_such_name')\n"
                        "from octohub_sync import ConfigError, NodeWebSocketClient, hub\n"
                        "print(NodeWebSocketClient.__module__, ConfigError.__module__, hub.__name__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["octohub_sync.client", "octohub_sync.exceptions", "octohub_sync.hub"]


def test_a_pytest_run_with_the_dependencies_broken_passes(tmp_path: Path) -> None:
    # The package installed, its dependencies unusable (imports of them fail), the plugin loaded by pytest:
    # a project whose tests use no octohub fixture runs as before.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text(
        "import sys\nfor name in ('websocket', 'requests', 'urllib3', 'dotenv'):\n    sys.modules[name] = None\n")
    (tmp_path / "test_theirs.py").write_text(textwrap.dedent('''
        import sys

        def test_theirs():
            assert "octohub_sync.pytest_plugin" in sys.modules  # pytest loaded the plugin
            assert sys.modules["websocket"] is None  # and the dependency is broken
    '''))
    proc = fresh_python(tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_theirs.py",
                        PYTHONPATH=str(broken))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout
