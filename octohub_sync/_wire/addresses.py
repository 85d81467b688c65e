"""The two rules every address in this package follows: IPv6 hosts in brackets, default ports by scheme."""
from __future__ import annotations

from urllib.parse import SplitResult

__all__ = ["host_for_url", "port_of"]

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def host_for_url(host: str) -> str:
    """``::1`` -> ``[::1]`` (an IPv6 address in a URL needs brackets); other hosts unchanged."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def port_of(parts: SplitResult) -> int:
    """The port of a split URL: its own, else the scheme's default (80 for ws/http, 443 for wss/https)."""
    return parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)
