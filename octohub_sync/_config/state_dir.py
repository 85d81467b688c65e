"""The state directory (OCTOHUB_STATE_DIR): where it is by default, kept private, its files opened without following links.

What the node keeps there (the ledger ``<pc_id>.sqlite3`` with its ``-wal`` and ``-shm``, ``<pc_id>.lock``,
``<pc_id>.open``, ``pc_id.json``) may hold secrets, and the node may run as root: another user able to write
in the directory could read the results or, with a planted symbolic link, have the node write through it
into any file. So the directory is created 0700 and refused when others can write in it or it belongs to
another user (POSIX; on Windows its access list, not mode bits, protects it: docs/crash-safety.md), and every file in it is opened with ``O_NOFOLLOW`` (where there is none, a link is refused first).
"""
from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path
from typing import Optional

import platformdirs.macos
import platformdirs.unix
import platformdirs.windows
from platformdirs.api import PlatformDirsABC

from ..exceptions import ConfigError

__all__ = ["default_state_dir", "open_private", "private_directory", "refuse_links"]

#: The folder of the program's state under each platform's own place for it.
APP_NAME = "octohub-node"
# sys.platform -> how platformdirs answers there; any other platform is answered as Unix (XDG).
_PLATFORM_DIRS: dict[str, type[PlatformDirsABC]] = {
    "win32": platformdirs.windows.Windows,
    "darwin": platformdirs.macos.MacOS,
}
#: 0 where the system has no O_NOFOLLOW (Windows): a link is then refused by a check first.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_SETTING = "OCTOHUB_STATE_DIR"


def default_state_dir(*, platform: Optional[str] = None) -> Path:
    """Where the program keeps its ledger unless told otherwise (``OCTOHUB_STATE_DIR``).

    ``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``, its first entry) where systemd runs, else
    each platform's own place for an application's state, as :mod:`platformdirs` knows it:
    ``%LOCALAPPDATA%\\octohub-node`` on Windows, ``~/Library/Application Support/octohub-node``
    on macOS, ``$XDG_STATE_HOME/octohub-node`` (``~/.local/state/octohub-node``) elsewhere.

    Args:
        platform: the ``sys.platform`` to answer for (by default the one this process runs on).
    """
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux") and os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(os.pathsep)[0])
    dirs = _PLATFORM_DIRS.get(platform, platformdirs.unix.Unix)
    # appauthor=False: no vendor folder above ours on Windows; roaming=False: the ledger belongs to
    # this PC (%LOCALAPPDATA%), never to a profile that roams to other machines (%APPDATA%).
    return Path(dirs(APP_NAME, appauthor=False, roaming=False).user_state_dir)


def private_directory(directory: Path) -> None:
    """Create ``directory`` (mode 0700) unless it exists; refuse one other users can write in.

    Raises:
        ConfigError: naming OCTOHUB_STATE_DIR and the directory: it cannot be created, is no
            directory, is writable by group or others, or belongs to another user (POSIX).
    """
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # the umask may only narrow it
        info = os.stat(directory)  # a link to a directory is fine (systemd's DynamicUser= makes one)
    except OSError as exc:
        raise ConfigError(_SETTING, str(directory),
                          f"cannot create the state directory: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(_SETTING, str(directory), "not a directory")
    if sys.platform == "win32":
        return  # mode bits mean nothing there; the folder's access list protects it
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        who = " and ".join(name for name, bit in (("group", 0o020), ("others", 0o002)) if mode & bit)
        raise ConfigError(_SETTING, str(directory),
                          f"the state directory is writable by {who} (mode {mode:04o}): another user could replace "
                          f"the node's files or plant links there; make it private (chmod 700 '{directory}') "
                          "or choose another")
    user = os.geteuid()
    if info.st_uid != user:
        raise ConfigError(_SETTING, str(directory),
                          f"the state directory belongs to user id {info.st_uid}, not to this process's ({user}): "
                          f"its owner could plant links there; chown it to this user or choose another")


def open_private(path: Path, flags: int) -> int:
    """``os.open(path, flags)``, mode 0600 if it creates the file, never through a symbolic link.

    Raises:
        ConfigError: ``path`` is a symbolic link (naming OCTOHUB_STATE_DIR and the link).
        OSError: any other failure.
    """
    if not _NOFOLLOW:
        refuse_links(path)
    try:
        return os.open(path, flags | _NOFOLLOW, 0o600)
    except OSError as exc:
        # ELOOP: a link as the last component (EMLINK on FreeBSD); refuse_links says which.
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            refuse_links(path)
        raise


def refuse_links(*paths: Path) -> None:
    """Raise :class:`ConfigError` if any of ``paths`` is a symbolic link (absent ones are fine)."""
    for path in paths:
        if os.path.islink(path):
            raise ConfigError(_SETTING, str(path.parent),
                              f"{path.name} is a symbolic link (to {os.readlink(path)!r}): the node never writes "
                              "through a link in its state directory; remove it")
