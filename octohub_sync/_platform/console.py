"""Console output that cannot fail on a code page unable to show the text (for the programs only).

What a Python process writes to, by platform (CPython documentation of ``sys.stdout`` and
PEP 528, PEP 540):

- ``sys.stderr`` always uses ``errors="backslashreplace"``; ``sys.stdout`` uses ``"strict"``
  (``"surrogateescape"`` under the POSIX locale). So a log line on stderr is escaped, but a
  ``print()`` to stdout of text the encoding cannot represent raises ``UnicodeEncodeError``:
  the local hub's result lines, ``--demo``'s and ``--check``'s output, a task handler's own prints.
- Windows, a real console: since Python 3.6 (PEP 528) the standard streams are
  ``_WindowsConsoleIO``, written with ``WriteConsoleW`` as UTF-16, so every character can be
  written (whether it shows depends on the console's font).
- Windows, redirected (a pipe, a file, a service wrapper's log such as WinSW's or NSSM's): the
  streams use the ANSI code page (``GetACP()``, what ``locale.getpreferredencoding(False)``
  returns: cp1252 on a Western system, cp936 on a Simplified Chinese one), unless UTF-8 mode is on (``PYTHONUTF8=1`` or ``-X utf8``, PEP 540)
  or ``PYTHONIOENCODING`` says otherwise. Chinese text cannot be encoded in cp1252.
- Linux and macOS: the locale's encoding, UTF-8 almost everywhere (since Python 3.7 the C and
  POSIX locales turn UTF-8 mode on, PEP 540); ``LC_ALL=C PYTHONUTF8=0`` still gives ASCII with
  ``surrogateescape``, as does ``PYTHONIOENCODING=ascii``.

The fix keeps each stream's encoding (what the reader of the log or console expects) and only
turns "raise" into "write ``\\u4efb``": text the encoding can show stays verbatim, the rest stays
readable and never stops the program.
"""
from __future__ import annotations

import io
import sys

__all__ = ["tolerant_console"]

#: Error handlers that raise (or, for surrogateescape, raise on anything but a smuggled byte).
_FRAGILE = ("strict", "surrogateescape")


def tolerant_console() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` escape what their encoding cannot show.

    Call it first thing in a program's ``main``, before any handler writes to the streams
    (a ``logging.StreamHandler`` keeps a reference to the stream object, which
    ``reconfigure`` changes in place). Streams that are not a ``TextIOWrapper`` (``None`` under
    ``pythonw.exe``, a test's capture) are left alone.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors in _FRAGILE:
            stream.reconfigure(errors="backslashreplace")
