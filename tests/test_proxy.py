"""Proxies: the node behind real proxy servers on 127.0.0.1, and the rules that choose a proxy.

The servers are real, from well-kept packages, each in its own process on 127.0.0.1, port 0:
proxy.py for HTTP CONNECT (with and without basic auth), pproxy for SOCKS5. That traffic went
through them is shown twice: the operating system lists no socket of this process to the hub's
ports (the hub runs in this process, so a direct connection would show up), and the proxy's own
log names the hub's address.
"""
from __future__ import annotations

import io
import itertools
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Optional

import psutil
import pytest
import requests
import trustme

from octohub_sync import load_settings
from octohub_sync.cli import main as cli_main
from octohub_sync.cli._doctor import run_check
from octohub_sync.exceptions import ConfigError, ProxyError
from octohub_sync.hub import LocalHub
from octohub_sync._config.proxies import EnvironmentProxies, Proxy, bypasses, route
from octohub_sync._transport.tunnel import open_socket

from .conftest import KEY, wait_until

USER, PASSWORD = "proxyuser", "pr0xy-s3cret"
WRONG = "wr0ng-s3cret"


# -- real proxy servers in their own processes ---------------------------------------------------

class ProxyProcess:
    """A proxy server program on 127.0.0.1, its log in a file; :meth:`stop` kills its process group."""

    def __init__(self, argv: list[str], workdir: Path, port: Callable[[], Optional[int]]) -> None:
        self.log_path = workdir / "proxy.log"
        env = {**os.environ, "HOME": str(workdir)}  # proxy.py makes ~/.proxy: keep it in tmp_path
        for name in [n for n in env if n.lower().endswith("_proxy")]:
            del env[name]  # the proxy itself goes direct
        with open(self.log_path, "wb") as log:
            # Its own session: stop() ends the server and any worker processes it forked, and only those.
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=workdir, env=env, start_new_session=True)
        if not wait_until(lambda: port() is not None or self.process.poll() is not None, 15) or port() is None:
            self.stop()
            raise RuntimeError(f"proxy did not start: {self.log()}")
        self.port: int = port()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, scheme: str = "http", user: Optional[str] = None, password: Optional[str] = None) -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}"

    def saw(self, port: int) -> bool:
        """The proxy's log names a connection to 127.0.0.1:``port``."""
        return re.search(rf"127\.0\.0\.1:{port}\b", self.log()) is not None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def proxies(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """Start proxies: ``proxies("http", auth=True)`` (proxy.py) or ``proxies("socks5", ...)`` (pproxy)."""
    started: list[ProxyProcess] = []

    def start(kind: str = "http", *, auth: bool = False) -> ProxyProcess:
        workdir = tmp_path / f"proxy{len(started)}"
        workdir.mkdir()
        if kind == "http":
            port_file = workdir / "port"
            argv = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0",
                    "--port-file", str(port_file), "--num-acceptors", "1", "--num-workers", "1",
                    "--data-dir", str(workdir)] + (["--basic-auth", f"{USER}:{PASSWORD}"] if auth else [])

            def port() -> Optional[int]:
                text = port_file.read_text() if port_file.exists() else ""
                return int(text.split()[0]) if text.endswith("\n") else None  # written whole
        else:
            listen = "socks5://127.0.0.1:0" + (f"#{USER}:{PASSWORD}" if auth else "")
            # -v logs every connection; --auth 0: no "this IP authenticated before" shortcut.
            argv = [sys.executable, "-u", "-m", "pproxy", "-l", listen, "-v", "--auth", "0"]

            def port() -> Optional[int]:
                found = re.search(r"Serving on .*?127\.0\.0\.1:(\d+)", (workdir / "proxy.log").read_text())
                return int(found.group(1)) if found else None
        server = ProxyProcess(argv, workdir, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def direct_sockets(*ports: int) -> list:
    """This process's TCP connections to any of ``ports`` on the other end (the hub's, if direct)."""
    process = psutil.Process()
    connections = process.net_connections("tcp") if hasattr(process, "net_connections") else process.connections("tcp")
    return [c for c in connections if c.raddr and c.raddr.port in ports]


def serves_a_task(client, hub: LocalHub) -> bool:
    assert client.wait_connected(15), client.stats()
    return hub.wait_result(hub.send_task("echo", {"via": "proxy"}), timeout=10)["status"] == "completed"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_hub(ca: trustme.CA) -> Iterator[LocalHub]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    with LocalHub(KEY, ssl_context=server) as hub:
        yield hub


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


# -- the node behind real proxies ----------------------------------------------------------------

def test_tls_hub_behind_http_proxy_with_only_https_proxy_set(make_node, proxies, tls_hub: LocalHub, ca, tmp_path) -> None:
    """Done-when of issue 12 item 1: only HTTPS_PROXY set, the node connects and serves tasks."""
    proxy = proxies("http")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = make_node(_hub=tls_hub, tls=True, ca_file=str(ca_file), _environ={"HTTPS_PROXY": proxy.url()})
    assert serves_a_task(client, tls_hub)
    assert direct_sockets(tls_hub.api_port, tls_hub.ws_port) == []
    assert tls_hub.api_requests, "the API was asked"
    client.stop(timeout=5)
    # TLS went end to end through the tunnel: the proxy saw CONNECT to both hub ports.
    assert wait_until(lambda: proxy.saw(tls_hub.api_port) and proxy.saw(tls_hub.ws_port), 10), proxy.log()


def test_plain_hub_behind_http_proxy_with_http_proxy_set(make_node, proxies, hub: LocalHub) -> None:
    proxy = proxies("http")
    client = make_node(_environ={"HTTP_PROXY": proxy.url()})
    assert serves_a_task(client, hub)
    assert direct_sockets(hub.ws_port) == []  # ws:// went through CONNECT too
    client.stop(timeout=5)
    assert wait_until(lambda: proxy.saw(hub.api_port) and proxy.saw(hub.ws_port), 10), proxy.log()


def test_plain_hub_with_only_https_proxy_goes_direct(make_node, proxies, hub: LocalHub) -> None:
    # As requests reads the environment: http (and so ws) URLs use HTTP_PROXY, not HTTPS_PROXY.
    proxy = proxies("http")
    client = make_node(_environ={"HTTPS_PROXY": proxy.url()})
    assert serves_a_task(client, hub)
    assert direct_sockets(hub.ws_port) != []
    assert not proxy.saw(hub.api_port) and not proxy.saw(hub.ws_port)


def test_http_proxy_with_basic_auth_and_no_credentials_in_any_log(make_node, proxies, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    proxy = proxies("http", auth=True)
    # OCTOHUB_PROXY wins over the environment, whose proxy does not even exist.
    client = make_node(proxy=proxy.url(user=USER, password=PASSWORD),
                       _environ={"HTTP_PROXY": f"http://127.0.0.1:{dead_port()}"})
    assert serves_a_task(client, hub)
    assert direct_sockets(hub.ws_port) == []
    assert client.settings.masked()["OCTOHUB_PROXY"][0] == f"http://***@127.0.0.1:{proxy.port}"
    assert PASSWORD not in repr(client.settings) and PASSWORD not in repr(client.settings.route("ws://hub/ws"))
    client.stop(timeout=5)
    assert wait_until(lambda: proxy.saw(hub.ws_port), 10), proxy.log()
    assert any("via the proxy http://***@127.0.0.1" in r.getMessage() for r in caplog.records)
    assert not [r.getMessage() for r in caplog.records if PASSWORD in r.getMessage() or USER in r.getMessage()]


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_socks5_proxy_with_auth(make_node, proxies, hub: LocalHub, scheme: str, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    proxy = proxies("socks5", auth=True)
    client = make_node(_environ={"ALL_PROXY": proxy.url(scheme, USER, PASSWORD)})
    assert serves_a_task(client, hub)
    assert direct_sockets(hub.api_port, hub.ws_port) == []
    assert wait_until(lambda: proxy.saw(hub.ws_port) and proxy.saw(hub.api_port), 10), proxy.log()  # logged at connect
    assert not [r.getMessage() for r in caplog.records if PASSWORD in r.getMessage()]


@pytest.mark.parametrize("kind, mode", [("http", "api"), ("http", "direct"), ("socks5", "api"), ("socks5", "direct")])
def test_refusing_proxy_gets_a_clear_line_and_the_normal_backoff(make_node, proxies, hub: LocalHub, caplog,
                                                                   kind: str, mode: str) -> None:
    # api: the API request meets the refusal (requests); direct: the WebSocket's own tunnel does.
    caplog.set_level(logging.DEBUG)
    proxy = proxies(kind, auth=True)
    variable = "HTTP_PROXY" if kind == "http" else "ALL_PROXY"
    client = make_node(connect_mode=mode, _environ={variable: proxy.url(kind, USER, WRONG)})
    assert wait_until(lambda: client.stats()["connect_failures"] >= 3, 15), client.stats()
    assert not client.is_connected() and hub.api_requests == []
    failures = [r for r in caplog.records if re.search(r"connection \d+ failed", r.getMessage())]
    first = failures[0].getMessage()
    assert failures[0].levelno == logging.WARNING
    assert "refused" in first and f"(from {variable})" in first and f"user name and password in {variable}" in first
    if kind == "http":
        assert "407" in first
    assert all("next attempt in" in r.getMessage() for r in failures)  # the watchdog's backoff, as for any failure
    assert client.stats()["last_error"] and WRONG not in client.stats()["last_error"]
    leaked = [r.getMessage() for r in caplog.records if WRONG in r.getMessage() or USER in r.getMessage()]
    assert not leaked


def test_wrong_password_for_the_tunnel_to_a_tls_api(make_node, proxies, tls_hub: LocalHub, ca, tmp_path) -> None:
    # https: requests asks the proxy for a CONNECT tunnel, and the refusal comes back as an exception.
    proxy = proxies("http", auth=True)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = make_node(_hub=tls_hub, tls=True, ca_file=str(ca_file),
                       _environ={"HTTPS_PROXY": proxy.url(user=USER, password=WRONG)})
    assert wait_until(lambda: client.stats()["connect_failures"] >= 1, 10)
    error = client.stats()["last_error"]
    assert "refused the tunnel to the API: HTTP 407" in error and "user name and password in HTTPS_PROXY" in error
    assert WRONG not in error


def test_proxy_that_cannot_be_reached_names_the_variable(make_node, hub: LocalHub) -> None:
    client = make_node(connect_mode="direct", _environ={"http_proxy": f"http://127.0.0.1:{dead_port()}"})
    assert wait_until(lambda: client.stats()["connect_failures"] >= 1, 10)
    assert "cannot reach the proxy" in client.stats()["last_error"] and "http_proxy" in client.stats()["last_error"]


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost, 127.0.0.0/8", " 10.0.0.1 ,127.0.0.0/24"])
def test_no_proxy_goes_direct(make_node, proxies, hub: LocalHub, no_proxy: str) -> None:
    proxy = proxies("http")
    client = make_node(_environ={"HTTP_PROXY": proxy.url(), "no_proxy": no_proxy})
    assert serves_a_task(client, hub)
    assert direct_sockets(hub.ws_port) != []
    assert not proxy.saw(hub.api_port) and not proxy.saw(hub.ws_port)


def test_octohub_proxy_none_ignores_the_environment(make_node, hub: LocalHub) -> None:
    dead = f"http://127.0.0.1:{dead_port()}"
    # Not even checked: a scheme the node refuses elsewhere changes nothing here.
    client = make_node(proxy="none", _environ={"HTTP_PROXY": dead, "HTTPS_PROXY": dead, "ALL_PROXY": "socks4://x:1"})
    assert serves_a_task(client, hub)


def test_api_request_does_not_read_the_process_environment(make_node, hub: LocalHub, monkeypatch) -> None:
    # requests' trust_env would add os.environ's proxies; the node's own decision (direct) must win.
    dead = f"http://127.0.0.1:{dead_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead)
    client = make_node(_environ={})
    assert serves_a_task(client, hub)


def test_connect_timeout_bounds_the_proxy_handshake() -> None:
    # A "proxy" that accepts and never answers CONNECT: the deadline, not the proxy, ends the attempt.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        proxy = Proxy(f"http://127.0.0.1:{silent.getsockname()[1]}", "HTTPS_PROXY")
        started = time.monotonic()
        with pytest.raises(socket.timeout, match="within OCTOHUB_CONNECT_TIMEOUT"):
            open_socket("wss://127.0.0.1:9/ws/node", proxy=proxy, ssl_context=None, timeout=0.5)
        assert time.monotonic() - started < 2.0


def test_connect_refusal_by_status(proxies) -> None:
    proxy = proxies("http", auth=True)
    with pytest.raises(ProxyError) as refused:
        open_socket(f"ws://127.0.0.1:{dead_port()}/ws/node", proxy=Proxy(proxy.url(), "OCTOHUB_PROXY"),
                    ssl_context=None, timeout=5)
    assert refused.value.status == 407 and "user name and password: OCTOHUB_PROXY=" in refused.value.hint
    with pytest.raises(ProxyError) as unreachable:
        target = dead_port()
        open_socket(f"ws://127.0.0.1:{target}/ws/node", ssl_context=None, timeout=5,
                    proxy=Proxy(proxy.url(user=USER, password=PASSWORD), "OCTOHUB_PROXY"))
    assert unreachable.value.status and unreachable.value.status >= 500  # the proxy could not reach the target


def test_check_shows_the_proxy_and_tests_through_it(proxies, hub: LocalHub) -> None:
    proxy = proxies("http", auth=True)
    base = dict(server_host="127.0.0.1", server_port=hub.api_port, signature_key=hub.key, connect_timeout=3)

    def check(password: str) -> tuple[int, str]:
        settings = load_settings(base, env_file=False, environ={"HTTP_PROXY": proxy.url(user=USER, password=password),
                                                                 "NO_PROXY": "hub.example"})
        out = io.StringIO()
        return run_check(settings, out=out), out.getvalue()

    code, text = check(PASSWORD)
    assert code == 0, text
    assert re.search(rf"HTTP_PROXY += http://\*\*\*@127\.0\.0\.1:{proxy.port} \[environment\]", text), text
    assert re.search(r"NO_PROXY += hub\.example \[environment\]", text), text
    assert f"proxy for the API: via http://***@127.0.0.1:{proxy.port} (from HTTP_PROXY)" in text
    assert f"proxy for the WebSocket: via http://***@127.0.0.1:{proxy.port} (from HTTP_PROXY)" in text
    assert PASSWORD not in text and USER not in text
    assert wait_until(lambda: proxy.saw(hub.ws_port), 10), proxy.log()  # the check's WebSocket went through it
    code, text = check(WRONG)
    assert code == 1 and "FAILED at step 'API'" in text and "407" in text and "HTTP_PROXY" in text
    assert WRONG not in text


# -- configuration -----------------------------------------------------------------------------------

@pytest.mark.parametrize("variable", ["OCTOHUB_PROXY", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY"])
@pytest.mark.parametrize("value", ["socks4://user:s3cret@proxy:1080", "https://user:s3cret@proxy:3128",
                                   "ftp://proxy:21", "http://user:s3cret@proxy:port"])
def test_unusable_proxy_is_a_config_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(env_file=False, environ={variable: value})
    assert error.value.variable == variable
    assert "s3cret" not in str(error.value) and "s3cret" not in repr(error.value.value)


def test_socks_proxy_without_the_extra_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setattr("octohub_sync._config.proxies.socks_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^ALL_PROXY=.*socks extra"):
        load_settings(env_file=False, environ={"ALL_PROXY": "socks5://proxy:1080"})
    with pytest.raises(ConfigError, match=r"^OCTOHUB_PROXY=.*socks extra"):
        load_settings({"proxy": "socks5h://proxy:1080"}, env_file=False, environ={})
    assert load_settings(env_file=False, environ={"HTTPS_PROXY": "http://proxy:3128"}).environment.urls


@pytest.mark.parametrize("flag, env, named", [
    (["--proxy", "socks4://u:s3cret@proxy:1"], {}, "OCTOHUB_PROXY"),
    ([], {"HTTPS_PROXY": "socks4://u:s3cret@proxy:1"}, "HTTPS_PROXY"),
])
def test_program_exits_2_naming_the_variable(flag, env, named, monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in [n for n in os.environ if n.lower().endswith("_proxy") or n.startswith("OCTOHUB_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli_main(["--check", "--signature-key", KEY] + flag) == 2
    err = capsys.readouterr().err
    assert f"configuration error: {named}=" in err and "unsupported proxy scheme 'socks4'" in err
    assert "s3cret" not in err


def test_bare_host_port_means_http_and_words_mean_direct() -> None:
    s = load_settings(env_file=False, environ={"HTTPS_PROXY": "u:p@proxy.corp:3128", "NO_PROXY": ".corp"})
    assert s.environment.urls["https"] == "http://u:p@proxy.corp:3128"
    assert s.route("https://hub.example:8443/node/ws").proxy.password == "p"
    for word in ("none", "OFF", " None "):
        assert load_settings({"proxy": word}, env_file=False, environ={}).proxy == "none"


# -- the rules, as requests and urllib have them --------------------------------------------------

ENVIRONMENTS = [
    {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"},
    {"HTTP_PROXY": "http://a:1", "http_proxy": ""},
    {"ALL_PROXY": "socks5://a:1", "NO_PROXY": "x.example", "no_proxy": "y.example"},
    {"HTTP_PROXY": "http://cgi:1", "REQUEST_METHOD": "GET"},
    {"HTTP_PROXY": "http://cgi:1", "http_proxy": "http://mine:2", "REQUEST_METHOD": "GET"},
    {"Https_proxy": "http://odd:1"},
]


@pytest.mark.parametrize("environ", ENVIRONMENTS)
def test_environment_is_read_as_urllib_reads_it(environ: dict, monkeypatch) -> None:
    for name in [n for n in os.environ if n.lower().endswith("_proxy") or n == "REQUEST_METHOD"]:
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    expected = urllib.request.getproxies_environment()
    ours = EnvironmentProxies.read(environ)
    assert ours.urls == {k: v for k, v in expected.items() if k in ("http", "https", "all")}
    assert ours.no_proxy == expected.get("no", "")


BYPASS_CASES = [
    ("http://127.0.0.1:8080/", "127.0.0.1"),
    ("http://127.0.0.1:8080/", "127.0.0.0/8"),
    ("http://10.1.2.3/", "10.0.0.0/16"),
    ("http://10.1.2.3/", "10.1.0.0/16"),
    ("http://hub.corp.example:8080/", "corp.example"),
    ("http://hub.corp.example:8080/", ".corp.example"),
    ("http://hub.corp.example:8080/", "hub.corp.example:8080"),
    ("http://hub.corp.example:8080/", "hub.corp.example:9090"),
    ("http://hub.corp.example/", "other.example, corp.example "),
    ("http://hub.corp.example/", "CORP.EXAMPLE"),
    ("http://hub.corp.example/", "*"),
    ("http://hub.corp.example/", "example.org"),
    ("http://localhost:8000/", "localhost"),
    ("http://[::1]:8000/", "::1"),
]


@pytest.mark.parametrize("url, no_proxy", BYPASS_CASES)
def test_no_proxy_rules_agree_with_requests(url: str, no_proxy: str, monkeypatch) -> None:
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    # requests' own function puts no_proxy into os.environ for the call (monkeypatch restores it).
    assert bypasses(url, no_proxy) == requests.utils.should_bypass_proxies(url, no_proxy=no_proxy)


def test_no_proxy_suffix_stops_at_a_dot() -> None:
    assert not bypasses("http://notcorp.example/", "corp.example")
    assert bypasses("http://a.b.corp.example/", "corp.example")


#: Hosts and NO_PROXY entries for urllib's rules: cases, ports, dots, spaces, "*", IPv6 and empty entries.
URLLIB_HOSTS = ["a.b.corp.example", "corp.example", "notcorp.example", "Corp.Example", "10.0.0.1", "::1", "host.",
                "x:80", "x:", "a:b:1", ".", ""]
URLLIB_ENTRIES = ["corp.example", ".corp.example", "*", "Corp.EXAMPLE", " corp.example ", ".", "", " ", "0.0.1",
                  "x", "x:80", "1", "..corp.example", "::1"]


@pytest.mark.parametrize("host", URLLIB_HOSTS)
def test_no_proxy_rules_are_urllibs_own(host: str) -> None:
    # _urllib_bypasses writes out urllib's proxy_bypass_environment (not documented, so not in typeshed):
    # both answer alike for every pair and triple of entries, on each Python the suite runs on.
    from octohub_sync._config.proxies import _urllib_bypasses

    for count in (1, 2, 3):
        for entries in itertools.product(URLLIB_ENTRIES, repeat=count):
            no_proxy = ",".join(entries)
            expected = bool(urllib.request.proxy_bypass_environment(host, {"no": no_proxy}))  # type: ignore[attr-defined]
            assert _urllib_bypasses(host, no_proxy) is expected, (host, no_proxy)


def test_ws_reads_http_proxy_and_wss_reads_https_proxy() -> None:
    env = EnvironmentProxies.read({"HTTPS_PROXY": "http://tls-proxy:1", "HTTP_PROXY": "http://plain-proxy:2",
                                   "NO_PROXY": "inside.example"})
    assert route("wss://hub:8000/ws", explicit=None, environment=env).proxy.host == "tls-proxy"
    assert route("ws://hub:8000/ws", explicit=None, environment=env).proxy.host == "plain-proxy"
    assert route("https://hub:8443/", explicit=None, environment=env).proxy.source == "HTTPS_PROXY"
    assert str(route("ws://inside.example/ws", explicit=None, environment=env)) == \
        "direct (inside.example is in NO_PROXY)"
    only_tls = EnvironmentProxies.read({"https_proxy": "http://tls-proxy:1"})
    assert str(route("ws://hub:8000/ws", explicit=None, environment=only_tls)) == \
        "direct (no HTTP_PROXY or ALL_PROXY set)"
    fallback = EnvironmentProxies.read({"all_proxy": "socks5h://u:p@any:1080"})
    chosen = route("ws://hub:8000/ws", explicit=None, environment=fallback).proxy
    assert chosen.source == "all_proxy" and chosen.port == 1080 and str(chosen) == "socks5h://***@any:1080 (from all_proxy)"
    explicit = route("ws://inside.example/ws", explicit="http://mine:3128", environment=env)
    assert explicit.proxy.source == "OCTOHUB_PROXY"  # an explicit proxy is used for every address
    assert str(route("wss://hub/ws", explicit="none", environment=env)) == "direct (OCTOHUB_PROXY=none)"


# -- after the handshakes: what bounds a write -------------------------------------------------------

def test_a_plain_socket_reads_blocking_and_the_kernel_bounds_its_writes() -> None:
    import socket
    import struct

    from octohub_sync._transport.tunnel import bound_writes

    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(7.5)  # what the handshakes left
        assert bound_writes(ours, 0.3) is True
        assert ours.gettimeout() is None  # a read is one system call, no poll before it
        seconds, micros = struct.unpack("@ll", ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                                               struct.calcsize("@ll")))
        assert (seconds, micros) == (0, 300_000)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        started = time.monotonic()
        with pytest.raises(OSError):  # nobody reads: the kernel ends the stalled write
            ours.sendall(b"x" * (8 * 1024 * 1024))
        assert time.monotonic() - started < 5


def test_a_tls_socket_keeps_pythons_timeout() -> None:
    import socket
    import ssl

    from octohub_sync._transport.tunnel import bound_writes

    raw, other = socket.socketpair()
    with other:
        wrapped = ssl.create_default_context().wrap_socket(raw, do_handshake_on_connect=False,
                                                           server_hostname="localhost")
        with wrapped:
            assert bound_writes(wrapped, 0.3) is False and wrapped.gettimeout() == 0.3
