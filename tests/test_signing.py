"""Signing without a socket: the vectors of the API and WebSocket signatures (docs/protocol.md §1, §2),
verification, redaction (and the logging filter the program and the hub put on every record)."""
from __future__ import annotations

import logging

from octohub_sync._wire import signing
from octohub_sync._config.settings import PUBLIC_EXAMPLE_KEY

VECTOR_KEY = PUBLIC_EXAMPLE_KEY


def test_api_signature_vector_with_params() -> None:
    text = signing.api_string_to_sign("get", "/node/ws", {"pc_id": "node_abc123def456"}, 1632123456, "1632123456999")
    assert text == "GET&/node/ws&pc_id=node_abc123def456&1632123456&1632123456999"
    assert signing.sign_api(VECTOR_KEY, text) == "9V8vszyC1JvWKUxyFJvHZ1s/QoxXMj3s3pZWI8ABHVY="


def test_api_signature_vector_empty_params_keeps_separators() -> None:
    text = signing.api_string_to_sign("GET", "/node/ws", {}, 1632123456, "n1")
    assert text == "GET&/node/ws&&1632123456&n1"
    assert signing.sign_api(VECTOR_KEY, text) == "pn5pfiIa38Rq4m8gklkmbLtl+7wxAhtwxH0S+jANvWg="


def test_params_sorted_and_raw() -> None:
    text = signing.api_string_to_sign("GET", "/x", {"b": "2 3", "a": "é&"}, 1, "n")
    assert text == "GET&/x&a=é&&b=2 3&1&n"


def test_ws_signature_vector() -> None:
    assert signing.sign_ws(VECTOR_KEY, "node_abc123def456", 1632123456) == (
        "c116efe04a6bca8f3868466387ba4dff3c08eee2f92955c8b04092fdb9b11038")


def test_headers_fresh_per_request() -> None:
    a = signing.api_headers(VECTOR_KEY, "GET", "/node/ws", {"pc_id": "p"})
    b = signing.api_headers(VECTOR_KEY, "GET", "/node/ws", {"pc_id": "p"})
    assert a["X-Nonce"] != b["X-Nonce"]
    assert signing.verify_api(VECTOR_KEY, "GET", "/node/ws", {"pc_id": "p"}, a)


def test_verify_rejects_old_timestamp_and_wrong_key() -> None:
    old = signing.api_headers(VECTOR_KEY, "GET", "/node/ws", {}, timestamp=1000)
    assert not signing.verify_api(VECTOR_KEY, "GET", "/node/ws", {}, old)
    assert not signing.verify_ws("other-key", "p", "1632123456", signing.sign_ws(VECTOR_KEY, "p", 1632123456),
                                 now=1632123456)


def test_redact_masks_signatures() -> None:
    text = "ws://h:1/ws/node?pc_id=a&timestamp=1&signature=abc123 and X-Signature: 9V8v+/= end"
    clean = signing.redact(text)
    assert "abc123" not in clean and "9V8v" not in clean and "pc_id=a" in clean


def test_verify_ws_refuses_a_timestamp_that_is_not_a_number() -> None:
    signature = signing.sign_ws(VECTOR_KEY, "node_abc123def456", 1632123456)
    assert signing.verify_ws(VECTOR_KEY, "node_abc123def456", "1632123456", signature, now=1632123456)
    assert not signing.verify_ws(VECTOR_KEY, "node_abc123def456", "soon", signature, now=1632123456)


def record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("websocket", logging.ERROR, __file__, 1, msg, args, None)


def test_redacting_filter_masks_signatures_in_any_record() -> None:
    leaky = record("handshake to %s failed", "ws://h:8000/ws/node?pc_id=a&timestamp=1&signature=abc123def")
    assert signing.RedactingFilter().filter(leaky) is True  # masked, never dropped
    assert "abc123def" not in leaky.getMessage() and "signature=***" in leaky.getMessage()
    assert leaky.args is None
    clean = record("node %s connected", "node_a")
    assert signing.RedactingFilter().filter(clean) is True
    assert (clean.msg, clean.args) == ("node %s connected", ("node_a",))  # untouched, still lazy
