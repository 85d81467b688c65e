"""One deadline for the whole connect (issue 28, point 5): real servers on 127.0.0.1 that answer a byte at a time.

A socket's timeout bounds one read; a server sending a byte every 0.3 s never trips a 1 s timeout,
and held an attempt for as long as its answer lasted (45 s here). OCTOHUB_CONNECT_TIMEOUT now
bounds the API request and the WebSocket handshake together; readiness names an attempt that
runs past it anyway (a SOCKS5 proxy's handshake, which python-socks reads with a timeout per read).
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from octohub_sync._ops.liveness import Attempt, readiness
from octohub_sync._ops.stats import NodeState

from .conftest import wait_until
from .hostile_server import DripServer, api_answer, handshake_answer, socks5_answer

pytestmark = pytest.mark.timeout(40)

TIMEOUT = 1.0  # OCTOHUB_CONNECT_TIMEOUT of these nodes
EVERY = 0.3  # seconds between two bytes of the dripping answers
#: How long past the deadline an attempt may stay: the server sees the cut within one EVERY; a loaded machine.
SLACK = 1.0


def test_a_dripping_api_answer_holds_an_attempt_no_longer_than_the_deadline(make_node: Any) -> None:
    with DripServer(api_answer("ws://127.0.0.1:9/ws/node"), EVERY) as api:
        node = make_node(server_port=api.port, connect_timeout=TIMEOUT)
        assert wait_until(lambda: api.held, TIMEOUT + SLACK + 5), "the attempt outlived its deadline"
        assert api.held[0] < TIMEOUT + SLACK
        assert wait_until(lambda: node.stats()["connect_failures"] >= 1, 5)
        error = node.stats()["last_error"] or ""
        assert "did not finish within OCTOHUB_CONNECT_TIMEOUT (1 s)" in error and "API request" in error


def test_a_dripping_websocket_handshake_holds_an_attempt_no_longer_than_the_deadline(make_node: Any) -> None:
    with DripServer(handshake_answer, EVERY) as hub:
        node = make_node(connect_mode="direct", ws_port=hub.port, connect_timeout=TIMEOUT)
        assert wait_until(lambda: hub.held, TIMEOUT + SLACK + 5), "the attempt outlived its deadline"
        assert hub.held[0] < TIMEOUT + SLACK
        assert wait_until(lambda: node.stats()["connect_failures"] >= 1, 5)
        assert "the WebSocket handshake did not finish within OCTOHUB_CONNECT_TIMEOUT (1 s)" in (
            node.stats()["last_error"] or "")


def test_readiness_names_an_attempt_past_its_deadline(make_node: Any) -> None:
    # A SOCKS5 proxy answering a byte every 0.3 s: python-socks bounds each read, not the handshake.
    with DripServer(socks5_answer, EVERY, read=lambda sock: sock.recv(3)) as proxy:
        node = make_node(connect_mode="direct", proxy=f"socks5://127.0.0.1:{proxy.port}", connect_timeout=TIMEOUT)
        assert wait_until(lambda: "past its 1 s deadline" in node.readiness().reason, TIMEOUT + 3), node.readiness()
        verdict = node.readiness()
        assert not verdict.ok and verdict.reason.startswith("connecting: attempt 1 running for ")


def test_readiness_of_an_attempt() -> None:
    late = readiness(NodeState.CONNECTING, ready=False, silent_for=None, ping_interval=30,
                     attempt=Attempt(3, 12.34, 5.0))
    assert late == (False, "connecting: attempt 3 running for 12.3 s, past its 5 s deadline (OCTOHUB_CONNECT_TIMEOUT)")
    on_time = readiness(NodeState.CONNECTING, ready=False, silent_for=None, ping_interval=30,
                        attempt=Attempt(3, 1.0, 5.0))
    assert on_time == (False, "the node is connecting")


#: A TLS record header announcing 16 KiB, then its bytes: a TLS handshake that never finishes in time.
TLS_RECORD = b"\x16\x03\x03\x40\x00" + b"\x02" * 16384


def test_a_dripping_tls_handshake_of_the_api_holds_an_attempt_no_longer_than_the_deadline(make_node: Any) -> None:
    # (The WebSocket's own TLS handshake was bounded as a whole already: Python's ssl gives one call one deadline.)
    with DripServer(lambda hello: TLS_RECORD, EVERY, read=lambda sock: sock.recv(65536)) as server:
        node = make_node(api_url=f"https://127.0.0.1:{server.port}", connect_timeout=TIMEOUT)
        assert wait_until(lambda: server.held, TIMEOUT + SLACK + 5), "the attempt outlived its deadline"
        assert server.held[0] < TIMEOUT + SLACK
        assert wait_until(lambda: node.stats()["connect_failures"] >= 1, 5)
        assert "API request" in (node.stats()["last_error"] or "")
        assert "did not finish within OCTOHUB_CONNECT_TIMEOUT (1 s)" in (node.stats()["last_error"] or "")


def test_stop_does_not_wait_for_a_dripping_api(make_node: Any) -> None:
    with DripServer(api_answer("ws://127.0.0.1:9/ws/node"), EVERY) as api:
        node = make_node(server_port=api.port, connect_timeout=30)
        assert api.accepted.wait(5)
        started = time.monotonic()
        node.stop(timeout=5)
        assert time.monotonic() - started < 3
        assert wait_until(lambda: api.held, 3)
