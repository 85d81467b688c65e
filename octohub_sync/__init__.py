"""octohub_sync: the synchronous, threaded node client for OctoHub."""
from __future__ import annotations

import logging

from ._version import __version__
from .app import Handlers
from .client import NodeWebSocketClient
from .config import Settings, load_settings
from .exceptions import ApiError, AuthError, ConfigError, GaveUpError, OctoHubError, ProtocolError, ProxyError

__all__ = [
    "ApiError",
    "AuthError",
    "ConfigError",
    "GaveUpError",
    "Handlers",
    "NodeWebSocketClient",
    "OctoHubError",
    "ProtocolError",
    "ProxyError",
    "Settings",
    "__version__",
    "load_settings",
]


# A library never configures logging; the program that runs it does (see octohub_sync.cli).
logging.getLogger(__name__).addHandler(logging.NullHandler())
