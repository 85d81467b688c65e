"""What a log record of the library may carry: signatures masked, control characters escaped.

The hub chooses task ids, task types, disconnect reasons, error texts and message kinds; a
newline in one of them would start a forged line in a log file, an ANSI escape would repaint a
terminal. :class:`SafeLogFilter` escapes every control character of a record's message (``\\n``,
``\\x1b``: as ``repr()`` writes them) and masks signatures (:func:`~octohub_sync._wire.signing.redact`).

A filter on a logger sees only the records logged on that logger itself: a record of
``octohub_sync._transport.connection`` propagates to the handlers of ``octohub_sync`` but never through its
filters. So :func:`install` puts the filter on every logger the library logs on: ``octohub_sync``,
one per module of the package (created here, so a module imported later gets the same logger
from ``logging.getLogger(__name__)``) and websocket-client's ``websocket`` (its handshake failure
quotes the hub's answer). It adds no handler and sets no level: the program decides where records go.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Iterator, Optional

__all__ = ["GoodbyeFilter", "PACKAGE_DIR", "SafeLogFilter", "TRACEBACK", "escape_controls", "format_traceback", "install",
           "library_loggers", "user_frames"]

#: The record attribute (``extra={TRACEBACK: text}``) of a traceback :func:`format_traceback` made safe;
#: :class:`SafeLogFilter` shows it where a formatter shows ``exc_info``, below the message.
TRACEBACK = "octohub_traceback"

#: Other libraries' loggers whose records can quote what the hub sent or the signed URL.
THIRD_PARTY_LOGGERS = ("websocket",)

#: C0 controls, DEL, C1 controls (NEL among them) and the Unicode line and paragraph separators:
#: each one can end a line or drive a terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

_ESCAPES = {code: repr(chr(code))[1:-1] for code in [*range(0x20), *range(0x7f, 0xa0), 0x2028, 0x2029]}


def escape_controls(text: str) -> str:
    """``text`` with every control character written as ``repr()`` writes it (a newline as ``\\n``)."""
    if _CONTROL.search(text) is None:  # the common case costs one scan
        return text
    return text.translate(_ESCAPES)


class SafeLogFilter(logging.Filter):
    """Escapes control characters and masks signatures in the message of every record it sees; drops none."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: its handler reports it
            return True
        clean = _redact(escape_controls(text))
        if clean != text:
            record.msg, record.args = clean, None
        shown = getattr(record, TRACEBACK, None)
        if shown and not record.exc_text:  # Formatter.format() appends exc_text, exc_info or not
            record.exc_text = shown
        return True


class GoodbyeFilter(logging.Filter):
    """websocket-client's ``... - goodbye`` at the end of every session, an ERROR even after a clean
    close, becomes DEBUG: the node logs each end of a connection itself, at the level it deserves
    (_node/connection_log.py). Shown only where the ``websocket`` logger is enabled for DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or not str(record.msg).endswith(" - goodbye"):
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


#: Causes and contexts followed at most this deep: the first few explain, the rest is noise.
_CHAIN = 5


def format_traceback(exc: BaseException, *, with_text: bool = True, max_chars: int = 500) -> str:
    """A handler's traceback as a log may carry it: only frames outside this package, its chain of causes.

    Every frame line (the user's code) has its control characters escaped and signatures masked; each
    exception's last line, ``Type: message``, is masked, escaped and cut to ``max_chars``, or ``Type`` alone
    when ``with_text`` is False (OCTOHUB_LOG_TASK_ERRORS=type: a message may hold personal data).
    Returns ``""`` when no frame is the user's (the node's own error, a crashed child).
    """
    chain: list[BaseException] = []
    seen = set()
    cause: Optional[BaseException] = exc
    while cause is not None and id(cause) not in seen and len(chain) < _CHAIN:
        seen.add(id(cause))
        chain.append(cause)
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    parts: list[str] = []
    for item in reversed(chain):  # the oldest first, as Python prints them
        # An isolated handler's frames were formatted in its child (_isolation/child.py).
        lines = getattr(item, "child_traceback", "") or user_frames(item)
        if not lines:
            continue
        if parts:
            parts.append("\nThe above exception was the direct cause of the following exception:\n\n"
                         if item.__cause__ is not None else
                         "\nDuring handling of the above exception, another exception occurred:\n\n")
        text = f"{type(item).__name__}: {item}" if with_text and str(item) else type(item).__name__
        if len(text) > max_chars:
            text = text[:max_chars] + "..."
        lines = "".join(_redact(escape_controls(line)) + "\n" for line in lines.rstrip("\n").split("\n"))
        parts.append("Traceback (most recent call last):\n" + lines + _redact(escape_controls(text)) + "\n")
    return "".join(parts).rstrip("\n")


def user_frames(exc: BaseException) -> str:
    """The frames of ``exc``'s traceback outside this package, as Python prints them (``""``: none)."""
    import traceback  # here: only a failure pays for it
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(PACKAGE_DIR)]
    return "".join(traceback.StackSummary.from_list(frames).format())


def _redact(text: str) -> str:
    # Imported here, not with the package: importing octohub_sync stays light (pytest imports it in
    # every run of every project that installed it, for its plugin).
    from .._wire.signing import redact
    return redact(text)


#: The package whose loggers get the filter: this module's, two levels up.
_PACKAGE = __name__.split(".")[0]
#: Its directory: a frame under it is the node's, not the user's.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_FILTER = SafeLogFilter()
_GOODBYE = GoodbyeFilter()


def library_loggers() -> Iterator[str]:
    """The names of the loggers the library logs on: the package's, each module's, websocket-client's."""
    yield _PACKAGE
    yield from _module_names(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), _PACKAGE)
    yield from THIRD_PARTY_LOGGERS


def _module_names(path: str, prefix: str) -> Iterator[str]:
    # The files, not imports: a module imported later (the doctor, the hub) is covered too. Not
    # pkgutil.iter_modules(): it imports inspect, which would treble the package's import time.
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:  # not a directory (a zip, a frozen program): the package's own logger still has it
        return
    for entry in entries:
        if entry.is_file() and entry.name.endswith(".py") and entry.name != "__init__.py":
            yield f"{prefix}.{entry.name[:-3]}"
        elif entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
            yield f"{prefix}.{entry.name}"
            yield from _module_names(entry.path, f"{prefix}.{entry.name}")


def install() -> None:
    """Put the one :class:`SafeLogFilter` on each of :func:`library_loggers`; calling it again changes nothing."""
    for name in library_loggers():
        logging.getLogger(name).addFilter(_FILTER)  # addFilter() skips a filter already there
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).addFilter(_GOODBYE)
