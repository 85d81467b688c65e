"""The node's pc_id: stable per machine (and per instance name), docs/protocol.md §5."""
from __future__ import annotations

import hashlib
import socket
import uuid
from pathlib import Path

__all__ = ["machine_pc_id"]

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def _stable_mac() -> str:
    """The MAC address as hex, or another per-machine constant when there is none.

    ``uuid.getnode()`` invents a random number (multicast bit set) when it finds
    no MAC; using that would give a new pc_id on every start.
    """
    node = uuid.getnode()
    if not (node >> 40) & 1:
        return f"{node:012x}"
    for name in _MACHINE_ID_FILES:
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return "no-mac"


def machine_pc_id(instance: str | None = None, *, hostname: str | None = None, mac: str | None = None) -> str:
    """Return ``node_`` + 12 hex digits derived from host name, MAC and instance name.

    Args:
        instance: optional name that tells apart several nodes on one host.
        hostname: host name to use instead of this machine's (tests).
        mac: MAC (or machine id) to use instead of this machine's (tests).

    Returns:
        The same id on every start of the same machine with the same instance name.
    """
    host = socket.gethostname() if hostname is None else hostname
    parts = [host, _stable_mac() if mac is None else mac]
    if instance:
        parts.append(instance)
    return "node_" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
