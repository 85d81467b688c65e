"""Plaintext paths (issue 28, point 4): no silent downgrade with TLS on, a warning for a remote plaintext hub."""
from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest
import trustme

from octohub_sync._transport.api_lookup import plaintext_host
from octohub_sync._node.assembly import NodeLog
from octohub_sync._node.connection_log import ConnectionLog
from octohub_sync.hub import LocalHub
from octohub_sync._ops.stats import Stats

from .conftest import KEY, wait_until

pytestmark = pytest.mark.timeout(30)


class DowngradingHub(LocalHub):
    """An HTTPS API that hands out the plaintext ``ws://`` address of another hub (``plain``)."""

    def __init__(self, *args: Any, plain: LocalHub, **kwargs: Any) -> None:
        self.plain = plain
        super().__init__(*args, **kwargs)

    def ws_url(self, pc_id: str) -> str:
        return self.plain.ws_url(pc_id)


def test_with_tls_on_a_ws_address_from_the_api_is_refused_naming_the_scheme(make_node: Any, tmp_path: Any,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    with LocalHub(KEY) as plain, DowngradingHub(KEY, plain=plain, ssl_context=server) as api:
        node = make_node(_hub=api, server_host="localhost", tls=True, ca_file=str(ca_file))
        assert wait_until(lambda: node.stats()["connect_failures"] >= 1, 10)
        error = node.stats()["last_error"] or ""
        assert "scheme 'ws'" in error and "TLS is on (OCTOHUB_TLS=true)" in error and "refused" in error
        assert not node.is_connected() and not plain.connections  # nothing went over the plaintext path
    assert any("scheme 'ws'" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_loopback_plaintext_hub_logs_no_warning(make_node: Any, hub: LocalHub,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    node = make_node()
    assert node.wait_connected(10)
    assert not [r for r in caplog.records if "without TLS" in r.getMessage()]


@pytest.mark.parametrize(("url", "host"), [
    ("http://hub.example:8080", "hub.example"),
    ("ws://10.1.2.3:8000/ws/node?signature=abc", "10.1.2.3"),
    ("ws://[2001:db8::1]:8000/ws/node", "2001:db8::1"),
    ("https://hub.example", None),
    ("wss://hub.example/ws/node", None),
    ("http://127.0.0.1:8080", None),
    ("ws://localhost:8000/ws/node", None),
    ("ws://[::1]:8000/ws/node", None),
])
def test_plaintext_host(url: str, host: str) -> None:
    assert plaintext_host(url) == host


def test_a_plaintext_remote_address_is_one_warning_without_the_signature(caplog: pytest.LogCaptureFixture) -> None:
    # Nothing may listen off loopback here, so the check itself is driven without a socket.
    caplog.set_level(logging.DEBUG, logger="octohub_sync")
    node_log = NodeLog(logging.getLogger("octohub_sync"), {"pc_id": "node_x"})
    log = ConnectionLog(pc_id="node_x", stats=Stats(), log=node_log)
    log.address("https://hub.example:8443")
    log.address("ws://127.0.0.1:8000/ws/node?signature=abc")
    assert not caplog.records
    log.address("http://hub.example:8080")
    log.address("ws://hub.example:8000/ws/node?signature=abc")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "hub.example without TLS (http://)" in warnings[0].getMessage()
    assert "OCTOHUB_TLS=true" in warnings[0].getMessage()
    assert "signature" not in "".join(r.getMessage() for r in caplog.records)
