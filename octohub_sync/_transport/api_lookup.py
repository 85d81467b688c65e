"""Where to connect: the signed API request of docs/protocol.md §1, or a self-signed URL (§2).

Why one module: the API's answer is read in one pass (status, body, address, clock), and each way it
can be wrong gets its hint here, naming the setting to change; split, the hints would drift apart.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import re
import ssl
import time
import warnings
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Optional, Union
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from .._config.proxies import Proxy, refusal_hint
from .._config.settings import Settings, env_name
from .._wire import signing
from .._wire.addresses import host_for_url
from ..exceptions import ApiError, AuthError, ProxyError
from .connect_deadline import current_attempt
from .tunnel import tunnel_hint

__all__ = ["Address", "direct_key_origin", "is_loopback", "key_origin", "loopback_pitfall", "plaintext_host",
           "resolve_address", "ssl_context", "tls_verify"]

logger = logging.getLogger(__name__)

#: Clock difference (seconds) past which every answer logs a warning; the hub refuses 300 s.
SKEW_WARNING = 60.0

API_PATH = "/node/ws"


@dataclass(frozen=True)
class Address:
    """A signed WebSocket address and what was learnt while getting it."""

    url: str
    #: hub clock minus local clock, from the API's Date header (None in direct mode).
    skew: Optional[float] = None
    #: seconds the API request took (None in direct mode).
    api_seconds: Optional[float] = None


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context for ``wss``: system CAs, or OCTOHUB_CA_FILE, or no checks when insecure."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.tls_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


#: ``Settings.sources`` value -> where the operator finds the key, for a 401's hint.
_ORIGINS = {
    "flag": "given by --{flag}",
    "override": "given to the client",
    # A stale .env is the usual trap: `OCTOHUB_SIGNATURE_KEY=... python run_node.py` does not beat it.
    ".env": "read from the .env file (./.env or --env-file), which beats the environment",
    "environment": "read from the environment",
    "key file": "read from OCTOHUB_{upper}_FILE",
    "credential": "read from the systemd credential octohub_{name}",
}


def key_origin(settings: Settings, name: str) -> str:
    """Where the key ``name`` (``signature_key``, ``ws_signature_key``) came from, e.g. "read from the environment"."""
    source = settings.sources.get(name)
    if source is None:
        return "not set"
    return _ORIGINS.get(source, source).format(flag=name.replace("_", "-"), upper=name.upper(), name=name)


def direct_key_origin(settings: Settings) -> str:
    """The key that signs a WebSocket URL in direct mode and where it came from."""
    name = "ws_signature_key" if settings.ws_signature_key else "signature_key"
    return f"{env_name(name)}, {key_origin(settings, name)}"


def tls_verify(settings: Settings) -> Union[bool, str]:
    """The ``verify`` argument of requests for the same policy."""
    if settings.tls_insecure:
        return False
    return settings.ca_file or True


def resolve_address(settings: Settings, pc_id: str, session: requests.Session, log: logging.LoggerAdapter) -> Address:
    """Get a freshly signed WebSocket address (called before every connection attempt).

    Raises:
        ApiError: the API gave no usable address (AuthError for HTTP 401).
    """
    if settings.connect_mode == "direct":
        host = settings.ws_host or settings.server_host
        query = signing.ws_query(settings.ws_key, pc_id)
        return Address(url=f"{settings.ws_scheme}://{host_for_url(host)}:{settings.ws_port}/ws/node?{query}")
    return _ask_api(settings, pc_id, session, log)


def _ask_api(settings: Settings, pc_id: str, session: requests.Session, log: logging.LoggerAdapter) -> Address:
    params = {"pc_id": pc_id}
    headers = signing.api_headers(settings.signature_key, "GET", API_PATH, params)
    url = settings.api_base + API_PATH
    proxy = settings.route(url).proxy
    started = time.monotonic()
    try:
        with warnings.catch_warnings():
            # The node logs its own warning for OCTOHUB_TLS_INSECURE; urllib3's would repeat it per request.
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            response = session.get(url, params=params, headers=headers, timeout=settings.connect_timeout,
                                   verify=tls_verify(settings), allow_redirects=False,
                                   proxies=requests_proxies(proxy))
    except requests.RequestException as exc:
        attempt = current_attempt()
        if attempt is not None and attempt.expired:  # the attempt's deadline cut the socket (connect_deadline.py)
            raise ApiError(f"API request to {url} did not finish within OCTOHUB_CONNECT_TIMEOUT ({attempt.seconds:g} s)",
                           hint="the API server, or a proxy on the way, answers too slowly") from None
        if proxy is not None and not isinstance(exc, requests.exceptions.SSLError):
            raise _proxy_failure(exc, proxy, url) from None
        raise ApiError(f"API request to {url} failed: {type(exc).__name__}", hint=_network_hint(exc)) from None
    elapsed = time.monotonic() - started
    if response.status_code == 407 and proxy is not None:
        raise ProxyError(f"the proxy {proxy} refused the API request: HTTP 407 {response.reason or ''}".rstrip(),
                         status=407, hint=refusal_hint(proxy))
    skew = _skew(response, started_wall=time.time() - elapsed / 2)
    if skew is not None and abs(skew) > SKEW_WARNING:
        log.warning("the hub's clock differs from this machine's by %+.0f s; signatures older than 300 s "
                    "are refused, so keep the clock synchronised (NTP)", skew)
    body = _json_body(response)
    if response.status_code == 401:
        raise AuthError(
            f"API refused the signature (HTTP 401{_errmsg(body)})", status=401,
            hint=f"check that OCTOHUB_SIGNATURE_KEY ({key_origin(settings, 'signature_key')}) is the hub's key "
                 "and that this machine's clock is right"
                 + (f" (measured skew {skew:+.0f} s)" if skew is not None and abs(skew) >= 2 else ""),
        )
    if response.status_code != 200 or body is None:
        what = ("a non-JSON body" if body is None else f"errcode {body['errcode']}{_errmsg(body)}" if "errcode" in body
                else "a JSON body without errcode")
        raise ApiError(f"API answered HTTP {response.status_code} with {what}", status=response.status_code,
                       hint=_not_the_api(settings, response))
    ws_url = _ws_url(body, response.status_code)
    _refuse_downgrade(settings, ws_url)
    return Address(url=_fix_host(ws_url, settings, log), skew=skew, api_seconds=elapsed)


def requests_proxies(proxy: Optional[Proxy]) -> dict[str, str]:
    """The ``proxies=`` argument that makes requests take exactly the route the node chose.

    requests adds the environment's proxies for every key not given (its ``trust_env``); naming
    all three keys it reads leaves it nothing to add. An empty URL is "direct": requests goes
    through a proxy only for a URL that is not empty (``select_proxy``, then ``if proxy:``).
    """
    url = "" if proxy is None else proxy.url
    return {"http": url, "https": url, "all": url}


def _proxy_failure(exc: requests.RequestException, proxy: Proxy, url: str) -> ProxyError:
    # requests and urllib3 say what the proxy did only in words: "Tunnel connection failed: 407 ...",
    # "Unable to connect to proxy"; PySocks' reason follows "Failed to establish a new connection: ".
    text = signing.redact(str(exc))
    tunnel = re.search(r"Tunnel connection failed: (\d{3})([^'\")]*)", text)
    if tunnel:
        status = int(tunnel.group(1))
        port = urlsplit(url).port or (443 if url.startswith("https:") else 80)
        return ProxyError(f"the proxy {proxy} refused the tunnel to the API: HTTP {status}{tunnel.group(2)}".rstrip(),
                          status=status, hint=refusal_hint(proxy) if status == 407 else tunnel_hint(port))
    reason = text.rsplit("Failed to establish a new connection: ", 1)[-1]
    reason = reason.split("'", 1)[0].split('"', 1)[0].rstrip(")")[:200]
    socks = proxy.scheme.startswith("socks")
    if isinstance(exc, requests.Timeout):
        return ProxyError(f"API request to {url} through the proxy {proxy}: no answer within OCTOHUB_CONNECT_TIMEOUT",
                          hint=f"check the proxy in {proxy.source} and that it may reach the hub")
    if "Unable to connect to proxy" in text or (socks and reason.startswith("[Errno")):
        return ProxyError(f"cannot reach the proxy {proxy}: {reason}",
                          hint=f"check the proxy's address in {proxy.source} and that it runs")
    if socks:
        return ProxyError(f"the SOCKS5 proxy {proxy} refused the API request to {url}: {reason}",
                          hint=refusal_hint(proxy))
    return ProxyError(f"API request to {url} through the proxy {proxy} failed: {type(exc).__name__}",
                      hint=f"check the proxy in {proxy.source} and that it may reach the hub")


def _json_body(response: requests.Response) -> Optional[dict]:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _errmsg(body: Optional[dict]) -> str:
    msg = (body or {}).get("errmsg")
    return f": {str(msg)[:200]}" if msg else ""


def _ws_url(body: dict, status: int) -> str:
    if body.get("errcode") != 0:
        raise ApiError(f"API answered errcode {body.get('errcode')}{_errmsg(body)}", status=status)
    data = body.get("data")
    url = data.get("wsUrl") if isinstance(data, dict) else None
    if not isinstance(url, str) or urlsplit(url).scheme not in ("ws", "wss") or not urlsplit(url).hostname:
        raise ApiError("API answer has no usable data.wsUrl", status=status)
    return url


def _refuse_downgrade(settings: Settings, ws_url: str) -> None:
    """With TLS on, a plaintext address is refused: only the URL is signed, so on a plaintext path
    anyone in the middle could read results and inject tasks (a silent downgrade is worse than none)."""
    parts = urlsplit(ws_url)
    if settings.ws_scheme == "wss" and parts.scheme.lower() == "ws":
        why = "OCTOHUB_TLS=true" if settings.tls else f"the API is {urlsplit(settings.api_base).scheme}"
        raise ApiError(f"the API handed out a plaintext WebSocket address (scheme 'ws', host {parts.hostname}) "
                       f"while TLS is on ({why}): refused",
                       hint="make the hub hand out wss:// addresses (its wsUrl setting), or turn TLS off "
                            "only if the hub is reached over a network you trust")


def plaintext_host(url: str) -> Optional[str]:
    """The host of a plaintext (``http``, ``ws``) ``url`` that is not on this machine, else None."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme.lower() in ("http", "ws") and host and not is_loopback(host):
        return host
    return None


def _fix_host(url: str, settings: Settings, log: logging.LoggerAdapter) -> str:
    parts = urlsplit(url)
    if settings.ws_host:
        netloc = host_for_url(settings.ws_host) + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    if loopback_pitfall(settings, url):
        api_host = urlsplit(settings.api_base).hostname
        log.warning("the API at %s returned a WebSocket address on %s, i.e. on this machine: the hub's "
                    "wsUrl setting is probably left at its default; set OCTOHUB_WS_HOST=%s (or fix the "
                    "hub) if the connection fails", api_host, parts.hostname, api_host)
    return url


def loopback_pitfall(settings: Settings, ws_url: str) -> bool:
    """True when the API, reached off this machine, handed out a WebSocket address on loopback."""
    if settings.connect_mode == "direct" or settings.ws_host:
        return False
    api_host = urlsplit(settings.api_base).hostname or ""
    return is_loopback(urlsplit(ws_url).hostname or "") and not is_loopback(api_host)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _skew(response: requests.Response, *, started_wall: float) -> Optional[float]:
    date = response.headers.get("Date")
    if not date:
        return None
    try:
        return parsedate_to_datetime(date).timestamp() - started_wall
    except (TypeError, ValueError):
        return None


def _not_the_api(settings: Settings, response: requests.Response) -> str:
    """What to do when the server at the API's address answered, but not as the API (a 404, a 426)."""
    # A WebSocket server asks for an upgrade (426) or names itself ("Server: ... websockets/N": the local
    # hub's and the seed's WebSocket servers answer a plain GET with 404).
    websocket = response.status_code == 426 or "websocket" in response.headers.get("Server", "").lower()
    if websocket or (settings.api_url is None and settings.server_port == settings.ws_port):
        return (f"that is the WebSocket server (port {urlsplit(response.url).port or settings.server_port}); "
                "OCTOHUB_SERVER_PORT is the API server's port (8080 by default), or set OCTOHUB_API_URL")
    return "" if response.status_code != 404 else (
        "the server has no /node/ws: check that OCTOHUB_SERVER_PORT (or OCTOHUB_API_URL) points at the OctoHub "
        "API server, not the WebSocket server or a proxy")


def _network_hint(exc: requests.RequestException) -> str:
    if _errno_of(exc) in (errno.EMFILE, errno.ENFILE):
        return ("too many open files: this process (EMFILE) or the system (ENFILE) has no file descriptor "
                "left for a socket; raise the limit (ulimit -n, systemd's LimitNOFILE=) or find what holds them")
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS failed: set OCTOHUB_CA_FILE to the hub's CA (or check OCTOHUB_TLS / the API URL scheme)"
    if isinstance(exc, requests.Timeout):
        return "the API did not answer within OCTOHUB_CONNECT_TIMEOUT"
    return "check OCTOHUB_SERVER_HOST / OCTOHUB_SERVER_PORT (or OCTOHUB_API_URL) and that the API server runs"


def _errno_of(exc: BaseException) -> Optional[int]:
    """The errno of the OSError under requests' and urllib3's wrappers (``reason``, causes, arguments)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        err = todo.pop()
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno:
            return err.errno
        todo += [getattr(err, "reason", None), err.__cause__, err.__context__, *err.args]
    return None
