"""The key and every signature stay out of every log record, at every level, of every logger.

Each test captures all records of all loggers (the node's, the local hub's, websocket-client,
websockets, requests/urllib3) at DEBUG during a whole session, then checks the formatted
records against the key and every signature the hub saw or issued: secrets never reach a log line.
"""
from __future__ import annotations

import logging
import re
import time
import traceback
from typing import Any, Iterator, Optional
from urllib.parse import quote

import pytest

from octohub_sync import ConfigError, NodeWebSocketClient, load_settings
from octohub_sync._wire import signing
from octohub_sync._config.settings import require_key
from octohub_sync.hub import LocalHub

from .conftest import wait_until

pytestmark = pytest.mark.timeout(30)

SECRET_KEY = "Zq9-octohub-SECRET-k3y-7f3a9c1e5b2d4f60"
WRONG_KEY = "wrong-key-Xv8-NOT-the-hub-s-Kp2m6w4r0t"

#: "signature=" followed by anything but the "***" of signing.redact().
UNREDACTED = re.compile(r"signature=[^*]", re.IGNORECASE)

#: LogRecord attributes that are not "extra" fields.
_STANDARD = set(vars(logging.LogRecord("n", logging.DEBUG, "p", 1, "m", None, None))) | {"message", "asctime"}


class Capture(logging.Handler):
    """Every record of every logger, formatted at emit time (with traceback and stack)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.started = time.time()
        self.keys: set[str] = set()
        self.hubs: list[LocalHub] = []
        self.pc_ids: set[str] = set()
        self._formatter = logging.Formatter("%(name)s %(levelname)s %(threadName)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self._formatter.format(record)
        except Exception:  # a broken record is still checked, through its raw parts
            text = f"<unformattable> {record.msg!r} {record.args!r} {traceback.format_exc()}"
        extras = " ".join(f"{k}={v!r}" for k, v in vars(record).items() if k not in _STANDARD)
        self.texts.append(f"{text} {extras}".rstrip())

    def watch(self, hub: LocalHub, *keys: str) -> LocalHub:
        """Collect the signatures of ``hub`` and the given keys at check time."""
        self.hubs.append(hub)
        self.keys.update(keys)
        return hub

    # -- what must never show up --------------------------------------------------------

    def secrets(self) -> set[str]:
        values: set[str] = set()
        for key in self.keys:
            # Any 12 characters of the key in a row count as the key.
            values.update(key[i:i + 12] for i in range(len(key) - 11))
        pc_ids = set(self.pc_ids)
        for hub in self.hubs:
            pc_ids.update(c["pc_id"] for c in hub.connections)
            for request in hub.api_requests:
                headers = {k.lower(): v for k, v in request["headers"].items()}
                if headers.get("x-signature"):
                    values.add(headers["x-signature"])
                if request["params"].get("pc_id"):
                    pc_ids.add(request["params"]["pc_id"])
        # wsUrl signatures: issued by the hub (its key), or self-signed in direct mode (any key
        # a node held), for every second of the test.
        offsets = {int(hub.clock_offset) for hub in self.hubs} | {0}
        first, last = int(self.started) - 5, int(time.time()) + 5
        for key in self.keys:
            for pc_id in pc_ids:
                for ts in range(first + min(offsets), last + max(offsets)):
                    values.add(signing.sign_ws(key, pc_id, ts))
        needles = set()
        for value in values:
            needles.update({value, quote(value, safe=""), value[:16]})
        return needles

    def leaks(self) -> list[str]:
        needles = self.secrets()
        joined = "\n".join(self.texts)
        found = [n for n in needles if n in joined]
        bad = [t for t in self.texts if UNREDACTED.search(t) or any(n in t for n in found)]
        return bad

    def assert_clean(self) -> None:
        assert self.texts, "nothing was captured: the capture is broken"
        bad = self.leaks()
        assert not bad, f"{len(bad)} log record(s) carry a secret, e.g.:\n" + "\n".join(t[:500] for t in bad[:5])


@pytest.fixture
def capture() -> Iterator[Capture]:
    """Route every logger to one DEBUG handler on the root logger; restore everything after.

    Requested first by the tests, so it is torn down last: the final check also covers
    the nodes' and hubs' shutdown.
    """
    root = logging.getLogger()
    handler = Capture()
    saved_root = root.level
    saved_disable = logging.root.manager.disable
    saved: dict[str, tuple[int, bool, bool]] = {}
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger):
            saved[name] = (lg.level, lg.propagate, lg.disabled)
            lg.setLevel(logging.NOTSET)  # inherit DEBUG from the root
            lg.propagate = True
            lg.disabled = False
    logging.disable(logging.NOTSET)
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_root)
        logging.disable(saved_disable)
        for name, (level, propagate, disabled) in saved.items():
            lg = logging.root.manager.loggerDict.get(name)
            if isinstance(lg, logging.Logger):
                lg.setLevel(level)
                lg.propagate = propagate
                lg.disabled = disabled
    handler.assert_clean()


@pytest.fixture
def secret_hub(capture: Capture) -> Iterator[LocalHub]:
    with LocalHub(SECRET_KEY) as h:
        yield capture.watch(h, SECRET_KEY)


def start(make_node: Any, hub: LocalHub, capture: Capture, **overrides: Any) -> NodeWebSocketClient:
    node = make_node(_hub=hub, **overrides)
    capture.pc_ids.add(node.pc_id)
    capture.keys.add(node.settings.signature_key)
    return node


def connections_of(hub: LocalHub, pc_id: str) -> list[dict]:
    return [c for c in hub.connections if c["pc_id"] == pc_id]


def reconnected(node: NodeWebSocketClient, hub: LocalHub, count: int, timeout: float = 5) -> bool:
    return wait_until(lambda: len(connections_of(hub, node.pc_id)) >= count and node.is_connected()
                      and hub.connected(node.pc_id), timeout)


def run_some_tasks(node: NodeWebSocketClient, hub: LocalHub) -> None:
    ok = hub.wait_result(hub.send_task("echo", {"a": 1}, pc_id=node.pc_id), 5)
    assert ok["status"] == "completed"
    assert hub.wait_result(hub.send_task("no_such_type", {}, pc_id=node.pc_id), 5)["status"] == "failed"
    assert hub.wait_result(hub.send_task("sleep", {"sleep_time": 0.1}, pc_id=node.pc_id), 5)["status"] == "completed"
    hub.send_json_ping(node.pc_id)
    hub.send_message({"type": "something_else"}, pc_id=node.pc_id)
    hub.send_raw("{bad frame", pc_id=node.pc_id)


def requests_of(hub: LocalHub, pc_id: str, status: Optional[int] = None) -> list[dict]:
    return [r for r in hub.api_requests if r["params"].get("pc_id") == pc_id
            and (status is None or r["status"] == status)]


# -- sessions --------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["seed", "go"])
def test_session_with_drops_and_reconnects(capture: Capture, make_node: Any, dialect: str) -> None:
    with LocalHub(SECRET_KEY, dialect=dialect) as hub:
        capture.watch(hub, SECRET_KEY)
        node = start(make_node, hub, capture, pc_id="node_secret1")
        assert node.wait_connected(5) and hub.wait_connected(node.pc_id, 5)
        run_some_tasks(node, hub)
        assert hub.drop(node.pc_id) == 1  # TCP abort, no close frame
        assert reconnected(node, hub, 2), node.stats()
        run_some_tasks(node, hub)
        assert hub.close_connections(node.pc_id) == 1  # clean close handshake
        assert reconnected(node, hub, 3), node.stats()
        hub.stop_ws()  # the API still hands out addresses that refuse connections
        assert wait_until(lambda: node.stats()["connect_failures"] >= 1, 5), node.stats()
        hub.start_ws()
        assert reconnected(node, hub, 4), node.stats()
        assert hub.wait_result(hub.send_task("echo", {}, pc_id=node.pc_id), 5)["status"] == "completed"
        assert len(requests_of(hub, node.pc_id, 200)) >= 4
        assert node.stop(timeout=5)
    # The capture really saw the wire: the hub's websockets logger printed the signed URL, redacted.
    assert any("signature=***" in text for text in capture.texts)
    capture.assert_clean()


def test_wrong_key_api_401(capture: Capture, secret_hub: LocalHub, make_node: Any) -> None:
    node = start(make_node, secret_hub, capture, signature_key=WRONG_KEY, pc_id="node_wrongkey")
    assert wait_until(lambda: len(requests_of(secret_hub, node.pc_id, 401)) >= 3, 8), secret_hub.api_requests
    assert not node.is_connected()
    assert "401" in (node.stats()["last_error"] or "")
    node.stop(timeout=5)
    capture.assert_clean()


def test_wrong_key_direct_mode_handshake_401(capture: Capture, secret_hub: LocalHub, make_node: Any) -> None:
    node = start(make_node, secret_hub, capture, signature_key=WRONG_KEY, pc_id="node_wrongdirect",
                 connect_mode="direct")
    assert wait_until(lambda: secret_hub.handshakes_rejected >= 3, 8), node.stats()
    assert not node.is_connected()
    node.stop(timeout=5)
    capture.assert_clean()


@pytest.mark.parametrize("fault", ["garbage", "500", "html", "401", "timeout"])
def test_api_faults(capture: Capture, secret_hub: LocalHub, make_node: Any, fault: str) -> None:
    secret_hub.api_fault = fault
    node = start(make_node, secret_hub, capture, pc_id=f"node_fault{fault}", connect_timeout=1.0)
    assert wait_until(lambda: node.stats()["connect_failures"] >= 2, 8), node.stats()
    assert len(requests_of(secret_hub, node.pc_id)) >= 2
    secret_hub.api_fault = None
    assert node.wait_connected(5), node.stats()
    assert secret_hub.wait_result(secret_hub.send_task("echo", {}, pc_id=node.pc_id), 5)["status"] == "completed"
    assert node.stop(timeout=5)
    capture.assert_clean()


def test_direct_mode_session(capture: Capture, secret_hub: LocalHub, make_node: Any) -> None:
    node = start(make_node, secret_hub, capture, pc_id="node_direct", connect_mode="direct")
    assert node.wait_connected(5) and secret_hub.wait_connected(node.pc_id, 5)
    assert not requests_of(secret_hub, node.pc_id)  # no API in direct mode
    run_some_tasks(node, secret_hub)
    assert secret_hub.drop(node.pc_id) == 1
    assert reconnected(node, secret_hub, 2), node.stats()
    secret_hub.ws_fault = "401"
    assert secret_hub.drop(node.pc_id) == 1
    assert wait_until(lambda: secret_hub.handshakes_rejected >= 1, 5)
    secret_hub.ws_fault = None
    assert reconnected(node, secret_hub, 3), node.stats()
    assert node.stop(timeout=5)
    assert any("signature=***" in text for text in capture.texts)
    capture.assert_clean()


def test_capture_sees_what_it_must_catch(capture: Capture) -> None:
    """The check itself: a leaked key, X-Signature or signature= value is found."""
    capture.keys.add(SECRET_KEY)
    logging.getLogger("some.library").debug("using key %s", SECRET_KEY[5:20])
    assert capture.leaks()
    capture.texts.clear()
    logging.getLogger("octohub_sync.x").debug("url ws://h/ws/node?pc_id=a&timestamp=1&signature=%s", "ab12")
    assert capture.leaks()
    capture.texts.clear()
    try:
        raise RuntimeError(f"boom {signing.sign_ws(SECRET_KEY, 'node_x', int(time.time()))}")
    except RuntimeError:
        logging.getLogger("x").exception("failed")
    capture.pc_ids.add("node_x")
    assert capture.leaks()
    capture.texts.clear()
    logging.getLogger("x").info("redacted: %s", signing.redact("ws://h/?signature=abc&x=1"))
    assert not capture.leaks()


# -- objects that may end up in a log line or a traceback --------------------------------------


def test_config_error_and_settings_hide_the_key(tmp_path: Any) -> None:
    error = ConfigError("OCTOHUB_SIGNATURE_KEY", SECRET_KEY, "too short")
    for text in (str(error), repr(error), repr(error.args), "".join(traceback.format_exception_only(type(error), error))):
        assert SECRET_KEY not in text and SECRET_KEY[:12] not in text

    with pytest.raises(ConfigError) as missing:
        require_key(load_settings({}, env_file=False, environ={}))
    assert "OCTOHUB_SIGNATURE_KEY" in str(missing.value)

    env = {"OCTOHUB_SIGNATURE_KEY": SECRET_KEY, "OCTOHUB_PING_TIMEOUT": "99"}
    with pytest.raises(ConfigError) as other:
        load_settings({}, env_file=False, environ=env)
    assert SECRET_KEY not in str(other.value) and SECRET_KEY not in repr(other.value)

    dotenv = tmp_path / "node.env"
    dotenv.write_text(f"OCTOHUB_SIGNATURE_KEY={SECRET_KEY}\nOCTOHUB_MAX_WORKERS=many\n")
    with pytest.raises(ConfigError) as from_file:
        load_settings({}, env_file=dotenv, environ={})
    assert SECRET_KEY not in str(from_file.value) and SECRET_KEY not in repr(from_file.value)

    settings = load_settings({"signature_key": SECRET_KEY}, env_file=False, environ={})
    assert settings.signature_key == SECRET_KEY
    for text in (str(settings), repr(settings), repr(settings.masked()), repr(settings.sources)):
        assert SECRET_KEY not in text and SECRET_KEY[:12] not in text

    client = NodeWebSocketClient(settings=settings)
    assert SECRET_KEY not in repr(client) and SECRET_KEY not in str(client.stats())

