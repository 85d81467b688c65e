"""The local hub in the real servers' modes: the Go WebSocket server's dialect and read deadline,
direct mode, TLS with a private CA, and the address and clock pitfalls of a real deployment."""
from __future__ import annotations

import logging
import re
import ssl

import pytest
import trustme

from octohub_sync.hub import LocalHub

from .conftest import KEY, wait_until


def test_go_dialect_end_to_end(make_node, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="octohub_sync")
    with LocalHub(KEY, dialect="go") as hub:
        client = make_node(_hub=hub)
        assert client.wait_connected(10)  # the Go-form "connected" triggered node_ready
        assert hub.wait_result(hub.send_task("echo", {"x": 1}))["result"]["echo"] == {"x": 1}
        request_id = hub.send_json_ping()
        assert hub.wait_for(lambda: any(m.get("action") == "pong" for m in hub.received), 5)
        pong = [m for m in hub.received if m.get("action") == "pong"][0]
        assert pong["request_id"] == request_id and "type" not in pong
        hub.send_message({"action": "error", "data": {"code": 1001, "message": "bad things"}})
        hub.send_message({"action": "pong", "data": {}, "request_id": "x"})
        assert wait_until(lambda: any("bad things" in r.getMessage() for r in caplog.records), 5)
    errors = [r for r in caplog.records if "hub reported error" in r.getMessage()]
    # The Go server's 1002 answers to node_ready/task_result stay at DEBUG; a real error warns.
    assert {r.levelno for r in errors if "1002" in r.getMessage()} == {logging.DEBUG}
    assert [r.levelno for r in errors if "1001" in r.getMessage()] == [logging.WARNING]
    assert not any(m.get("action") == "error" or m.get("type") == "error" for m in hub.received)


def test_ping_frames_keep_a_read_deadline_hub_happy(make_node) -> None:
    with LocalHub(KEY, dialect="go", read_deadline=1.0) as hub:
        client = make_node(_hub=hub, ping_interval=0.3, ping_timeout=0.2)
        assert client.wait_connected(10)
        # Three read deadlines pass; pings must have kept the first connection alive.
        assert not hub.wait_for(lambda: len(hub.connections) > 1 or hub.connections[0]["closed"], 3.5)
        assert client.is_connected()


def test_read_deadline_hub_drops_a_node_without_pings(make_node) -> None:
    with LocalHub(KEY, dialect="go", read_deadline=0.5) as hub:
        client = make_node(_hub=hub, ping_interval=30, ping_timeout=10, stable_after=30)
        assert client.wait_connected(10)
        assert hub.wait_for(lambda: hub.connections[0]["closed"] is not None, 5)


def test_go_disconnected_notice_is_logged_with_cause(make_node, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    with LocalHub(KEY, dialect="go") as hub:
        client = make_node(_hub=hub)
        assert client.wait_connected(10)
        hub.send_message({"action": "disconnected", "data": {"reason": "新连接建立", "code": 1000}, "from": "system"})
        assert wait_until(lambda: any("same pc_id" in r.getMessage() for r in caplog.records), 5)
        assert hub.wait_for(lambda: len(hub.connections) == 2, 10)  # it reconnected


def test_direct_mode_signs_the_url_itself(make_node, hub: LocalHub) -> None:
    hub.api_fault = "500"  # proves the API is not used
    client = make_node(connect_mode="direct")
    assert client.wait_connected(10)
    assert hub.api_requests == []
    assert hub.wait_result(hub.send_task("echo"))["status"] == "completed"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_hub(ca: trustme.CA) -> LocalHub:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    return LocalHub(KEY, ssl_context=server, ws_url_host="localhost")


def test_tls_api_and_wss_with_private_ca(make_node, ca: trustme.CA, tmp_path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with tls_hub(ca) as hub:
        client = make_node(_hub=hub, server_host="localhost", tls=True, ca_file=str(ca_file))
        assert client.wait_connected(10)
        assert hub.wait_result(hub.send_task("echo"))["status"] == "completed"
        direct = make_node(_hub=hub, server_host="localhost", tls=True, ca_file=str(ca_file),
                           connect_mode="direct", pc_id="node_direct_tls")
        assert direct.wait_connected(10)


def test_tls_refuses_unknown_ca_then_insecure_switch_warns(make_node, ca: trustme.CA, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    with tls_hub(ca) as hub:
        strict = make_node(_hub=hub, server_host="localhost", tls=True)
        assert wait_until(lambda: strict.stats()["connect_failures"] >= 1, 10)
        assert "OCTOHUB_CA_FILE" in (strict.stats()["last_error"] or "")
        assert not strict.is_connected()
        loose = make_node(_hub=hub, server_host="localhost", tls=True, tls_insecure=True, pc_id="node_loose")
        assert loose.wait_connected(10)
    assert any("TLS certificate checks are OFF" in r.getMessage() for r in caplog.records)


def test_loopback_ws_url_from_remote_api_warns(caplog) -> None:
    # Nothing may listen off loopback here, so the check itself is driven without a socket.
    from octohub_sync._transport.api_lookup import _fix_host
    from octohub_sync._node.assembly import NodeLog
    from octohub_sync._config.settings import load_settings

    caplog.set_level(logging.WARNING, logger="octohub_sync")
    log = NodeLog(logging.getLogger("octohub_sync"), {"pc_id": "node_x"})
    remote = load_settings({"api_url": "http://hub.example:8080"}, env_file=False, environ={})
    assert _fix_host("ws://localhost:8000/ws/node?a=1", remote, log) == "ws://localhost:8000/ws/node?a=1"
    assert any("OCTOHUB_WS_HOST=hub.example" in r.getMessage() for r in caplog.records)
    caplog.clear()
    local = load_settings({"api_url": "http://127.0.0.1:8080"}, env_file=False, environ={})
    _fix_host("ws://localhost:8000/ws/node", local, log)
    assert not caplog.records
    fixed = load_settings({"api_url": "http://hub.example:8080", "ws_host": "10.1.2.3"}, env_file=False, environ={})
    assert _fix_host("ws://localhost:8000/ws/node?a=1", fixed, log) == "ws://10.1.2.3:8000/ws/node?a=1"


def test_ws_host_overrides_a_wrong_host_in_ws_url(make_node) -> None:
    with LocalHub(KEY, ws_url_host="nowhere.invalid") as hub:
        broken = make_node(_hub=hub, pc_id="node_broken")
        assert wait_until(lambda: broken.stats()["connect_failures"] >= 1, 10)
        assert not broken.is_connected()
        broken.stop(5)
        fixed = make_node(_hub=hub, ws_host="127.0.0.1", pc_id="node_fixed")
        assert fixed.wait_connected(10)
        assert hub.connections[-1]["pc_id"] == "node_fixed"


def test_clock_skew_is_measured_and_warned(make_node, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    with LocalHub(KEY, clock_offset=120) as hub:
        client = make_node(_hub=hub)
        assert client.wait_connected(10)  # 120 s is within the hub's 300 s
        assert 115 <= client.stats()["clock_skew"] <= 125
    warned = [r.getMessage() for r in caplog.records if "clock differs" in r.getMessage()]
    assert warned and 118 <= int(re.search(r"by ([+-]\d+) s", warned[0]).group(1)) <= 122


def test_skew_beyond_300s_gives_401_with_skew_in_hint(make_node) -> None:
    with LocalHub(KEY, clock_offset=-400) as hub:
        client = make_node(_hub=hub)
        assert wait_until(lambda: client.stats()["connect_failures"] >= 1, 10)
        error = client.stats()["last_error"]
        assert "401" in error and "OCTOHUB_SIGNATURE_KEY" in error
        measured = int(re.search(r"measured skew ([+-]\d+) s", error).group(1))
        assert -402 <= measured <= -398


def test_tls_direct_mode_refuses_unknown_ca_at_the_websocket(make_node, ca: trustme.CA) -> None:
    with tls_hub(ca) as hub:
        client = make_node(_hub=hub, server_host="localhost", tls=True, connect_mode="direct")
        assert wait_until(lambda: client.stats()["connect_failures"] >= 1, 10)
        assert "CERTIFICATE_VERIFY_FAILED" in (client.stats()["last_error"] or "")
        assert not client.is_connected() and hub.connections == []
