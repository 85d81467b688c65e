"""The node's own frame builder writes exactly the frames websocket-client would."""
from __future__ import annotations

import pytest
import websocket

from octohub_sync._wire import frames

KEY = b"\x01\x7f\x80\xfe"


def _theirs(data, opcode: int) -> bytes:
    frame = websocket.ABNF.create_frame(data, opcode)
    frame.get_mask_key = lambda n: KEY
    return frame.format()


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 127, 65535, 65536, 70001])
def test_a_text_frame_is_byte_for_byte_websocket_clients(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    monkeypatch.setattr(frames.os, "urandom", lambda n: KEY)
    message = ("x" * size)[:size]
    assert frames.text(message) == _theirs(message, websocket.ABNF.OPCODE_TEXT)


def test_utf8_text_ping_and_pong_frames_match_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames.os, "urandom", lambda n: KEY)
    cjk = "节点任务结果" * 7000  # over 64 KiB once encoded: the 8-byte length
    assert frames.text(cjk) == _theirs(cjk, websocket.ABNF.OPCODE_TEXT)
    assert frames.ping(b"octohub-ack:42") == _theirs(b"octohub-ack:42", websocket.ABNF.OPCODE_PING)
    assert frames.ping(b"") == _theirs(b"", websocket.ABNF.OPCODE_PING)
    assert frames.pong(b"hub-1") == _theirs(b"hub-1", websocket.ABNF.OPCODE_PONG)


def test_every_frame_gets_a_fresh_mask_key() -> None:
    keys = {frames.text("same")[2:6] for _ in range(50)}
    assert len(keys) > 45  # 4 random bytes each: a repeat among 50 is a one-in-millions event


def test_a_lone_surrogate_is_refused_as_websocket_client_refuses_it() -> None:
    with pytest.raises(UnicodeEncodeError):
        frames.text("\ud800")
    with pytest.raises(UnicodeEncodeError):
        websocket.ABNF.create_frame("\ud800", websocket.ABNF.OPCODE_TEXT)
