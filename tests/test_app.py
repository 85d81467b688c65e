"""``--app``: a module of handlers is a node (loading, errors, the registry; the program serving it)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from octohub_sync import ConfigError, Handlers, NodeWebSocketClient, load_settings
from octohub_sync.app import install_app, load_app
from octohub_sync._execution.builtin_tasks import BUILTIN_HANDLERS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def client() -> NodeWebSocketClient:
    """A node that is never started: enough to register handlers on."""
    return NodeWebSocketClient(settings=load_settings({"signature_key": "k" * 20}, env_file=False, environ={}))


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory, not on sys.path: modules written there load as with ``python -m``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def user_module(directory: Path, source: str) -> str:
    name = f"user_app_{uuid.uuid4().hex[:8]}"
    (directory / f"{name}.py").write_text(source)
    return name


# -- the registry ------------------------------------------------------------------------------

def test_handlers_registry_leaves_functions_plain_and_registers_them(client: NodeWebSocketClient) -> None:
    handlers = Handlers()

    @handlers.task("resize")
    def resize(task: dict) -> str:
        return "resized " + task["data"]["path"]

    @handlers.task
    def word_count(task: dict) -> int:
        return len(task["data"]["text"].split())

    @handlers.task()
    def nothing(task: dict) -> None:
        return None

    @handlers.message("notification")
    def notification(message: dict) -> None:
        pass

    assert resize({"data": {"path": "a.png"}}) == "resized a.png"  # still a plain function
    assert list(handlers.tasks) == ["resize", "word_count", "nothing"] and handlers.messages == {
        "notification": notification}
    handlers(client)
    assert client.runner.handlers["word_count"] is word_count
    assert client.receiver.message_handlers["notification"] is notification
    with pytest.raises(ValueError, match="task type 'resize' is declared twice"):
        handlers.task("resize")(word_count)


# -- loading -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, registered", [
    ("examples.tasks", ["reverse", "word_count", "message notification"]),                # a Handlers registry
    ("examples.tasks:handlers", ["reverse", "word_count", "message notification"]),
    ("examples.custom_client", ["file_operation", "add", "message notification"]),        # setup(client)
    ("examples.custom_client:setup", ["file_operation", "add", "message notification"]),
])
def test_examples_load(client: NodeWebSocketClient, spec: str, registered: list) -> None:
    assert install_app(client, load_app(spec), spec) == registered
    assert set(BUILTIN_HANDLERS) <= set(client.runner.handlers)


def test_module_from_the_working_directory_and_setup_first(user_dir: Path, client: NodeWebSocketClient) -> None:
    name = user_module(user_dir, "from octohub_sync import Handlers\nhandlers = Handlers()\n"
                                 "def setup(client):\n    client.register_task_handler('mine', len)\n")
    assert str(user_dir) not in sys.path
    assert install_app(client, load_app(name), name) == ["mine"]  # setup() wins over a registry
    assert sys.path[0] == str(user_dir)


@pytest.mark.parametrize("spec, problem", [
    ("not a module", "expected module or module:function (dotted Python names)"),
    ("examples.tasks:", "expected module or module:function (dotted Python names)"),
    ("no_such_module_here", "no module named 'no_such_module_here' (looked in "),
    ("examples.no_such", "no module named 'examples.no_such' (looked in "),
    ("examples.tasks:nope", "module 'examples.tasks' has no attribute 'nope'"),
    ("examples.tasks:logger", "examples.tasks:logger is not callable (it is a Logger); expected a function(client)"),
    ("json", "json has neither a setup(client) function nor a Handlers registry; name the function that "
             "registers handlers: json:function"),
])
def test_load_errors_are_one_line_naming_the_variable(spec: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_app(spec)
    assert str(raised.value).startswith(f"OCTOHUB_APP={spec!r}: {problem}")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("source, problem", [
    ("x = 1 / 0\n", "importing {name} failed: ZeroDivisionError: division by zero ({path}, line 1)"),
    ("import no_such_dependency_xyz\n", "importing {name} failed: ModuleNotFoundError: No module named "
                                        "'no_such_dependency_xyz' ({path}, line 1)"),
    ("def broken(:\n", "importing {name} failed: SyntaxError: invalid syntax ({path}, line 1)"),
    ("from octohub_sync import Handlers\na = Handlers()\nb = Handlers()\n",
     "{name} has several Handlers registries (a, b): name one, e.g. {name}:a"),
])
def test_a_broken_module_is_one_line_with_where(user_dir: Path, source: str, problem: str) -> None:
    name = user_module(user_dir, source)
    with pytest.raises(ConfigError) as raised:
        load_app(name)
    assert str(raised.value) == f"OCTOHUB_APP={name!r}: " + problem.format(name=name, path=user_dir / f"{name}.py")


def test_an_app_that_registers_nothing_or_raises(user_dir: Path, client: NodeWebSocketClient) -> None:
    name = user_module(user_dir, "def setup(client):\n    pass\n\ndef bad(client):\n    raise RuntimeError('no db')\n")
    with pytest.raises(ConfigError, match=r"^OCTOHUB_APP='[^']+': the app registered no handler$"):
        install_app(client, load_app(name), name)
    with pytest.raises(ConfigError) as raised:
        install_app(client, load_app(f"{name}:bad"), f"{name}:bad")
    assert str(raised.value) == (f"OCTOHUB_APP='{name}:bad': setting up the handlers failed: RuntimeError: no db "
                                 f"({user_dir / (name + '.py')}, line 5)")


def test_app_setting_is_validated_once() -> None:
    assert load_settings(environ={"OCTOHUB_APP": "examples.tasks:handlers"}, env_file=False).app == \
        "examples.tasks:handlers"
    with pytest.raises(ConfigError, match="OCTOHUB_APP='examples/tasks.py': expected module or module:function"):
        load_settings(environ={"OCTOHUB_APP": "examples/tasks.py"}, env_file=False)


# -- the program ---------------------------------------------------------------------------------

def program_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    env.update(extra)
    return env


def octohub_node_command() -> list[str]:
    """The installed console script (its sys.path does not hold the working directory), else -m."""
    script = shutil.which("octohub-node", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "octohub_sync"]


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_octohub_node_app_serves_the_module(octohub_hub, tmp_path: Path, how: str) -> None:
    flags = ["--app", "examples.tasks"] if how == "flag" else []
    env = program_env(OCTOHUB_SIGNATURE_KEY=octohub_hub.key)
    if how == "environment":
        env["OCTOHUB_APP"] = "examples.tasks"
    log = tmp_path / "node.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([*octohub_node_command(), "--env-file", os.devnull, "--server-host", "127.0.0.1",
                                 "--server-port", str(octohub_hub.api_port), "--pc-id", "node_app", *flags],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert octohub_hub.wait_connected("node_app", timeout=30), log.read_text()
        assert octohub_hub.wait_result(octohub_hub.send_task("reverse", {"text": "abc"}))["result"] == "cba"
        counted = octohub_hub.wait_result(octohub_hub.send_task("word_count", {"text": "a b a"}))
        assert counted["result"] == {"words": 3, "distinct": 2}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
    finally:
        proc.kill()
        proc.wait()
    assert "serving examples.tasks: reverse, word_count, message notification" in log.read_text()


@pytest.fixture
def key_flags(tmp_path: Path) -> list:
    """A key (from a file) and a port where nothing listens: the program gets as far as the app."""
    key = tmp_path / "key"
    key.write_text("a-key-0123456789abcdef\n")
    return ["--env-file", os.devnull, "--signature-key-file", str(key), "--server-port", "9"]


@pytest.mark.parametrize("args, line", [
    (["--app", "examples.nothing_here"],
     "OCTOHUB_APP='examples.nothing_here': no module named 'examples.nothing_here'"),
    (["--app", "examples.tasks:nope"],
     "OCTOHUB_APP='examples.tasks:nope': module 'examples.tasks' has no attribute 'nope'"),
    (["--app", "json", "--check"], "OCTOHUB_APP='json': json has neither a setup(client) function nor a Handlers"),
    (["--app", "examples.tasks:logger", "--log-level", "DEBUG"], "OCTOHUB_APP='examples.tasks:logger': "
                                                                 "examples.tasks:logger is not callable"),
])
def test_a_bad_app_exits_2_with_one_line_before_anything_starts(key_flags: list, args: list, line: str) -> None:
    proc = subprocess.run([*octohub_node_command(), *key_flags, *args], cwd=ROOT, env=program_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # not even "initialised NodeWebSocketClient"
    assert proc.stderr.startswith(f"octohub-node: configuration error: {line}")
