"""The node's pc_id: stable per machine (and per instance name), docs/protocol.md §5.

Derived, it is ``node_`` + a hash of host name, MAC and instance name. With a state
directory the id derived at the first start is kept there (``pc_id.json``, or
``pc_id-<instance>.json``) with the MAC it was derived on, and used while the MAC stays
the same: host names change under a running laptop (macOS renames hosts when the network
changes, DHCP does elsewhere), and a new id would orphan the results waiting in the old
id's ledger. Another MAC is another machine (a clone, or a state directory copied to
another machine): it gets its own id, derived anew.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Union

from ..exceptions import ConfigError
from .settings import SAFE_NAME
from .state_dir import open_private, private_directory

__all__ = ["PcId", "PcIdSource", "identity_file", "machine_pc_id", "resolve_pc_id"]

logger = logging.getLogger(__name__)

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")

#: Version of the identity file's layout.
FILE_VERSION = 1


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
        The same id on every start of the same machine with the same host name and instance name.
    """
    host = socket.gethostname() if hostname is None else hostname
    parts = [host, _stable_mac() if mac is None else mac]
    if instance:
        parts.append(instance)
    return "node_" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


class PcIdSource(str, Enum):
    """Where the pc_id in use came from (``--check`` and the start-up log say it)."""

    SETTING = "setting"
    KEPT = "kept"
    FIRST = "first start"
    NO_STATE = "no state directory"
    MACHINE_CHANGED = "machine changed"
    UNREADABLE = "unreadable file"


_PHRASES = {
    PcIdSource.SETTING: "set by OCTOHUB_PC_ID",
    PcIdSource.KEPT: "kept from the first start in {path}",
    PcIdSource.FIRST: "derived from host name and MAC; kept in {path} from the first start on",
    PcIdSource.NO_STATE: "derived from host name and MAC because there is no state directory",
    PcIdSource.MACHINE_CHANGED: "re-derived from host name and MAC because the machine changed ({detail})",
    PcIdSource.UNREADABLE: "derived from host name and MAC because {path} cannot be read ({detail})",
}


@dataclass(frozen=True)
class PcId:
    """The pc_id in use and why.

    Attributes:
        value: the pc_id.
        source: where it came from.
        path: the identity file that keeps it, if any.
        detail: what changed or went wrong, for the log (empty when nothing did).
    """

    value: str
    source: PcIdSource
    path: Optional[Path] = None
    detail: str = ""

    def describe(self) -> str:
        """Why this pc_id, in one phrase: ``set by OCTOHUB_PC_ID``, ``kept from the first start in <file>``..."""
        return _PHRASES[self.source].format(path=self.path, detail=self.detail)


def identity_file(state_dir: Union[str, Path], instance: Optional[str] = None) -> Path:
    """The file in ``state_dir`` that keeps the pc_id of ``instance`` (instance names are safe names)."""
    return Path(state_dir) / (f"pc_id-{instance}.json" if instance else "pc_id.json")


def resolve_pc_id(*, pc_id: Optional[str], instance: Optional[str], state_dir: Optional[str], save: bool = True,
                  hostname: Optional[str] = None, mac: Optional[str] = None,
                  log: Union[logging.Logger, logging.LoggerAdapter] = logger) -> PcId:
    """The pc_id a node uses: OCTOHUB_PC_ID, else the one kept in ``state_dir``, else derived.

    Never raises for a bad identity file: it is logged, and the id derived.

    Args:
        pc_id: OCTOHUB_PC_ID; it wins over everything.
        instance: OCTOHUB_INSTANCE, mixed into a derived id; each instance has its own file.
        state_dir: OCTOHUB_STATE_DIR (None or ``off``: no file, the id is derived every time).
        save: write the file when the id is new (``--check`` only looks).
        hostname, mac: this machine's, unless given (tests).
        log: where to say what changed.

    Returns:
        The :class:`PcId`.
    """
    if pc_id:
        return PcId(pc_id, PcIdSource.SETTING)
    if state_dir is None or state_dir == "off":
        return PcId(machine_pc_id(instance, hostname=hostname, mac=mac), PcIdSource.NO_STATE)
    host = socket.gethostname() if hostname is None else hostname
    machine = _stable_mac() if mac is None else mac
    path = identity_file(state_dir, instance)
    derived = machine_pc_id(instance, hostname=host, mac=machine)
    try:
        kept = _read(path)
    except (OSError, ValueError, ConfigError) as exc:
        result = PcId(derived, PcIdSource.UNREADABLE, path, f"{type(exc).__name__}: {exc}")
        log.warning("cannot read the pc_id kept in %s (%s); using %s, derived from host name and MAC",
                    path, result.detail, derived)
    else:
        if kept is None:
            result = PcId(derived, PcIdSource.FIRST, path)
        elif kept["machine"] == machine:
            if kept.get("hostname") != host:
                log.info("the host name is %r, not %r as at the first start; keeping pc_id %s (%s)",
                         host, kept.get("hostname"), kept["pc_id"], path)
            return PcId(kept["pc_id"], PcIdSource.KEPT, path)
        else:
            result = PcId(derived, PcIdSource.MACHINE_CHANGED, path,
                          f"{path} was written on MAC {kept['machine']}, this machine has {machine}")
            log.warning("%s was written for pc_id %s on a machine with MAC %s; this one has %s (a cloned machine, "
                        "a copied state directory or a new network card), so it gets its own pc_id %s; results "
                        "waiting for %s stay in that id's ledger", path, kept["pc_id"], kept["machine"], machine,
                        derived, kept["pc_id"])
    if save:
        _write(path, {"version": FILE_VERSION, "pc_id": derived, "machine": machine, "hostname": host,
                      "instance": instance}, log)
    return result


def _read(path: Path) -> Optional[dict[str, Any]]:
    """The identity file's content; None if there is none.

    Raises:
        OSError: it cannot be read.
        ValueError: it is not an identity file.
    """
    try:
        fd = open_private(path, os.O_RDONLY)  # a planted link is refused (ConfigError), not read
    except FileNotFoundError:
        return None
    with open(fd, encoding="utf-8") as file:
        text = file.read(64 * 1024)
    data = json.loads(text)  # json.JSONDecodeError is a ValueError
    if not (isinstance(data, dict) and isinstance(data.get("machine"), str) and data["machine"]
            and isinstance(data.get("pc_id"), str) and SAFE_NAME.match(data["pc_id"])):
        raise ValueError("not a pc_id file: no valid pc_id and machine")
    return data


def _write(path: Path, data: dict[str, Any], log: Union[logging.Logger, logging.LoggerAdapter]) -> None:
    """Write ``data`` to ``path`` atomically (temp file, then rename): a crash leaves the old file or the new."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        private_directory(path.parent)  # as the ledger makes it, and refused as it refuses it
        # Never through a link: os.replace() below renames over one at `path` without following it.
        with open(open_private(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except (OSError, ConfigError) as exc:  # a refused directory then stops the ledger's open at start
        log.warning("cannot keep pc_id %s in %s (%s: %s); a host-name change would give this node a new pc_id",
                    data["pc_id"], path, type(exc).__name__, exc)
        try:
            temp.unlink()
        except OSError:
            pass
        return
    log.info("pc_id %s kept in %s, with this machine's MAC %s", data["pc_id"], path, data["machine"])
