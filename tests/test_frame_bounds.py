"""Frames bounded before their bytes arrive (issue 28, point 1): a real misbehaving server on 127.0.0.1.

The server completes the WebSocket handshake and then declares a 2 GiB frame, sends a frame just
over the bound, or floods continuation frames; the node must end that connection with close code
1009 before reading the payload, reconnect (later connections reach a real hub) and serve on. In
a child process, its peak RSS must stay within a small multiple of OCTOHUB_MAX_MESSAGE_BYTES.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil
import pytest
from websocket import ABNF

from octohub_sync.hub import LocalHub
from octohub_sync._transport.frame_reader import CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, BoundedFrames, Fragments, frame_bound

from .conftest import KEY
from .hostile_server import GIB, FrameAttack, declare, fragments, header

pytestmark = pytest.mark.timeout(60)

LIMIT = 64 * 1024  # OCTOHUB_MAX_MESSAGE_BYTES of these nodes
BOUND = frame_bound(LIMIT)
ROOT = Path(__file__).resolve().parents[1]

ATTACKS: dict[str, Callable[[Any], None]] = {
    # The header alone says 2 GiB; 32 MiB of it follow, which the node must never buffer.
    "declares 2 GiB": declare(2 * GIB, send=32 * 2**20),
    # Complete, one byte over the bound: read whole before, it was skipped and the session went on.
    "one byte over the bound": declare(BOUND + 1, send=BOUND + 1),
    # Fragments of 16 KiB that never end: their running total passes the bound.
    "continuation flood": fragments(16 * 1024, total=32 * 2**20),
}


class Refused(Exception):
    pass


def reader(data: bytes) -> tuple[BoundedFrames, list[int], list[tuple[int, str]]]:
    """A BoundedFrames over ``data``, recording each read's size and each refusal."""
    reads: list[int] = []
    refusals: list[tuple[int, str]] = []
    at = [0]

    def recv(n: int) -> bytes:
        reads.append(n)
        chunk = data[at[0]:at[0] + n]
        at[0] += n
        return chunk

    def refuse(code: int, why: str) -> Any:
        refusals.append((code, why))
        raise Refused(why)

    return BoundedFrames(recv, bound=BOUND, refuse=refuse), reads, refusals


def test_a_declared_length_over_the_bound_is_refused_before_its_payload_is_read() -> None:
    frames, reads, refusals = reader(header(0x1, 2 * GIB) + b"x" * 100)
    with pytest.raises(Refused):
        frames.recv_frame()
    assert refusals and refusals[0][0] == CLOSE_TOO_BIG and "2147483648" in refusals[0][1]
    assert reads == [2, 8]  # the header and its 64-bit length: not one byte of the payload


def test_fragments_are_bounded_by_their_running_total_and_a_control_frame_by_125_bytes() -> None:
    size = 60_000  # a 16-bit length: four fragments stay under the bound, the fifth passes it
    data = header(0x1, size, fin=False) + b"a" * size + (header(0x0, size, fin=False) + b"b" * size) * 4
    frames, reads, refusals = reader(data)
    for _ in range(4):
        frames.recv_frame()
    with pytest.raises(Refused):
        frames.recv_frame()  # the fifth fragment would bring the message to 5/4 of the bound
    assert refusals[0][0] == CLOSE_TOO_BIG and reads[-1] == 2  # refused from its header
    frames, _, refusals = reader(header(0x9, 1000) + b"p" * 1000)
    with pytest.raises(Refused):
        frames.recv_frame()
    assert refusals[0][0] == CLOSE_PROTOCOL_ERROR


def test_many_fragments_join_into_the_message() -> None:
    parts = [bytes([65 + i % 26]) * 3 for i in range(20_000)]
    data = header(0x1, 3, fin=False) + parts[0]
    for part in parts[1:-1]:
        data += header(0x0, 3, fin=False) + part
    data += header(0x0, 3) + parts[-1]
    frames, _, _ = reader(data)
    joined = Fragments()
    message = None
    for _ in parts:
        frame = frames.recv_frame()
        joined.validate(frame)
        joined.add(frame)
        if joined.is_fire(frame):
            message = joined.extract(frame)
    assert message is not None and message[0] == ABNF.OPCODE_TEXT and message[1].data == b"".join(parts)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_oversized_frame_ends_the_connection_with_1009_and_the_node_serves_on(make_node: Any, attack: str) -> None:
    with LocalHub(KEY) as hub, FrameAttack(hub.ws_port, ATTACKS[attack]) as front:
        node = make_node(_hub=hub, connect_mode="direct", ws_port=front.port, max_message_bytes=LIMIT)
        assert front.ended.wait(15), "the node never ended the attacked connection"
        assert front.close_codes == [CLOSE_TOO_BIG]
        assert node.wait_connected(15), node.stats()  # the next connection is relayed to the real hub
        result = hub.wait_result(hub.send_task("echo", {"after": attack}, pc_id=node.pc_id), 10)
        assert result["status"] == "completed" and result["result"]["echo"] == {"after": attack}


NODE = """
import sys
from octohub_sync import NodeWebSocketClient
from octohub_sync._config.settings import load_settings
port, hub_port = int(sys.argv[1]), int(sys.argv[2])
node = NodeWebSocketClient(settings=load_settings(dict(
    server_host="127.0.0.1", server_port=hub_port, ws_port=port, connect_mode="direct", signature_key=sys.argv[3],
    pc_id="node_rss", max_message_bytes=int(sys.argv[4]), reconnect_interval=0.2, reconnect_max_interval=1.0,
    status_interval=0), env_file=False, environ={}))
node.start()
print("started", flush=True)
sys.stdin.read()
node.stop(timeout=5)
"""


def peak_rss_growth(attack: Callable[[Any], None], *, limit: int, seconds: float = 10.0,
                    repo: Path = ROOT, reads: bool = True) -> tuple[int, list]:
    """Run a node (of the copy of the project at ``repo``) in a child process against ``attack``:
    its peak RSS growth (bytes) and the close codes (benchmarks/hostile_frames.py uses it too).
    ``reads=False``: the attacker never reads what the node writes."""
    with LocalHub(KEY) as hub, FrameAttack(hub.ws_port, attack, reads=reads) as front:
        child = subprocess.Popen([sys.executable, "-c", NODE, str(front.port), str(hub.api_port), KEY, str(limit)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=repo,
                                 env={**os.environ, "PYTHONPATH": str(repo)})
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == b"started"
            proc = psutil.Process(child.pid)
            base = proc.memory_info().rss
            peak = [base]
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    try:
                        peak[0] = max(peak[0], proc.memory_info().rss)
                    except psutil.Error:
                        return
                    done.wait(0.005)

            sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
            sampler.start()
            front.ended.wait(seconds)
            done.set()
            sampler.join(5)
            return peak[0] - base, front.close_codes
        finally:
            child.kill()
            child.wait(10)


@pytest.mark.parametrize("attack", ["declares 2 GiB", "continuation flood"])
def test_the_node_process_peak_rss_stays_within_a_small_multiple_of_the_limit(attack: str) -> None:
    growth, codes = peak_rss_growth(ATTACKS[attack], limit=LIMIT)
    # The bound is 4 x 64 KiB; reading, joining and copying a message costs a few times that.
    assert growth < 16 * 2**20, f"peak RSS grew by {growth / 2**20:.1f} MiB"
    assert codes == [CLOSE_TOO_BIG]


def ping_flood(seconds: float) -> Callable[[Any], None]:
    """An attack: ping frames of 125 bytes and JSON pings with a 1 MB request_id, for ``seconds``."""
    def attack(sock: Any) -> None:
        ping = header(0x9, 125) + b"p" * 125
        json_ping = b'{"action":"ping","request_id":"' + b"r" * 2**20 + b'"}'
        json_frame = header(0x1, len(json_ping)) + json_ping
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            sock.sendall(ping * 200 + json_frame)
    return attack


def test_a_ping_flood_from_a_hub_that_never_reads_costs_bounded_memory() -> None:
    """At most one pong waits (RFC 6455 §5.5.3) and the answers to JSON pings are bounded in bytes."""
    growth, _ = peak_rss_growth(ping_flood(8.0), limit=4 * 2**20, seconds=8.0, reads=False)
    print(f"ping flood, 8 s, a hub that never reads: peak RSS growth {growth / 2**20:.1f} MiB")
    assert growth < 48 * 2**20, f"peak RSS grew by {growth / 2**20:.1f} MiB"
