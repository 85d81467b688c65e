"""isolation="process" against the local hub: real children, real segfaults, real kills (_isolation/boundary.py, _isolation/child.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
import requests

from octohub_sync import Handlers, NodeWebSocketClient
from octohub_sync.hub import LocalHub
from octohub_sync._isolation.boundary import describe_exit

from . import isolated_handlers as handlers
from .conftest import free_port, wait_until

pytestmark = pytest.mark.timeout(60)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def isolated_node(make_node: Callable[..., NodeWebSocketClient], hub: LocalHub, types: dict[str, Any],
                  threaded: dict[str, Any] = {}, **opts: Any) -> NodeWebSocketClient:
    """A connected node; ``types``: task type -> handler or (handler, register keywords), all isolated."""
    client = make_node(_start=False, **opts)
    for task_type, spec in types.items():
        handler, keywords = spec if isinstance(spec, tuple) else (spec, {})
        client.register_task_handler(task_type, handler, isolation="process", **keywords)
    for task_type, handler in threaded.items():
        client.register_task_handler(task_type, handler)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    return client


def pid_of(hub: LocalHub, task_type: str = "whoami") -> int:
    result = hub.wait_result(hub.send_task(task_type), timeout=30)
    assert result["status"] == "completed", result
    return int(result["result"]["pid"])


def children_left() -> list[psutil.Process]:
    """Child processes of this test process, but multiprocessing's resource tracker (one per process, by design)."""
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            if not any("resource_tracker" in part for part in child.cmdline()):
                left.append(child)
        except psutil.NoSuchProcess:
            pass
    return left


def gone(pid: int) -> bool:
    """The process ended and was reaped (a zombie still exists)."""
    return not psutil.pid_exists(pid)


# -- crashes --------------------------------------------------------------------------------------

@posix_only
def test_a_segfault_is_answered_worker_crashed_and_the_next_task_gets_a_new_child(make_node, hub: LocalHub) -> None:
    client = isolated_node(make_node, hub, {"crash": handlers.segfault, "whoami": handlers.whoami},
                           threaded={"ping": lambda task: "pong"})
    result = hub.wait_result(hub.send_task("crash"), timeout=30)
    assert result["status"] == "failed"
    assert result["error"].startswith("WorkerCrashed: child process ")
    assert result["error"].endswith("killed by signal SIGSEGV (11)")
    assert hub.wait_result(hub.send_task("ping"))["result"] == "pong"  # the node serves on, other types too
    first = pid_of(hub)
    again = hub.wait_result(hub.send_task("crash"), timeout=30)
    assert "SIGSEGV" in again["error"]
    assert pid_of(hub) == first  # another type's child was untouched
    view = client.stats()["isolation"]
    assert view["crash"]["crashes"] == 2 and view["crash"]["started"] == 2 and view["crash"]["alive"] == 0


def test_os_exit_is_answered_with_its_exit_code(make_node, hub: LocalHub) -> None:
    isolated_node(make_node, hub, {"bye": handlers.exit3})
    result = hub.wait_result(hub.send_task("bye"), timeout=30)
    assert result["status"] == "failed" and result["error"].endswith("exited with code 3"), result
    assert hub.wait_result(hub.send_task("bye"), timeout=30)["error"].endswith("exited with code 3")


@posix_only
def test_a_child_killed_from_outside_is_a_crash_and_is_replaced(make_node, hub: LocalHub) -> None:
    client = isolated_node(make_node, hub, {"block": handlers.pid_then_block, "whoami": handlers.whoami})
    tid = hub.send_task("block")
    frame = hub.wait_progress(tid, lambda f: str(f.get("message", "")).startswith("pid "), timeout=30)
    pid = int(frame["message"].split()[1])
    os.kill(pid, signal.SIGKILL)  # as the OOM killer does
    result = hub.wait_result(tid, timeout=10)
    assert result["error"] == f"WorkerCrashed: child process {pid} killed by signal SIGKILL (9)"
    assert wait_until(lambda: gone(pid), 5)  # reaped, not a zombie
    tid = hub.send_task("block")
    frame = hub.wait_progress(tid, lambda f: str(f.get("message", "")).startswith("pid "), timeout=30)
    assert int(frame["message"].split()[1]) != pid
    client.stop(timeout=0.1)  # the new child blocks for an hour: the stop kills it


@posix_only
def test_the_signals_that_drain_the_node_do_not_end_a_childs_task(make_node, hub: LocalHub) -> None:
    """Ctrl+C reaches every process of the console, systemd's SIGTERM every process of the unit."""
    isolated_node(make_node, hub, {"nap": handlers.pid_then_nap})
    tid = hub.send_task("nap", {"seconds": 0.5})
    frame = hub.wait_progress(tid, lambda f: str(f.get("message", "")).startswith("pid "), timeout=30)
    pid = int(frame["message"].split()[1])
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    result = hub.wait_result(tid, timeout=10)
    assert result["status"] == "completed" and result["result"] == {"pid": pid}, result


ORPHAN_SCRIPT = """
import sys, threading, time
sys.path.insert(0, sys.argv[1])
from octohub_sync._isolation.pool import IsolatedHandler
from tests.isolated_handlers import sleep_forever

if __name__ == "__main__":
    handler = IsolatedHandler("nap", sleep_forever)
    threading.Thread(target=handler, args=({"data": {}},), daemon=True).start()
    while handler.pid_of("") is None:
        time.sleep(0.01)
    print(handler.pid_of(""), flush=True)
    time.sleep(60)
"""


def test_a_child_whose_node_dies_exits(tmp_path: Path) -> None:
    """The node killed outright (no stop()): its child reads the end of its pipe and exits, never an orphan."""
    script = tmp_path / "dying_node.py"
    script.write_text(ORPHAN_SCRIPT)
    node = subprocess.Popen([sys.executable, str(script), str(Path(__file__).resolve().parent.parent)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = node.stdout.readline()  # type: ignore[union-attr]
        assert line.strip().isdigit(), line
        child = psutil.Process(int(line))
        node.kill()
        node.wait(10)
        assert wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 10)
    finally:
        node.kill()
        node.wait(10)
        node.stdout.close()  # type: ignore[union-attr]


def test_exit_descriptions_name_signals_and_windows_status_codes() -> None:
    assert describe_exit(-11) == "killed by signal SIGSEGV (11)"
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(0xC0000005) == "exited with code 0xC0000005 (access violation)"
    assert describe_exit(0xC00000FD) == "exited with code 0xC00000FD (stack overflow)"


def test_children_start_lazily_at_most_one_per_worker_and_are_reused(make_node, hub: LocalHub) -> None:
    client = isolated_node(make_node, hub, {"nap": handlers.pid_then_nap}, max_workers=2)
    assert client.stats()["isolation"]["nap"]["alive"] == 0  # none before the first task
    ids = [hub.send_task("nap", {"seconds": 0.3}) for _ in range(6)]
    pids = {hub.wait_result(tid, timeout=30)["result"]["pid"] for tid in ids}
    view = client.stats()["isolation"]["nap"]
    assert len(pids) == 2 and view["started"] == 2 and view["alive"] == 2 and view["busy"] == 0


def test_the_types_concurrency_bounds_its_children(make_node, hub: LocalHub) -> None:
    # concurrency=2 on 4 workers: two tasks at most run at once, so two children serve them all.
    client = isolated_node(make_node, hub, {"nap": (handlers.pid_then_nap, {"concurrency": 2})}, max_workers=4)
    ids = [hub.send_task("nap", {"seconds": 0.2}) for _ in range(6)]
    pids = {hub.wait_result(tid, timeout=30)["result"]["pid"] for tid in ids}
    view = client.stats()["isolation"]["nap"]
    assert len(pids) == 2 and view["started"] == 2 and view["alive"] == 2


# -- recycling ------------------------------------------------------------------------------------

def test_max_tasks_per_child_replaces_the_child_every_n_tasks(make_node, hub: LocalHub) -> None:
    client = isolated_node(make_node, hub, {"whoami": (handlers.whoami, {"max_tasks_per_child": 2})})
    pids = [pid_of(hub) for _ in range(5)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert wait_until(lambda: gone(pids[0]) and gone(pids[2]), 10)
    view = client.stats()["isolation"]["whoami"]
    assert view["recycled"] == 2 and view["started"] == 3 and view["alive"] == 1


def test_max_memory_per_child_replaces_a_child_that_grew(make_node, hub: LocalHub) -> None:
    client = isolated_node(make_node, hub, {"grow": (handlers.allocate, {"max_memory_per_child": 150})})

    def grow(mb: int) -> int:
        result = hub.wait_result(hub.send_task("grow", {"mb": mb}), timeout=30)
        assert result["status"] == "completed", result
        return int(result["result"]["pid"])

    small = grow(1)
    assert grow(1) == small  # well under the ceiling: kept
    assert grow(200) == small  # the task that grew past it still ran in it...
    assert grow(1) != small  # ...and the next one has a fresh child
    assert client.stats()["isolation"]["grow"]["recycled"] == 1


# -- hard stop, cancel and progress -----------------------------------------------------------------

def test_a_cancel_past_the_grace_kills_a_child_blocked_in_c(make_node, hub: LocalHub) -> None:
    client = isolated_node(make_node, hub, {"nap": handlers.sleep_forever, "whoami": handlers.whoami},
                           cancel_grace=1.0)
    tid = hub.send_task("nap")
    assert wait_until(lambda: [t.get("child_pid") for t in client.running_tasks()] != [] and
                      client.running_tasks()[0]["child_pid"] is not None, 30)
    pid = client.running_tasks()[0]["child_pid"]
    assert client.stats()["isolation"]["nap"]["busy"] == 1
    began = time.monotonic()
    hub.cancel(tid, "too slow")
    result = hub.wait_result(tid, timeout=10)
    took = time.monotonic() - began
    assert result["error"] == "TaskCancelled: cancelled by the hub: too slow; stopped after 1 s (OCTOHUB_CANCEL_GRACE)"
    assert 1.0 <= took < 3.0  # the grace, plus a tick: not an hour of time.sleep
    assert wait_until(lambda: gone(pid), 5)
    assert pid_of(hub) != pid
    assert client.stats()["isolation"]["nap"]["killed"] == 1


def test_a_time_limit_past_the_grace_kills_the_child(make_node, hub: LocalHub) -> None:
    client = isolated_node(make_node, hub, {"nap": handlers.sleep_forever}, cancel_grace=0.3)
    tid = hub.send_task("nap", timeout=1)
    assert hub.wait_result(tid, timeout=30)["error"] == "TaskTimeout: timed out after 1 s"
    assert wait_until(lambda: client.stats()["isolation"]["nap"]["killed"] == 1, 5)
    assert wait_until(lambda: client.running_tasks() == [], 5)  # the worker thread is free again


def test_the_cancel_flag_and_progress_reach_across(make_node, hub: LocalHub) -> None:
    isolated_node(make_node, hub, {"wait": handlers.until_cancelled, "steps": handlers.progress_steps})
    tid = hub.send_task("wait")
    hub.wait_progress(tid, lambda f: f.get("message") == "waiting", timeout=30)
    hub.cancel(tid, "enough")
    result = hub.wait_result(tid, timeout=10)
    assert result["error"] == "TaskCancelled: cancelled by the hub: enough"  # check_cancelled() in the child
    assert any(f.get("message") == "saw cancel: True, True" for f in hub.progress[tid])
    tid = hub.send_task("steps")
    assert hub.wait_result(tid, timeout=30)["result"] == "done"
    seen = [(f["progress"], f["message"]) for f in hub.progress[tid]]
    assert seen[-1] == (0.75, "step 3") and seen == sorted(seen)


def test_handler_errors_read_as_from_a_thread(make_node, hub: LocalHub) -> None:
    isolated_node(make_node, hub, {"fail": handlers.fail, "bad": handlers.unpicklable})
    result = hub.wait_result(hub.send_task("fail", {"missing": "account"}), timeout=30)
    assert result["error"] == "KeyError: 'account'"
    error = hub.wait_result(hub.send_task("bad"), timeout=30)["error"]
    assert error.startswith("ResultNotSerializable: handler returned function")


# -- registration ---------------------------------------------------------------------------------

def test_handlers_a_child_cannot_import_are_refused_at_registration(make_node) -> None:
    client = make_node(_start=False)

    def local(task: dict) -> None:
        return None

    for handler, why in ((lambda task: None, "lambda"), (local, "inside a function")):
        with pytest.raises(ValueError, match=f"task type 'browse' with isolation='process'.*{why}"):
            client.register_task_handler("browse", handler, isolation="process")
    with pytest.raises(ValueError, match="isolation must be 'process' or None, not 'thread'"):
        client.register_task_handler("browse", handlers.whoami, isolation="thread")
    with pytest.raises(ValueError, match="max_tasks_per_child needs isolation='process'"):
        client.register_task_handler("browse", handlers.whoami, max_tasks_per_child=3)
    with pytest.raises(ValueError, match="max_memory_per_child must be a positive number"):
        client.register_task_handler("browse", handlers.whoami, isolation="process", max_memory_per_child=0)
    registry = Handlers()
    registry.task("browse", isolation="process")(lambda task: None)
    with pytest.raises(ValueError, match="lambda"):
        registry(client)
    assert "browse" not in client.runner.handlers


def test_a_handler_of_an_interactive_main_is_refused(make_node, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -c`` or a REPL: a child cannot import that __main__ again."""
    import types

    main = types.ModuleType("__main__")  # no __file__, as in a REPL

    def typed_in(task: dict) -> None:
        return None

    typed_in.__module__, typed_in.__qualname__ = "__main__", "typed_in"
    main.typed_in = typed_in  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "__main__", main)
    with pytest.raises(ValueError, match="task type 'repl'.*interactive __main__"):
        make_node(_start=False).register_task_handler("repl", typed_in, isolation="process")


def test_a_handlers_registry_declares_isolation(make_node, hub: LocalHub) -> None:
    registry = Handlers()
    registry.task("whoami", isolation="process", max_tasks_per_child=1)(handlers.whoami)
    client = make_node(_start=False)
    registry(client)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    assert pid_of(hub) != pid_of(hub)


# -- observability and stop -------------------------------------------------------------------------

def test_children_show_in_stats_tasks_and_metrics_and_none_outlives_stop(make_node, hub: LocalHub) -> None:
    before = {p.pid for p in children_left()}  # another test's process on this worker is not ours
    port = free_port()
    client = isolated_node(make_node, hub, {"block": handlers.pid_then_block, "whoami": handlers.whoami},
                           metrics_port=port)
    child = pid_of(hub)
    tid = hub.send_task("block")
    hub.wait_progress(tid, lambda f: str(f.get("message", "")).startswith("pid "), timeout=30)
    [running] = client.running_tasks()
    assert running["task_id"] == tid and isinstance(running["child_pid"], int)
    stats = client.stats()["isolation"]
    assert stats["block"] == {"alive": 1, "busy": 1, "started": 1, "crashes": 0, "recycled": 0, "killed": 0}
    assert stats["whoami"]["alive"] == 1 and stats["whoami"]["busy"] == 0
    with requests.Session() as http:
        http.trust_env = False
        text = http.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        tasks = http.get(f"http://127.0.0.1:{port}/tasks", timeout=5).json()["tasks"]
    assert f'octohub_node_children_busy{{pc_id="{client.pc_id}",task_type="block"}} 1' in text
    assert f'octohub_node_child_crashes_total{{pc_id="{client.pc_id}",task_type="whoami"}} 0' in text
    assert [(t["task_id"], t["child_pid"]) for t in tasks] == [(tid, running["child_pid"])]
    assert {p.pid for p in children_left()} - before == {child, running["child_pid"]}
    client.stop(timeout=0.5)  # the blocked one is still running: its child is killed too
    assert {p.pid for p in children_left()} - before == set() and gone(child) and gone(running["child_pid"])


MAIN_SCRIPT = '''
import os, sys
from octohub_sync import NodeWebSocketClient, load_settings
from octohub_sync.hub import LocalHub


def where(task):
    return {"pid": os.getpid(), "name": __name__}


if __name__ == "__main__":
    with LocalHub("k" * 24) as hub:
        settings = load_settings({"server_host": "127.0.0.1", "server_port": hub.api_port, "ws_port": hub.ws_port,
                                  "signature_key": hub.key, "pc_id": "script", "state_dir": "off"},
                                 env_file=False, environ={})
        node = NodeWebSocketClient(settings=settings)
        node.register_task_handler("where", where, isolation="process")
        with node:
            result = hub.wait_result(hub.send_task("where"), timeout=30)
    print(result["result"]["name"], result["result"]["pid"] != os.getpid())
'''


def test_a_handler_in_a_scripts_main_runs_in_a_child(tmp_path: Path) -> None:
    """Under spawn the child runs the script again as __mp_main__: its __main__ guard keeps the node out."""
    script = tmp_path / "node_script.py"
    script.write_text(textwrap.dedent(MAIN_SCRIPT))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=50, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["__mp_main__", "True"]
