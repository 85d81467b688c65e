"""Which proxy a connection goes through: ``OCTOHUB_PROXY``, else the environment read as requests reads it.

Pure functions and values, no I/O: the environment is read once, by ``config.load_settings``,
into :class:`EnvironmentProxies`; :func:`route` then decides for each URL, the API's and the
WebSocket's alike, so both take the same path. The rules are requests' (``select_proxy``,
``should_bypass_proxies``) and urllib's (``getproxies_environment``, ``proxy_bypass_environment``);
see docs/proxies.md.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

from requests.utils import address_in_network, is_ipv4_address, is_valid_cidr, select_proxy

from .._wire.signing import redact
from ..exceptions import ConfigError

__all__ = [
    "EnvironmentProxies", "Proxy", "Route", "bypasses", "mask", "parse_proxy_url", "parse_setting", "refusal_hint", "route",
]

#: Proxy URL schemes the node can tunnel through (HTTP CONNECT; SOCKS5 with local or proxy-side DNS).
SCHEMES = ("http", "socks5", "socks5h")

#: OCTOHUB_PROXY values that mean "no proxy, whatever the environment says".
DIRECT_WORDS = ("none", "off")

#: Ports of a proxy URL that names none (urllib3's for http; PySocks' for SOCKS).
_DEFAULT_PORTS = {"http": 80, "socks5": 1080, "socks5h": 1080}

#: A host followed by a port, as urllib splits it (the port may be empty).
_HOST_PORT = re.compile(r"(.*):([0-9]*)", re.DOTALL)

#: The WebSocket's schemes read the environment as the HTTP schemes they upgrade from.
_SCHEME_KEYS = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


@dataclass(frozen=True, repr=False)
class Proxy:
    """A proxy URL and the variable that named it. ``str()`` masks any user name and password."""

    #: The URL with scheme, maybe ``user:password@``: never log it, log the Proxy itself.
    url: str
    #: ``OCTOHUB_PROXY``, or the environment variable as spelled there (``https_proxy``, ``ALL_PROXY``).
    source: str

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or _DEFAULT_PORTS[self.scheme]

    @property
    def username(self) -> Optional[str]:
        user = urlsplit(self.url).username
        return None if user is None else unquote(user)

    @property
    def password(self) -> Optional[str]:
        password = urlsplit(self.url).password
        return None if password is None else unquote(password)

    def __str__(self) -> str:
        return f"{redact(self.url)} (from {self.source})"

    def __repr__(self) -> str:
        return f"Proxy({self})"


@dataclass(frozen=True)
class Route:
    """How one URL is reached: through ``proxy``, or directly because of ``why``."""

    proxy: Optional[Proxy]
    why: str = ""

    def __str__(self) -> str:
        return f"via {self.proxy}" if self.proxy is not None else f"direct ({self.why})"


@dataclass(frozen=True)
class EnvironmentProxies:
    """``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY``, read once, validated.

    Attributes:
        urls: ``"http"`` / ``"https"`` / ``"all"`` -> proxy URL (scheme added where missing).
        no_proxy: the NO_PROXY list as written.
        names: the same keys (and ``"no"``) -> the variable's name as spelled in the environment.
    """

    urls: Mapping[str, str] = field(default_factory=dict)
    no_proxy: str = ""
    names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> "EnvironmentProxies":
        """Read ``environ`` as urllib's ``getproxies_environment()`` reads ``os.environ``.

        Lower-case names win over upper-case ones, an empty lower-case one unsets the variable,
        and a CGI environment (``REQUEST_METHOD`` set) ignores ``HTTP_PROXY``.

        Raises:
            ConfigError: a proxy variable the node would use has a scheme it cannot use.
        """
        values: dict[str, str] = {}
        names: dict[str, str] = {}
        for name, value in environ.items():  # any case first ...
            if value and name.lower().endswith("_proxy"):
                values[name.lower()[:-6]], names[name.lower()[:-6]] = value, name
        if "REQUEST_METHOD" in environ:
            values.pop("http", None)
        for name, value in environ.items():  # ... then lower case wins
            if name.endswith("_proxy"):
                key = name.lower()[:-6]
                if value:
                    values[key], names[key] = value, name
                else:
                    values.pop(key, None)
        urls = {}
        for key in ("http", "https", "all"):
            if key in values:
                try:
                    urls[key] = parse_proxy_url(values[key])
                except ValueError as exc:
                    raise ConfigError(names[key], mask(values[key]), str(exc)) from None
        return cls(urls=urls, no_proxy=values.get("no", ""), names=names)


def parse_proxy_url(value: str) -> str:
    """Check a proxy URL and return it with its scheme (``host:port`` means ``http://host:port``).

    Raises:
        ValueError: the scheme is not one of :data:`SCHEMES`, the host or port is missing or
            bad, or a SOCKS proxy lacks the ``socks`` extra. The message never repeats the URL.
    """
    url = _with_scheme(value.strip())
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"unsupported proxy scheme {parts.scheme!r}: use http://, socks5:// or socks5h://"
                         + (" (TLS to the proxy itself is not supported)" if parts.scheme == "https" else ""))
    if not parts.hostname:
        raise ValueError("expected scheme://[user:password@]host:port")
    try:
        parts.port
    except ValueError:
        raise ValueError("the proxy's port is not a number from 1 to 65535") from None
    if parts.scheme.startswith("socks") and not socks_available():
        raise ValueError("a SOCKS proxy needs the socks extra: pip install 'octohub_sync[socks]'")
    return urlunsplit(parts._replace(path="", query="", fragment=""))


def parse_setting(raw: object) -> str:
    """The OCTOHUB_PROXY parser: ``none`` (any of :data:`DIRECT_WORDS`) or a checked proxy URL."""
    value = str(raw).strip()
    return "none" if value.lower() in DIRECT_WORDS else parse_proxy_url(value)


def socks_available() -> bool:
    """True when the ``socks`` extra is installed: python-socks (WebSocket) and PySocks (requests)."""
    return all(importlib.util.find_spec(name) is not None for name in ("python_socks", "socks"))


def route(url: str, *, explicit: Optional[str], environment: EnvironmentProxies) -> Route:
    """How to reach ``url`` (``http``, ``https``, ``ws`` or ``wss``).

    Args:
        url: where the connection goes.
        explicit: OCTOHUB_PROXY: ``"none"``, a proxy URL, or None to follow the environment.
        environment: the proxy variables read at start.
    """
    if explicit == "none":
        return Route(None, "OCTOHUB_PROXY=none")
    if explicit:
        return Route(Proxy(explicit, "OCTOHUB_PROXY"))
    parts = urlsplit(url)
    key = _SCHEME_KEYS.get(parts.scheme, parts.scheme)
    as_http = urlunsplit(parts._replace(scheme=key))
    if environment.no_proxy and bypasses(as_http, environment.no_proxy):
        return Route(None, f"{parts.hostname} is in {environment.names.get('no', 'NO_PROXY')}")
    chosen = select_proxy(as_http, dict(environment.urls))
    if not chosen:
        return Route(None, f"no {key.upper()}_PROXY or ALL_PROXY set")
    return Route(Proxy(chosen, environment.names[key if key in environment.urls else "all"]))


def bypasses(url: str, no_proxy: str) -> bool:
    """requests' ``should_bypass_proxies(url, no_proxy)``, without touching ``os.environ``.

    requests applies its own rules (IPv4 addresses and CIDR ranges, host and host:port suffixes,
    spaces ignored), then urllib's ``proxy_bypass`` with NO_PROXY put into ``os.environ`` for the
    call; a threaded library must not write the process environment, so urllib's rules run here
    on the value itself (:func:`_urllib_bypasses`: ``*``, case-insensitive suffixes).
    tests/test_proxy.py checks that both agree.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if host is None:
        return True
    entries = [entry for entry in no_proxy.replace(" ", "").split(",") if entry]
    if is_ipv4_address(host):
        for entry in entries:
            if address_in_network(host, entry) if is_valid_cidr(entry) else host == entry:
                return True
    else:
        with_port = f"{host}:{parts.port}" if parts.port else host
        for entry in entries:
            entry = entry.lstrip(".")
            if host == entry or with_port == entry or host.endswith("." + entry) or with_port.endswith("." + entry):
                return True
    return _urllib_bypasses(host, no_proxy)


def _urllib_bypasses(host: str, no_proxy: str) -> bool:
    # urllib.request.proxy_bypass_environment(host, {"no": no_proxy}), the same on Python 3.9 to 3.13:
    # that function is not documented (typeshed does not declare it), so its rules are written here.
    if no_proxy == "*":
        return True
    host = host.lower()
    with_port = _HOST_PORT.fullmatch(host)  # urllib's _splitport: "host:digits"
    host_only = with_port.group(1) if with_port else host
    for entry in no_proxy.split(","):
        if not entry.strip():
            continue
        name = entry.strip().lstrip(".").lower()  # "." is kept as "": then a name ending in "." matches, as in urllib
        if name in (host_only, host) or host_only.endswith("." + name) or host.endswith("." + name):
            return True
    return False


def refusal_hint(proxy: Proxy) -> str:
    """What to check when ``proxy`` turned the node away (HTTP 407, a SOCKS5 refusal)."""
    if proxy.username is not None:
        return f"check the user name and password in {proxy.source}"
    return (f"if the proxy wants a user name and password: "
            f"{proxy.source}={proxy.scheme}://user:password@{proxy.host}:{proxy.port}")


def mask(value: object) -> str:
    """A proxy setting as it may be shown: any ``user:password@`` masked, even without a scheme."""
    return redact(_with_scheme(str(value).strip()))


def _with_scheme(value: str) -> str:
    # curl's reading of a bare "host:port"; requests would take "host" for the scheme.
    return value if "://" in value else f"http://{value}"
