"""How the program hears that it should stop, on each platform (the program's, never the library's).

- SIGTERM (systemd, launchd, ``kill``), SIGINT (Ctrl+C) and, on Windows, SIGBREAK (Ctrl+Break):
  the first asks for a warm stop (drain), a second one exits at once (cold stop).
- Windows consoles (Windows' ``HandlerRoutine`` documentation): closing the console window sends
  CTRL_CLOSE_EVENT, a logoff or shutdown CTRL_LOGOFF_EVENT / CTRL_SHUTDOWN_EVENT (to services only).
  The C runtime turns them into SIGBREAK, but CPython's C-level handler only notes the signal and
  returns, and Windows ends the process as soon as a handler returns: no Python code would run.
  So :class:`StopRequests` registers a console control handler of its own (``SetConsoleCtrlHandler``
  through ctypes), which Windows runs on a thread it creates: it asks for the drain and holds the
  event until the node has stopped, or until just before the time Windows grants runs out
  (:data:`CONSOLE_GRANTS`); the program shortens its drain to fit (:meth:`StopRequests.budget`).
- Ctrl+C and Ctrl+Break pass that handler by (it returns FALSE) to reach Python as SIGINT/SIGBREAK,
  the same path as SIGTERM, except a second one: before Python 3.14 a lock wait on Windows is not
  interrupted by Ctrl+C, so the handler's own thread makes the cold stop at once.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from types import ModuleType
from typing import Any, Callable, Optional

__all__ = ["CONSOLE_GRANTS", "StopRequests"]

logger = logging.getLogger(__name__)

#: The stop signals, by name: those the platform lacks (SIGBREAK off Windows) are left out.
SIGNAL_NAMES = ("SIGTERM", "SIGINT", "SIGBREAK")
#: Windows console control events (wincon.h).
CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT = 0, 1, 2, 5, 6
#: Seconds Windows waits, by default, after each ending event before it ends the process: the
#: console host's HungAppTimeout for a close, WaitToKillTimeout for a logoff, WaitToKillServiceTimeout
#: for a service at shutdown (an interactive process gets WaitToKillTimeout, 5 s, there).
CONSOLE_GRANTS = {CTRL_CLOSE_EVENT: 5.0, CTRL_LOGOFF_EVENT: 5.0, CTRL_SHUTDOWN_EVENT: 20.0}
#: Kept from a grant for what follows the drain (closing the ledger, the last log lines).
GRANT_MARGIN = 1.0


class StopRequests:
    """Signals and console events that ask the program to stop; :attr:`requested` is set by the first.

    The program installs it, waits for :attr:`requested`, stops the node within :meth:`budget`,
    then sets :attr:`stopped` (which releases a console event's handler).

    Args:
        program: the name the cold stop's line starts with.
        exit_now: ends the process at once (a cold stop): ``os._exit``.
        clock: monotonic seconds (injected by tests).
        forced_exit: the exit status of a cold stop (the node's ``ExitCode.FAILED``).
        log: where its lines go (the node's logger, with the pc_id in front of each; default this module's).
    """

    def __init__(self, *, program: str = "octohub-node", exit_now: Callable[[int], Any] = os._exit,
                 clock: Callable[[], float] = time.monotonic, forced_exit: int = 1, log: Any = logger) -> None:
        self._log = log
        self.requested = threading.Event()
        self.stopped = threading.Event()
        #: What asked first (``SIGTERM``, ``console event 2``), once :attr:`requested` is set.
        self.reason = ""
        self._program = program
        self._exit_now = exit_now
        self._forced_exit = forced_exit
        self._clock = clock
        self._deadline: Optional[float] = None  # when Windows ends the process (a console event came)
        self._console_handler: Any = None  # the ctypes callback: kept alive for as long as Windows may call it

    def install(self, *, signals: ModuleType = signal, platform: str = sys.platform,
                kernel32: Any = None, functype: Any = None) -> list[str]:
        """Register the handlers (main thread only); returns what is handled, for the log.

        Args:
            signals: the :mod:`signal` module (tests pass one with other names).
            platform: ``sys.platform``; on ``win32`` the console control handler is registered too.
            kernel32: Windows' kernel32 (default: _platform/windows.py's).
            functype: the ctypes type of a ``HandlerRoutine`` (default: _platform/windows.py's).
        """
        handled = []
        for name in SIGNAL_NAMES:
            signum = getattr(signals, name, None)
            if signum is not None:
                signals.signal(signum, self.on_signal)
                handled.append(name)
        if platform == "win32" and self._install_console_handler(kernel32, functype):
            handled.append("console close/logoff/shutdown")
        return handled

    def on_signal(self, signum: int, frame: Any) -> None:
        """A stop signal: the first asks for a drain, the second exits at once."""
        if self.requested.is_set():
            self._cold_stop("second signal")
            return
        self.reason = _signal_name(signum)
        self._log.info("received %s: stopping (send it again to exit at once)", self.reason)
        self.requested.set()

    def on_console_event(self, ctrl_type: int) -> bool:
        """Windows' console control handler (on a thread Windows made); True: handled here."""
        grant = CONSOLE_GRANTS.get(ctrl_type)
        if grant is None:  # Ctrl+C, Ctrl+Break
            if self.requested.is_set():
                self._cold_stop("second Ctrl+C/Ctrl+Break")
            return False  # on to the C runtime's handler: SIGINT / SIGBREAK, handled as SIGTERM is
        held = grant - GRANT_MARGIN
        if self._deadline is None:
            self._deadline = self._clock() + held
        self._log.info("console event %d (window closed, logoff or shutdown): stopping within %.0f s, what "
                    "Windows grants", ctrl_type, held)
        self.reason = self.reason or f"console event {ctrl_type}"
        self.requested.set()
        # Returning lets Windows end the process: hold it until the node has stopped, or the grant is spent.
        self.stopped.wait(max(0.0, self._deadline - self._clock()))
        return True

    def budget(self, default: float) -> float:
        """How long the drain may take: ``default`` (OCTOHUB_SHUTDOWN_TIMEOUT), less if Windows ends us sooner."""
        if self._deadline is None:
            return default
        return max(0.0, min(default, self._deadline - self._clock() - GRANT_MARGIN))

    def _cold_stop(self, why: str) -> None:
        # Running handlers are abandoned: the operator asked twice. No logging here (a lock may be held).
        os.write(2, f"{self._program}: {why}, exiting now\n".encode())
        self._exit_now(self._forced_exit)

    def _install_console_handler(self, kernel32: Any, functype: Any) -> bool:
        last_error: Callable[[], object] = lambda: "unknown"
        if sys.platform == "win32":  # the real bindings, unless a test gave its own
            from . import windows

            kernel32 = windows.kernel32 if kernel32 is None else kernel32
            functype = windows.HandlerRoutine if functype is None else functype
            last_error = windows.last_error
        self._console_handler = functype(self.on_console_event)
        if kernel32.SetConsoleCtrlHandler(self._console_handler, True):
            return True
        self._log.warning("could not register a console control handler (error %s): closing the console window "
                          "ends the node without a drain", last_error())
        return False


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
