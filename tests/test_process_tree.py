"""No process left behind (issue 31): an isolated child's process tree ends with it, however it ends.

Real processes: ``sleep`` helpers stand in for chromedriver and Chrome (tests/tree_handlers.py);
psutil says which are left. POSIX only where the test sends signals itself (``kill -9`` of the node).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest

from octohub_sync import NodeWebSocketClient
from octohub_sync.hub import LocalHub

from . import tree_handlers
from .conftest import wait_until

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(sys.platform == "win32", reason="the helpers are POSIX sleep processes")]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def all_gone(pids: list[int], within: float = 10.0) -> bool:
    return wait_until(lambda: not any(alive(pid) for pid in pids), within, interval=0.05)


@pytest.fixture
def trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "trace"
    monkeypatch.setenv("OCTOHUB_TEST_TRACE", str(path))  # children inherit it at spawn
    return path


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def isolated(make_node: Callable[..., NodeWebSocketClient], hub: LocalHub, handler: Any, *,
             uses: Any = None, child: Any = None, **opts: Any) -> NodeWebSocketClient:
    client = make_node(_start=False, **opts)
    keywords = dict(child or {})
    if uses:
        client.register_resource("helper", tree_handlers.helper)
        keywords["uses"] = uses
    client.register_task_handler("work", handler, isolation="process", **keywords)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    return client


def pids_of(hub: LocalHub, tid: str) -> list[int]:
    frame = hub.wait_progress(tid, lambda f: str(f.get("message", "")).startswith("pids "), timeout=30)
    return [int(pid) for pid in frame["message"].split()[1:]]


def test_a_resource_lives_in_its_child_and_is_torn_down_there_at_the_nodes_stop(make_node, hub, trace) -> None:
    client = isolated(make_node, hub, tree_handlers.use_helper, uses=["helper"])
    first = hub.wait_result(hub.send_task("work"), timeout=30)["result"]
    again = hub.wait_result(hub.send_task("work"), timeout=30)["result"]
    assert again == first and first["child"] != os.getpid()  # made in the child, reused by the next task
    assert client.stats()["resources"]["helper"] == {"live": 1, "made": 1, "torn_down": 0}
    client.stop(timeout=5)
    assert lines(trace) == [["made", str(first["child"]), str(first["helper"])],
                            ["torn", str(first["child"]), str(first["helper"])]]  # in the child that made it
    assert all_gone([first["child"], first["helper"]])
    assert client.stats()["resources"]["helper"] == {"live": 0, "made": 1, "torn_down": 1}


def test_a_recycled_child_tears_down_its_resources_and_ends_its_tree(make_node, hub, trace) -> None:
    client = isolated(make_node, hub, tree_handlers.spawn, child={"max_tasks_per_child": 1})
    result = hub.wait_result(hub.send_task("work"), timeout=30)["result"]
    assert all_gone([result["child"], *result["pids"]])  # the helpers it left running ended with it
    client.register_resource("helper", tree_handlers.helper)
    client.register_task_handler("kept", tree_handlers.use_helper, isolation="process", uses=["helper"],
                                 max_tasks_per_child=1)
    kept = hub.wait_result(hub.send_task("kept"), timeout=30)["result"]
    assert all_gone([kept["child"], kept["helper"]])
    assert wait_until(lambda: ["torn", str(kept["child"]), str(kept["helper"])] in lines(trace), 10)


def test_a_hard_stop_kills_the_childs_whole_tree(make_node, hub, trace) -> None:
    isolated(make_node, hub, tree_handlers.spawn, cancel_grace=0.3)
    tid = hub.send_task("work", {"block": True})
    pids = pids_of(hub, tid)
    hub.cancel(tid, "enough")
    result = hub.wait_result(tid, timeout=10)
    assert result["status"] == "failed" and result["error"].startswith("TaskCancelled"), result
    assert all_gone(pids)


def test_the_nodes_stop_ends_busy_and_idle_childrens_trees(make_node, hub, trace) -> None:
    client = isolated(make_node, hub, tree_handlers.spawn, max_workers=2)
    idle = hub.wait_result(hub.send_task("work"), timeout=30)["result"]
    busy = pids_of(hub, hub.send_task("work", {"block": True}))
    client.stop(timeout=0.2)
    assert all_gone([idle["child"], *idle["pids"], *busy])


NODE_SCRIPT = '''
import sys
from octohub_sync import NodeWebSocketClient, load_settings
from tests import tree_handlers

if __name__ == "__main__":
    api, ws, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    settings = load_settings({"server_host": "127.0.0.1", "server_port": api, "ws_port": ws, "signature_key": key,
                              "pc_id": "doomed", "state_dir": "off"}, env_file=False, environ={})
    node = NodeWebSocketClient(settings=settings)
    node.register_task_handler("spawn", tree_handlers.spawn, isolation="process")
    node.register_task_handler("spawn_twice", tree_handlers.spawn_signalled_twice, isolation="process")
    node.register_task_handler("thread_spawn", tree_handlers.spawn)  # on a worker thread of the node
    if hasattr(node, "register_resource") and sys.argv[4:] != ["bare"]:  # bare: no resource, so no watcher
        node.register_resource("helper", tree_handlers.helper)
        node.register_task_handler("work", tree_handlers.use_helper, isolation="process", uses=["helper"])
        node.register_task_handler("work_twice", tree_handlers.use_helper_signalled_twice, isolation="process",
                                   uses=["helper"])
    node.start()
    node.wait_stopped()
'''


def doomed_node(hub: LocalHub, tmp_path: Path, *extra: str) -> subprocess.Popen:
    script = tmp_path / "doomed_node.py"
    script.write_text(textwrap.dedent(NODE_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    node = subprocess.Popen([sys.executable, str(script), str(hub.api_port), str(hub.ws_port), hub.key, *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    assert hub.wait_connected("doomed", 30)
    return node


def killable(node: subprocess.Popen) -> Any:
    def kill() -> None:
        node.kill()  # SIGKILL: no finally, no atexit, nothing of the node runs
        node.wait(10)

    yield kill
    if node.poll() is None:
        kill()


@pytest.fixture
def kill_9(hub: LocalHub, tmp_path: Path) -> Any:
    """Start a node in its own process; call the result to kill -9 it."""
    yield from killable(doomed_node(hub, tmp_path))


@pytest.fixture
def kill_9_bare(hub: LocalHub, tmp_path: Path) -> Any:
    """The same, a node with no resource: so with no watcher to end its tree after node_guard.GRACE."""
    yield from killable(doomed_node(hub, tmp_path, "bare"))


def test_kill_9_of_the_node_ends_its_childrens_trees(hub: LocalHub, trace: Path, kill_9: Any) -> None:
    spawned = pids_of(hub, hub.send_task("spawn", {"block": True}, pc_id="doomed"))
    kill_9()
    assert all_gone(spawned, within=10)  # the child and the helpers its blocked handler started


def torn_down_after_kill_9(hub: LocalHub, trace: Path, kill_9: Any, task_type: str) -> None:
    """Kill -9 the node while ``task_type`` blocks in its child: the child tears its resource down, then ends."""
    with_resource = pids_of(hub, hub.send_task(task_type, {"block": True}, pc_id="doomed"))
    kill_9()
    assert all_gone(with_resource, within=10)
    # The child's handler was blocked in C; the child stopped it, tore its resource down in itself, then ended
    # (the line is written just after the helper ended).
    assert wait_until(lambda: ["torn", *map(str, with_resource)] in lines(trace), 5), (with_resource, lines(trace))


def test_kill_9_of_the_node_lets_a_child_tear_down_its_resources_first(hub: LocalHub, trace: Path, kill_9: Any) -> None:
    torn_down_after_kill_9(hub, trace, kill_9, "work")


def test_a_second_death_signal_while_the_child_answers_leaves_its_teardown_to_run(hub: LocalHub, trace: Path,
                                                                                   kill_9: Any) -> None:
    """The kernel sends the parent-death signal at each reparenting: one may come after the reader's, while the
    first TaskCancelled is still being turned into the answer (the handler makes that moment certain)."""
    torn_down_after_kill_9(hub, trace, kill_9, "work_twice")


def test_a_second_death_signal_while_the_child_answers_still_ends_its_tree(hub: LocalHub, trace: Path,
                                                                          kill_9_bare: Any) -> None:
    """The same moment, in a node with no watcher (no resource): only the child itself can end its tree."""
    spawned = pids_of(hub, hub.send_task("spawn_twice", {"block": True}, pc_id="doomed"))
    kill_9_bare()
    assert all_gone(spawned, within=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the node's watcher finds its tree through /proc")
def test_kill_9_of_the_node_ends_what_its_worker_threads_started(hub: LocalHub, trace: Path, kill_9: Any) -> None:
    """A helper a handler started on a worker thread is the node's own child: the node's watcher ends it."""
    node_pid, *helpers = pids_of(hub, hub.send_task("thread_spawn", {"block": True}, pc_id="doomed"))
    assert {psutil.Process(pid).ppid() for pid in helpers} == {node_pid}  # started on a thread of the node itself
    kill_9()
    assert all_gone(helpers, within=10)
