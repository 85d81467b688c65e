"""``run_node.py --check``: walk through what a node does to connect, and say what is wrong.

This is program code (the CLI's), so it prints. It never prints the key, nor a
signed address without :func:`signing.redact`.
"""
from __future__ import annotations

import logging
import socket
import ssl
import sys
import time
from typing import Any, Optional, TextIO
from urllib.parse import urlsplit

import requests
import websocket

from .._config.identity import PcId, resolve_pc_id
from .._config.proxies import mask
from .._config.settings import Settings
from .._transport.api_lookup import (SKEW_WARNING, Address, direct_key_origin, loopback_pitfall, resolve_address,
                                     ssl_context)
from .._transport.tunnel import open_socket
from .._wire import protocol
from .._wire.addresses import host_for_url, port_of
from .._wire.signing import MAX_SKEW, redact
from ..exceptions import ApiError, AuthError, ProtocolError, ProxyError
from ._exit_codes import ExitCode

__all__ = ["run_check"]

logger = logging.getLogger(__name__)

#: Exit codes, as in cli.py.

#: Added to the pc_id for the test connection: the hub keeps one connection per pc_id and drops the
#: older one when another connects (docs/protocol.md §5), so checking with the node's own id would
#: disconnect a node that is running with it.
CHECK_SUFFIX = "_check"

_KEY_FIX = "set OCTOHUB_SIGNATURE_KEY to the hub's key and keep this machine's clock synchronised (NTP)"
_WS_KEY_FIX = {
    "direct": "set OCTOHUB_WS_SIGNATURE_KEY to the WebSocket server's key (websocket.signature.secret.key, the Go "
              "server's signature.key; it may differ from the API server's) and keep this machine's clock "
              "synchronised (NTP)",
    "api": "the API server signed this address, so OCTOHUB_SIGNATURE_KEY is right; the hub's API server and "
           "WebSocket server disagree on the WebSocket key (websocket.signature.secret.key vs the Go server's "
           "signature.key), or their clocks differ by more than 300 s",
}


class _StepFailed(Exception):
    """One check failed; ``hint`` is the likely fix."""

    def __init__(self, step: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.step, self.message, self.hint = step, message, hint


class _Printer:
    """Check marks when the terminal can show them, ASCII otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.encoding = getattr(out, "encoding", None) or "utf-8"  # StringIO has none: any text goes
        try:
            "✓✗⚠–".encode(self.encoding)
            self.marks = {"ok": "✓", "fail": "✗", "warn": "⚠", "skip": "–"}
        except (LookupError, UnicodeEncodeError):
            self.encoding = "ascii"
            self.marks = {"ok": "[ok]", "fail": "[FAIL]", "warn": "[warn]", "skip": "[skip]"}

    def line(self, text: str = "") -> None:
        # A hub's message may be Chinese and the terminal ASCII: degrade the text, never crash the check.
        text = redact(text).encode(self.encoding, "backslashreplace").decode(self.encoding)
        print(text, file=self.out, flush=True)

    def mark(self, kind: str, step: str, text: str) -> None:
        self.line(f"{self.marks[kind]} {step}: {text}")

    def note(self, text: str) -> None:
        self.line(f"    {self.marks['warn']} {text}")


def run_check(settings: Settings, *, out: Optional[TextIO] = None) -> int:
    """Print the configuration, then check key, API and WebSocket step by step.

    Args:
        settings: the node's settings, as the node would use them.
        out: where to print (default standard output).

    Returns:
        0 when every step passed, else 1; the last line then names the failed step and the likely fix.
    """
    p = _Printer(out or sys.stdout)
    # Only looks: the node's first start writes the identity file, not a check.
    identity = resolve_pc_id(pc_id=settings.pc_id, instance=settings.instance, state_dir=settings.state_dir,
                             save=False, log=logger)
    pc_id = identity.value
    _print_settings(settings, identity, p)
    check_id = pc_id + CHECK_SUFFIX
    try:
        _check_key(settings, p)
        address = _check_api(settings, check_id, p)
        _check_websocket(settings, address, p)
    except _StepFailed as failure:
        p.mark("fail", failure.step, failure.message)
        p.line()
        p.line(f"FAILED at step '{failure.step}': {failure.message}. Likely fix: {failure.hint}")
        return ExitCode.FAILED
    p.line()
    p.line(f"all checks passed: node {pc_id} can connect")
    return ExitCode.OK


def _print_settings(settings: Settings, identity: PcId, p: _Printer) -> None:
    p.line("Configuration (value [source]):")
    shown = settings.masked()
    width = max(len(name) for name in shown)
    for name, (value, source) in shown.items():
        p.line(f"  {name:<{width}} = {'(not set)' if value == 'None' else value} [{source}]")
    env = settings.environment  # read only while OCTOHUB_PROXY is unset
    shown_env = [(env.names[key], mask(env.urls[key])) for key in ("https", "http", "all") if key in env.urls]
    for name, value in shown_env + ([(env.names["no"], env.no_proxy)] if env.no_proxy else []):
        p.line(f"  {name:<{width}} = {value} [environment]")
    instance = f", instance {settings.instance!r}" if settings.instance and not settings.pc_id else ""
    p.line(f"  pc_id in use: {identity.value} ({identity.describe()}{instance})")
    for warning in settings.warnings:  # an unknown OCTOHUB_* name: the default above is in force
        p.note(warning)
    p.line()


def _check_key(settings: Settings, p: _Printer) -> None:
    # The real hub has two keys: the API server's signs API requests, the WebSocket server's signs
    # the WebSocket URL (which only a node in direct mode signs itself).
    if settings.connect_mode == "direct":
        name = "OCTOHUB_WS_SIGNATURE_KEY" if settings.ws_signature_key else "OCTOHUB_SIGNATURE_KEY"
        key, role = settings.ws_key, "the WebSocket server's key (websocket.signature.secret.key, the Go server's signature.key)"
    else:
        name, key, role = "OCTOHUB_SIGNATURE_KEY", settings.signature_key, "the API server's key (signature.secret.key)"
    if not key:
        raise _StepFailed("key", f"{name} is not set", f"set it to {role} (environment, .env or a flag)")
    p.mark("ok", "key", f"{name} is set ({len(key)} characters); it must be {role}")
    if settings.uses_public_key:
        p.note("it is the public example key from env.example: anyone can impersonate the hub's nodes; "
               "use a secret key in production")


def _check_api(settings: Settings, check_id: str, p: _Printer) -> Address:
    log = logging.LoggerAdapter(logger, {})
    p.line(f"Checking as pc_id {check_id}, not the node's own pc_id: the hub keeps one connection per "
           "pc_id, so using the node's id would disconnect the node if it is running")
    with requests.Session() as session:
        if settings.connect_mode == "direct":
            p.mark("skip", "API", "skipped (OCTOHUB_CONNECT_MODE=direct: the node signs the WebSocket address itself)")
            return resolve_address(settings, check_id, session, log)
        p.line(f"    proxy for the API: {settings.route(settings.api_base)}")
        try:
            address = resolve_address(settings, check_id, session, log)
        except ProxyError as exc:
            raise _StepFailed("API", str(exc), exc.hint) from None
        except AuthError as exc:
            raise _StepFailed("API", str(exc), exc.hint or _KEY_FIX) from None
        except ApiError as exc:
            raise _StepFailed("API", str(exc), exc.hint or (
                "the server answered, but not as the OctoHub API: check that OCTOHUB_SERVER_PORT "
                "(or OCTOHUB_API_URL) points at the API server, not the WebSocket server or a proxy")) from None
    p.mark("ok", "API", f"GET {settings.api_base}/node/ws answered in {_ms(address.api_seconds)}")
    _report_skew(address.skew, p)
    p.line(f"    WebSocket address: {redact(address.url)}")
    if loopback_pitfall(settings, address.url):
        p.note(f"the API at {urlsplit(settings.api_base).hostname} handed out an address on this machine "
               f"({urlsplit(address.url).hostname}): the hub's wsUrl setting is probably left at its default; "
               "set OCTOHUB_WS_HOST if the next step fails")
    return address


def _report_skew(skew: Optional[float], p: _Printer, source: str = "the API's Date header") -> None:
    if skew is None:
        p.note("clock: the API sent no Date header, so the clock difference is unknown")
        return
    text = f"clock: the hub's clock differs from this machine's by {skew:+.1f} s ({source}, 1 s resolution)"
    if abs(skew) > SKEW_WARNING:
        p.note(f"{text}; signatures older than {MAX_SKEW} s are refused: synchronise the clock (NTP)")
    else:
        p.line(f"    {text}")


def _check_websocket(settings: Settings, address: Address, p: _Printer) -> None:
    parts = urlsplit(address.url)
    where = f"{host_for_url(parts.hostname or '')}:{port_of(parts)}"
    route = settings.route(address.url)
    p.line(f"    proxy for the WebSocket: {route}")
    started = time.monotonic()
    try:
        # The node's own way to the hub (proxy, TLS, one deadline), then websocket-client's handshake on it.
        sock = open_socket(address.url, proxy=route.proxy, timeout=settings.connect_timeout,
                           ssl_context=ssl_context(settings) if parts.scheme == "wss" else None)
        try:
            ws = websocket.create_connection(address.url, socket=sock, timeout=sock.gettimeout())
        except BaseException:
            sock.close()
            raise
    except Exception as exc:  # every way a handshake can fail is a finding to explain
        raise _StepFailed("WebSocket", f"connecting to {parts.scheme}://{where} failed: {_describe(exc)}",
                         _ws_hint(exc, settings, address.url, where)) from None
    opened = time.monotonic()
    try:
        message = _wait_connected(ws, settings, started + settings.connect_timeout)
    finally:
        ws.close(status=websocket.STATUS_NORMAL, timeout=1.0)
    if message is None:
        raise _StepFailed("WebSocket", f"no 'connected' message within {settings.connect_timeout:g} s of the handshake",
                         "check that the address is the OctoHub WebSocket server (path /ws/node), "
                         "not another WebSocket service")
    p.mark("ok", "WebSocket", f"{parts.scheme}://{where} confirmed the connection in {_ms(time.monotonic() - started)} "
           f"(handshake {_ms(opened - started)})")
    server_time = message.fields.get("server_time")
    if address.skew is None and isinstance(server_time, (int, float)) and not isinstance(server_time, bool):
        _report_skew(server_time - time.time(), p, "server_time of the 'connected' message")


def _wait_connected(ws: Any, settings: Settings, deadline: float) -> Optional[protocol.Message]:
    """Read frames until the hub's ``connected`` confirmation (None at the deadline)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ws.settimeout(left)
        try:
            frame = ws.recv()
        except (websocket.WebSocketTimeoutException, socket.timeout):
            return None
        except (websocket.WebSocketException, OSError) as exc:
            raise _StepFailed("WebSocket", f"the hub closed the connection before confirming it ({_describe(exc)})",
                             "a hub that drops a signed connection at once may refuse this pc_id; see its log") from None
        try:
            message = protocol.decode(frame, max_bytes=settings.max_message_bytes)
        except ProtocolError:
            continue  # not the confirmation; the node itself skips such frames too
        if message.kind == "connected":
            return message


def _describe(exc: BaseException) -> str:
    if isinstance(exc, websocket.WebSocketBadStatusException):
        return f"HTTP {exc.status_code} {getattr(exc, 'status_message', '') or ''}".strip()  # absent in some websocket-client releases
    text = str(exc)
    return redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _ws_hint(exc: BaseException, settings: Settings, url: str, where: str) -> str:
    mismatch = loopback_pitfall(settings, url)
    if isinstance(exc, ProxyError):
        return exc.hint
    if isinstance(exc, websocket.WebSocketBadStatusException):
        if exc.status_code == 401:
            fix = _WS_KEY_FIX[settings.connect_mode]
            if settings.connect_mode == "direct":  # the key this node signed with, and where it came from
                fix += f" (this node signed with {direct_key_origin(settings)})"
            return "the WebSocket server refused the signature: " + fix
        return f"check that {where} is the OctoHub WebSocket server (path /ws/node)"
    if isinstance(exc, ssl.SSLError):
        return "TLS failed: set OCTOHUB_CA_FILE to the CA bundle that signed the hub's certificate (or check OCTOHUB_TLS)"
    if isinstance(exc, (socket.timeout, websocket.WebSocketTimeoutException)):
        return (f"no answer within OCTOHUB_CONNECT_TIMEOUT={settings.connect_timeout:g} s: "
                f"check the network and firewalls between this machine and {where}")
    if mismatch:
        return (f"the API handed out an address on the hub's own loopback ({where}); set OCTOHUB_WS_HOST to the "
                f"hub's address (e.g. {urlsplit(settings.api_base).hostname}) or fix the hub's wsUrl setting")
    if isinstance(exc, (socket.gaierror, websocket.WebSocketAddressException)):
        return f"cannot resolve {urlsplit(url).hostname}: check OCTOHUB_SERVER_HOST / OCTOHUB_WS_HOST"
    if isinstance(exc, ConnectionRefusedError):
        if settings.connect_mode == "direct":
            return f"nothing listens on {where}: check OCTOHUB_SERVER_HOST / OCTOHUB_WS_PORT and that the WebSocket server runs"
        return f"nothing listens on {where}, the address the API handed out: check the hub's wsUrl setting or set OCTOHUB_WS_HOST"
    return f"check the network and firewalls between this machine and {where}"


def _ms(seconds: Optional[float]) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.0f} ms"
