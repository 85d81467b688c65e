"""stats(), /healthz and /metrics against the real local hub."""
from __future__ import annotations

import logging
import re
import socket
import threading
import time
from typing import Iterator

import pytest
import requests

from octohub_sync import ConfigError, NodeWebSocketClient
from octohub_sync._ops.status_server import MetricsServer, health, render_metrics
from octohub_sync.hub import LocalHub
from octohub_sync._ops.stats import Stats

from .conftest import free_port, wait_until

#: ``name{labels} value`` of the text format 0.0.4 (timestamps are never written).
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\} (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # a proxy from the environment must not see 127.0.0.1
        yield session


def metrics_for(client: NodeWebSocketClient, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """A metrics server showing ``client`` (on any free port by default), as the client itself builds one."""
    return MetricsServer(stats=client.stats, failed=lambda: client.failure is not None, host=host,
                         port=port, log=client.log)


@pytest.fixture
def served(node: NodeWebSocketClient) -> Iterator[MetricsServer]:
    """A metrics server on any free port for ``node``, outliving the node's own stop()."""
    server = metrics_for(node)
    server.start()
    yield server
    server.stop()


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Check every line of the exposition format and return samples by metric name."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    typed: set[str] = set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge") and name not in typed
            typed.add(name)
            continue
        if line.startswith("#"):
            assert line.startswith("# HELP ")
            continue
        match = SAMPLE.match(line)
        assert match, f"not name{{labels}} value: {line!r}"
        name, labels, value = match.groups()
        assert name in typed, f"{name} has no # TYPE line before it"
        samples.setdefault(name, []).append((dict(LABEL.findall(labels)), float(value)))
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    found = [v for lab, v in samples[name] if all(lab.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


# -- stats() -----------------------------------------------------------------------------------

def test_stats_count_tasks_and_show_queues(make_node, hub: LocalHub) -> None:
    client = make_node(_start=False, max_workers=1)
    release = threading.Event()
    client.register_task_handler("boom", lambda task: 1 / 0)
    client.register_task_handler("block", lambda task: release.wait(5))
    before = time.time()
    client.start()
    assert client.wait_connected(5)
    for task_type in ("echo", "echo", "boom", "no_such_type"):
        hub.wait_result(hub.send_task(task_type, {}))
    s = client.stats()
    assert (s["tasks_received"], s["tasks_completed"], s["tasks_failed"], s["tasks_rejected"]) == (4, 2, 1, 1)
    assert s["state"] == "connected" and s["pc_id"] == client.get_pc_id()
    assert before <= s["connected_since"] <= time.time()
    assert (s["outbox"], s["tasks_running"], s["tasks_queued"]) == (0, 0, 0)

    blocked = [hub.send_task("block", {}) for _ in range(2)]
    try:
        assert wait_until(lambda: (client.stats()["tasks_running"], client.stats()["tasks_queued"]) == (1, 1), 5)
    finally:
        release.set()
    for tid in blocked:
        assert hub.wait_result(tid)["status"] == "completed"
    assert wait_until(lambda: client.stats()["tasks_completed"] == 4, 5)


def test_counters_lose_no_count_when_many_threads_count_at_once() -> None:
    stats = Stats()
    go = threading.Barrier(8)

    def count() -> None:
        go.wait(10)
        for _ in range(20000):
            stats.incr("tasks_received")
        stats.incr("results_dropped", 3)

    threads = [threading.Thread(target=count) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    snap = stats.snapshot()
    assert snap["tasks_received"] == 8 * 20000 and snap["results_dropped"] == 8 * 3
    assert snap["tasks_completed"] == 0


def test_stats_outbox_holds_results_while_disconnected(make_node, hub: LocalHub) -> None:
    client = make_node(_start=False)
    release = threading.Event()
    client.register_task_handler("block", lambda task: release.wait(5))
    client.start()
    assert client.wait_connected(5)
    tid = hub.send_task("block", {})
    assert wait_until(lambda: client.stats()["tasks_running"] == 1, 5)
    hub.stop_ws()
    assert wait_until(lambda: client.stats()["state"] == "reconnecting", 5)
    release.set()
    assert wait_until(lambda: client.stats()["outbox"] == 1, 5)
    s = client.stats()
    assert s["connected_since"] is None and s["tasks_running"] == 0
    hub.start_ws()
    assert hub.wait_result(tid, timeout=8)["status"] == "completed"
    assert wait_until(lambda: client.stats()["outbox"] == 0, 5)


# -- /healthz and /metrics ---------------------------------------------------------------------

def test_node_serves_health_and_metrics_on_its_port(make_node, hub: LocalHub, http: requests.Session) -> None:
    port = free_port()
    client = make_node(metrics_port=port)
    assert client.wait_connected(5)
    base = f"http://127.0.0.1:{port}"
    answer = http.get(base + "/healthz", timeout=5)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok" and body["state"] == "connected" and body["pc_id"] == client.pc_id
    assert any(t.name == "octohub-metrics" for t in threading.enumerate())

    hub.wait_result(hub.send_task("echo", {"x": 1}))
    metrics = http.get(base + "/metrics", timeout=5)
    assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(metrics.text)
    assert value(samples, "octohub_node_tasks_received_total", pc_id=client.pc_id) == 1
    assert value(samples, "octohub_node_tasks_completed_total", pc_id=client.pc_id) == 1
    assert value(samples, "octohub_node_connected", pc_id=client.pc_id) == 1
    assert http.get(base + "/nothing", timeout=5).status_code == 404

    client.stop()
    with pytest.raises(requests.ConnectionError):
        http.get(base + "/healthz", timeout=5)


def test_healthz_503_after_stop(node: NodeWebSocketClient, served: MetricsServer, http: requests.Session) -> None:
    url = f"http://127.0.0.1:{served.port}/healthz"
    assert http.get(url, timeout=5).status_code == 200
    node.stop()
    answer = http.get(url, timeout=5)
    assert answer.status_code == 503
    assert answer.json()["status"] == "unavailable" and answer.json()["state"] == "stopped"


def test_healthz_ok_while_reconnecting(node: NodeWebSocketClient, hub: LocalHub, served: MetricsServer,
                                       http: requests.Session) -> None:
    hub.stop_ws()
    assert wait_until(lambda: node.stats()["state"] == "reconnecting", 5)
    answer = http.get(f"http://127.0.0.1:{served.port}/healthz", timeout=5)
    assert answer.status_code == 200 and answer.json()["connected"] is False


def test_healthz_503_after_giving_up(make_node, http: requests.Session) -> None:
    client = make_node(server_port=free_port(), max_reconnect_attempts=1)
    server = metrics_for(client)
    server.start()
    try:
        assert wait_until(lambda: client.failure is not None, 5)
        answer = http.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        assert answer.status_code == 503 and answer.json()["state"] == "gave up"
        assert "signature=" not in answer.text
    finally:
        server.stop()


def test_metrics_show_every_counter_and_gauge(node: NodeWebSocketClient, hub: LocalHub,
                                              served: MetricsServer, http: requests.Session) -> None:
    for task_type in ("echo", "no_such_type"):
        hub.wait_result(hub.send_task(task_type, {}))
    samples = parse_metrics(http.get(f"http://127.0.0.1:{served.port}/metrics", timeout=5).text)
    stats = node.stats()
    pc = {"pc_id": node.pc_id}
    for counter in ("tasks_received", "tasks_completed", "tasks_failed", "tasks_rejected", "reconnects"):
        assert value(samples, f"octohub_node_{counter}_total", **pc) == stats[counter]
    assert value(samples, "octohub_node_tasks_rejected_total", **pc) == 1
    for gauge in ("tasks_running", "tasks_queued", "outbox"):
        assert value(samples, f"octohub_node_{gauge}", **pc) == 0
    assert value(samples, "octohub_node_connected_since_seconds", **pc) == pytest.approx(stats["connected_since"])
    assert value(samples, "octohub_node_clock_skew_seconds", **pc) == pytest.approx(stats["clock_skew"])
    assert value(samples, "octohub_node_state", state="connected", **pc) == 1
    assert value(samples, "octohub_node_state", state="reconnecting", **pc) == 0


def test_metrics_escape_label_values() -> None:
    stats = {"pc_id": 'a"b\\c\nd', "state": "gave up", "tasks_received": 3, "clock_skew": float("nan"),
             "connected_since": None, "outbox": 0}
    text = render_metrics(stats)
    assert 'pc_id="a\\"b\\\\c\\nd"' in text
    samples = parse_metrics(text)
    assert value(samples, "octohub_node_tasks_received_total") == 3
    assert value(samples, "octohub_node_connected") == 0
    assert "octohub_node_clock_skew_seconds{" in text and text.count("NaN") == 1
    parser = pytest.importorskip("prometheus_client.parser")
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    assert families["octohub_node_tasks_received"].samples[0].labels["pc_id"] == 'a"b\\c\nd'


@pytest.mark.parametrize("state, failed, status", [
    ("connected", False, 200), ("connecting", False, 200), ("reconnecting", False, 200),
    ("reconnecting", True, 503), ("gave up", True, 503), ("stopping", False, 503), ("stopped", False, 503),
])
def test_health_by_state(state: str, failed: bool, status: int) -> None:
    code, body = health({"state": state, "pc_id": "node_x"}, failed=failed)
    assert code == status and body["status"] == ("ok" if status == 200 else "unavailable")


def test_status_line_every_status_interval(make_node, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    client = make_node(status_interval=0.2)
    assert client.wait_connected(5)
    assert wait_until(lambda: sum("status: connected, tasks received 0" in r.getMessage()
                                  for r in caplog.records) >= 2, 5)


def test_metrics_without_clock_skew_and_odd_numbers() -> None:
    text = render_metrics({"pc_id": "node_x", "state": "connected", "tasks_received": True,
                           "connected_since": float("inf"), "clock_skew": None})
    samples = parse_metrics(text)
    assert "octohub_node_clock_skew_seconds" not in samples  # unknown: no series rather than a made-up 0
    assert value(samples, "octohub_node_tasks_received_total") == 1
    assert 'octohub_node_connected_since_seconds{pc_id="node_x"} +Inf' in text


def test_metrics_port_in_use_is_a_config_error_and_stop_is_idempotent(node: NodeWebSocketClient) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="^OCTOHUB_METRICS_PORT=.*cannot listen on 127.0.0.1"):
            metrics_for(node, port=taken.getsockname()[1]).start()
    server = metrics_for(node)
    server.start()
    server.stop()
    server.stop()
    assert not any(t.name == "octohub-metrics" and t.is_alive() for t in threading.enumerate())


def test_metrics_on_ipv6_loopback(node: NodeWebSocketClient, http: requests.Session) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    server = metrics_for(node, host="::1")
    try:
        server.start()
    except ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert http.get(f"http://[::1]:{server.port}/healthz", timeout=5).json()["state"] == "connected"
    finally:
        server.stop()
