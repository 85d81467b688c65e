"""HMAC-SHA256 signatures of docs/protocol.md §1 (API request) and §2 (WebSocket URL).

Pure functions: no clock, no randomness, no I/O, so the test vectors of §1 and §2
pin them down exactly. :func:`redact` is how anything that may carry a
signature, or a proxy URL's user name and password, is made safe to log.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time
from typing import Mapping
from urllib.parse import urlencode

__all__ = [
    "api_headers",
    "api_string_to_sign",
    "new_nonce",
    "RedactingFilter",
    "redact",
    "sign_api",
    "sign_ws",
    "verify_api",
    "verify_ws",
    "ws_query",
]

#: How far apart node and hub clocks may be before a signature is refused (seconds).
MAX_SKEW = 300

#: (pattern, replacement) pairs that :func:`redact` applies in turn.
_SECRET_PATTERNS = (
    (re.compile(r"(signature=)[^&\s'\"]+", re.IGNORECASE), r"\1***"),
    (re.compile(r"(x-signature['\"]?\s*[:=]\s*['\"]?)[^,'\"\s}]+", re.IGNORECASE), r"\1***"),
    # user[:password]@ in any URL (a proxy's credentials); a password may hold anything but @ and spaces.
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s:'\"]*(?::[^@\s'\"]*)?@", re.IGNORECASE), r"\1***@"),
)


def api_string_to_sign(
    method: str, uri: str, params: Mapping[str, str], timestamp: int | str, nonce: str
) -> str:
    """Build ``METHOD&URI&PARAMS&TIMESTAMP&NONCE`` with params sorted by key, raw values."""
    joined = "&".join(f"{k}={params[k]}" for k in sorted(params))
    return f"{method.upper()}&{uri}&{joined}&{timestamp}&{nonce}"


def sign_api(key: str, string_to_sign: str) -> str:
    """Return base64(HMAC-SHA256(key, string_to_sign)), the ``X-Signature`` header value."""
    digest = hmac.new(key.encode(), string_to_sign.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_ws(key: str, pc_id: str, timestamp: int | str) -> str:
    """Return lower-case hex HMAC-SHA256(key, pc_id + timestamp) for the WebSocket URL."""
    message = f"{pc_id}{timestamp}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def new_nonce() -> str:
    """A random nonce, unique per request."""
    return secrets.token_hex(16)


def api_headers(
    key: str,
    method: str,
    uri: str,
    params: Mapping[str, str],
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The three signature headers of a signed API request (fresh time and nonce by default)."""
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = new_nonce() if nonce is None else nonce
    signature = sign_api(key, api_string_to_sign(method, uri, params, ts, nonce))
    return {"X-Signature": signature, "X-Timestamp": str(ts), "X-Nonce": nonce}


def ws_query(key: str, pc_id: str, *, timestamp: int | None = None) -> str:
    """The query string ``pc_id=..&timestamp=..&signature=..`` of a self-signed WebSocket URL."""
    ts = int(time.time()) if timestamp is None else timestamp
    return urlencode({"pc_id": pc_id, "timestamp": ts, "signature": sign_ws(key, pc_id, ts)})


def verify_api(
    key: str,
    method: str,
    uri: str,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    *,
    now: float | None = None,
) -> bool:
    """Check a signed API request as the hub does (signature and a ±300 s timestamp)."""
    try:
        ts = int(headers["X-Timestamp"])
        nonce = headers["X-Nonce"]
        given = headers["X-Signature"]
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - ts) > MAX_SKEW:
        return False
    expected = sign_api(key, api_string_to_sign(method, uri, params, ts, nonce))
    return hmac.compare_digest(expected, given)


def verify_ws(key: str, pc_id: str, timestamp: str, signature: str, *, now: float | None = None) -> bool:
    """Check a WebSocket URL signature as the Go server does (old timestamps refused, future ones not)."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    now = time.time() if now is None else now
    if now - ts > MAX_SKEW:
        return False
    return hmac.compare_digest(sign_ws(key, pc_id, ts), signature.lower())


def redact(text: str) -> str:
    """Replace every signature value and URL user:password in ``text`` by ``***`` so that it can be logged."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks signature values in every record it sees, ours or a library's."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True
