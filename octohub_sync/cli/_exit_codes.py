"""The program's exit codes, for the node, --check and --demo alike."""
from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    """What a supervisor can tell from the exit status."""

    #: Stopped as asked, every result sent; --check and --demo: every step passed.
    OK = 0
    #: Gave up reconnecting, stopped with results unsent, or a second signal; --check: a step failed.
    FAILED = 1
    #: A setting is invalid (the message names the variable); restarting will not help.
    CONFIG = 2
    #: The node recycled itself (OCTOHUB_MAX_TASKS, OCTOHUB_MAX_MEMORY or OCTOHUB_MAX_UPTIME): it drained
    #: and sent its results; not 0, so that Restart=on-failure, launchd's KeepAlive (SuccessfulExit=false)
    #: and WinSW's onfailure start it again.
    RECYCLE = 3
