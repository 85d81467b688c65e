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

    def __init__(self, variable: str, value: object, reason: str) -> None:
        self.variable = variable
        self.value = value
        self.reason = reason
        shown = "(not set)" if value in (None, "") else "<hidden>" if "KEY" in variable else repr(value)
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


class ProtocolError(OctoHubError):
    """A frame from the hub is not a message this node can act on."""


class GaveUpError(OctoHubError):
    """``OCTOHUB_MAX_RECONNECT_ATTEMPTS`` consecutive attempts failed; the node stopped."""


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
