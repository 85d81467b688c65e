"""The frames the node reads: each frame's size judged from its header, fragments joined in linear time.

websocket-client reads the length a frame's header declares and then buffers all of it, so a hub
(or anything on the path) declaring 2 GiB makes the node allocate 2 GiB before any limit of ours
applies; it joins continuation frames with ``bytes +=``, whose cost grows with the square of the
message. :class:`BoundedFrames` takes the place of its ``frame_buffer`` on each connection (the one
object ``WebSocket.recv_frame`` calls, in every version from 1.6 on) and refuses, before reading
the payload, a frame whose declared length, or whose message's running total of fragments, passes
the bound: the connection then ends with close code 1009 (RFC 6455 §7.4.1), as websockets does
with ``max_size``. :class:`Fragments` takes the place of its ``continuous_frame``.

The bound is a small multiple of OCTOHUB_MAX_MESSAGE_BYTES (:func:`frame_bound`): a frame between
the limit and the bound is still read, so that a task the hub sent too large can be answered
``TaskTooLarge`` with its task_id (_node/dispatch.py); only a larger one costs the connection.
"""
from __future__ import annotations

import struct
from typing import Callable, NoReturn, Optional

from websocket import ABNF, WebSocketProtocolException

__all__ = ["BoundedFrames", "Fragments", "frame_bound", "payload_bytes", "CLOSE_PROTOCOL_ERROR", "CLOSE_TOO_BIG"]

#: Close code: a message too big to process (RFC 6455 §7.4.1).
CLOSE_TOO_BIG = 1009
#: Close code: the peer broke the protocol (a control frame over 125 bytes, §5.5).
CLOSE_PROTOCOL_ERROR = 1002
#: The bound is this many times OCTOHUB_MAX_MESSAGE_BYTES ...
BOUND_FACTOR = 4
#: ... and never below this (bytes): a small limit must leave room to read a task's id and refuse it.
MIN_BOUND = 64 * 1024

_CONTROL_MAX = 125
_DATA = (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY)
_UNPACK16 = struct.Struct("!H").unpack
_UNPACK64 = struct.Struct("!Q").unpack


def frame_bound(max_message_bytes: int) -> int:
    """The most bytes a frame, or a message's fragments together, may declare before the connection ends."""
    return max(BOUND_FACTOR * max_message_bytes, MIN_BOUND)


def payload_bytes(frame: ABNF) -> bytes:
    """A frame's payload as bytes: what the wire carries (websocket-client's type allows text too)."""
    data = frame.data
    return data.encode("utf-8") if isinstance(data, str) else bytes(data or b"")


class BoundedFrames:
    """Reads one frame at a time through websocket-client's buffer, judging its size from the header.

    Args:
        recv_strict: reads exactly n bytes (the ``recv_strict`` of the connection's own
            ``frame_buffer``, which keeps what a read brought beyond the frame).
        bound: the largest frame, and the largest total of one message's fragments (bytes).
        refuse: ends the connection with a close code and a reason; never returns (it raises).
    """

    def __init__(self, recv_strict: Callable[[int], bytes], *, bound: int,
                 refuse: Callable[[int, str], NoReturn]) -> None:
        self._recv = recv_strict
        self.bound = bound
        self._refuse = refuse
        self._message = 0  # bytes of the fragmented message read so far (0: none is open)

    def recv_frame(self) -> ABNF:
        """The next frame, validated as websocket-client validates it.

        Raises:
            whatever ``refuse`` raises: the frame or its message is too big, or a control frame is
            over 125 bytes; websocket.WebSocketProtocolException: the frame breaks RFC 6455.
        """
        b1, b2 = self._recv(2)
        fin, opcode, masked, length = b1 >> 7, b1 & 0x0F, b2 >> 7, b2 & 0x7F
        if length == 126:
            length = _UNPACK16(self._recv(2))[0]
        elif length == 127:
            length = _UNPACK64(self._recv(8))[0]
        if opcode >= 0x8:
            if length > _CONTROL_MAX:
                self._refuse(CLOSE_PROTOCOL_ERROR, f"control frame of {length} bytes (at most {_CONTROL_MAX})")
        else:
            total = length if opcode in _DATA else self._message + length
            if total > self.bound:
                what = "frame" if total == length else f"message of {total} bytes so far in fragments, the last"
                self._refuse(CLOSE_TOO_BIG, f"{what} declaring {length} bytes, over the bound of {self.bound} "
                                            f"(OCTOHUB_MAX_MESSAGE_BYTES x {BOUND_FACTOR}, at least {MIN_BOUND})")
            self._message = 0 if fin else total
        mask = self._recv(4) if masked else None
        payload = self._recv(length) if length else b""
        if mask is not None:
            payload = ABNF.mask(mask, payload)  # a hub must not mask (RFC 6455 §5.1); websocket-client unmasks
        frame = ABNF(fin, (b1 >> 6) & 1, (b1 >> 5) & 1, (b1 >> 4) & 1, opcode, masked, payload)
        frame.validate(True)  # dispatch checks UTF-8 itself
        return frame


class Fragments:
    """A message's fragments, joined once its last frame arrives (websocket-client's ``continuous_frame``).

    websocket-client calls :meth:`validate`, :meth:`add`, :meth:`is_fire` and :meth:`extract` for
    every data frame. One frame, the usual case, is handed on as it is; the fragments of a longer
    message go into one ``bytearray`` (amortised linear, and no object per fragment: a flood of
    one-byte fragments costs its bytes, not a Python object each).
    """

    def __init__(self) -> None:
        self._opcode: Optional[int] = None  # of the message whose fragments are arriving, else None
        self._parts: Optional[bytearray] = None

    def validate(self, frame: ABNF) -> None:
        """A continuation frame must continue a message; a new message must not start inside one."""
        if self._opcode is None and frame.opcode == ABNF.OPCODE_CONT:
            raise WebSocketProtocolException("Illegal frame")
        if self._opcode is not None and frame.opcode in _DATA:
            raise WebSocketProtocolException("Illegal frame")

    def add(self, frame: ABNF) -> None:
        """Keep the frame's data until the message's last frame."""
        if frame.opcode != ABNF.OPCODE_CONT:
            self._opcode = frame.opcode
            if not frame.fin:
                self._parts = bytearray(payload_bytes(frame))
        elif self._parts is not None:
            self._parts += payload_bytes(frame)

    def is_fire(self, frame: ABNF) -> bool:
        """Is the message complete?"""
        return bool(frame.fin)

    def extract(self, frame: ABNF) -> tuple[int, ABNF]:
        """The message's opcode and its last frame, carrying the whole message's data."""
        opcode, parts = self._opcode, self._parts
        self._opcode = self._parts = None
        if parts is not None:  # add() took the last frame's data too
            frame.data = bytes(parts)
        return opcode if opcode is not None else frame.opcode, frame
