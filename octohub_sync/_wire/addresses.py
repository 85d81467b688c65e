"""The two rules every address in this package follows: IPv6 hosts in brackets, default ports by scheme."""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult

__all__ = ["check_host", "host_for_url", "port_of"]

#: What a host name may hold (letters, digits, ``-``, ``_``, ``.``; IDNA names included): no space, no ``/``.
_HOST_NAME = re.compile(r"^[\w.-]+$")

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def host_for_url(host: str) -> str:
    """``::1`` -> ``[::1]`` (an IPv6 address in a URL needs brackets); other hosts unchanged."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def port_of(parts: SplitResult) -> int:
    """The port of a split URL: its own, else the scheme's default (80 for ws/http, 443 for wss/https)."""
    return parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)


def check_host(value: str, *, url_setting: str, port_setting: str) -> str:
    """A host name or IP address as a setting holds it: ``::1`` and ``[::1]`` both give ``::1``.

    Args:
        value: what the user wrote.
        url_setting: where a whole URL belongs (named in the error).
        port_setting: where a port belongs (named in the error).

    Raises:
        ValueError: a URL (``http://...``), a ``host:port``, a path or a character no host name has;
            the message says which setting takes that part instead.
    """
    if "://" in value:
        raise ValueError(f"a host name or IP address, not a URL: put the whole URL in {url_setting} "
                         "(e.g. http://hub.example:8080) or only the host here")
    if value.startswith("[") and value.endswith("]"):  # [::1]: an IPv6 address as URLs write it
        value = value[1:-1]
        if not _is_ipv6(value):
            raise ValueError("brackets hold an IPv6 address only, e.g. [::1]")
        return value
    if ":" in value:
        if _is_ipv6(value):
            return value
        host, _, port = value.rpartition(":")
        if port.isdigit():
            raise ValueError(f"a host name or IP address without a port: put {port} in {port_setting} "
                             f"and {host.strip('[]')} here")
        raise ValueError("not a host name or IP address")
    if "/" in value:
        raise ValueError(f"a host name or IP address, not a path: put a URL with a path in {url_setting}")
    if not _HOST_NAME.match(value):
        raise ValueError("not a host name or IP address (letters, digits, '-' and '.' only)")
    return value


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text.split("%", 1)[0])  # fe80::1%eth0: the zone is the interface's name
    except ValueError:
        return False
    return True
