"""Every error octohub_sync raises derives from :class:`OctoHubError`.

The one exception to that rule is :class:`TaskCancelled`, which is not an error but a request
to stop, and therefore derives from :class:`BaseException` (see its docstring).
"""
from __future__ import annotations


class OctoHubError(Exception):
    """Base class of all octohub_sync errors."""


class ConfigError(OctoHubError):
    """A setting is missing or has a value that cannot be used.

    The message always names the variable (``OCTOHUB_...``) and, unless it is
    the key, the offending value.
    """

    def __init__(self, variable: str, value: object, reason: str, *, show_value: bool = True) -> None:
        self.variable = variable
        self.value = value
        self.reason = reason
        if not show_value:  # an unknown keyword: its value may be a key under a mistyped name
            super().__init__(f"{variable}: {reason}")
            return
        # A key's value is hidden; a key file's value is its path, which the operator needs to see.
        secret = "KEY" in variable and not variable.endswith("_FILE")
        shown = "(not set)" if value in (None, "") else "<hidden>" if secret else repr(value)
        super().__init__(f"{variable}={shown}: {reason}")


class ApiError(OctoHubError):
    """The API server did not hand out a WebSocket address.

    Attributes:
        status: HTTP status code, or ``None`` when no HTTP answer came back.
        hint: what the operator can do about it, if anything is known.
    """

    def __init__(self, message: str, *, status: int | None = None, hint: str = "") -> None:
        self.status = status
        self.hint = hint
        super().__init__(message)


class AuthError(ApiError):
    """The hub rejected the signature (HTTP 401)."""


class ProxyError(OctoHubError):
    """A proxy refused (HTTP 407, a SOCKS5 authentication failure, a tunnel it will not open) or
    could not be reached. The message names the proxy with its credentials masked.

    Attributes:
        status: the proxy's HTTP status, or ``None`` (SOCKS5, no answer).
        hint: what the operator can do about it.
    """

    def __init__(self, message: str, *, status: int | None = None, hint: str = "") -> None:
        self.status = status
        self.hint = hint
        super().__init__(message)


class LedgerUnavailable(OctoHubError):
    """The ledger (OCTOHUB_STATE_DIR) cannot be opened now: a full disk, an I/O error, a lock another
    program holds. The file was left as it is, with every result it holds; a later start sends them.
    """


class ProtocolError(OctoHubError):
    """A frame from the hub is not a message this node can act on."""


class GaveUpError(OctoHubError):
    """``OCTOHUB_MAX_RECONNECT_ATTEMPTS`` consecutive attempts failed; the node stopped."""


class TaskFailed(OctoHubError):
    """A task run through :meth:`octohub_sync.testing.LocalNode.run` was answered ``failed``.

    Attributes:
        result: the whole ``task_result`` message; ``result["error"]`` says why.
        traceback: the handler's traceback, as the node logged it (a failing test shows its line).
    """

    def __init__(self, result: dict, traceback: str = "") -> None:
        self.result = result
        #: The handler's traceback as the node logged it ("" if none: a timeout, a cancel).
        self.traceback = traceback
        message = f"task {result.get('task_id')} failed: {result.get('error')}"
        super().__init__(f"{message}\n{traceback}" if traceback else message)


class TaskCancelled(BaseException):
    """The running task was cancelled: raised inside a handler to make it stop.

    ``current_task().check_cancelled()`` raises it once the hub sent ``task_cancel`` or the
    task's time limit passed; with ``OCTOHUB_CANCEL_GRACE`` the node raises it inside the
    handler's thread itself after the grace period. A handler may also raise it. The hub
    is answered ``failed`` ``TaskCancelled: <reason>``.

    It derives from :class:`BaseException`, not :class:`OctoHubError`, for the reason
    ``asyncio.CancelledError`` does: a handler's ``except Exception:`` (a per-item error
    handler in a batch loop, say) must not swallow a cancellation. Catch it by name.
    """

    def __init__(self, reason: str = "task cancelled") -> None:
        # The default is what a hard stop carries: CPython raises it by calling the class with no argument.
        super().__init__(reason)


class WorkerCrashed(OctoHubError):
    """The child process running an ``isolation="process"`` task died (a segfault, ``os._exit``, a kill).

    The hub is answered ``failed`` ``WorkerCrashed: child process <pid> killed by signal SIGSEGV (11)``
    (or ``exited with code N``); the node replaces the child and serves on.
    """


class ResourceBroken(OctoHubError):
    """Raised by a handler whose resource no longer works (a browser that crashed, a session logged out).

    The task is answered ``failed`` ``ResourceBroken: <text>``, and the resources it uses on that
    worker are torn down: the next task there gets new ones (docs/resources.md).
    """


class ResourceError(OctoHubError):
    """A resource's setup raised: the task is answered ``failed`` ``ResourceError: <name>: <cause>``.

    Nothing is kept of the failed setup; the next task that uses the resource tries again.
    """
