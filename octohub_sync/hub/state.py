"""Bookkeeping of the local hub: connections, pending tasks, results and what was received.

Everything here is guarded by one :class:`threading.Condition`; every change
notifies it, which is what :meth:`HubState.wait_for` waits on. Sockets are
duck-typed (``send``, ``close_socket``) and are never written to while the
lock is held, so a slow node cannot stall the others.

Why one module: everything a test waits on is guarded by one condition; split, a wait would
have to watch several locks.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from typing import Any, Callable, List, Optional, Union

from octohub_sync._wire.protocol import frame_size
from octohub_sync.hub import messages
from octohub_sync.hub.table import ConnectionTable, NodeSession

logger = logging.getLogger(__name__)

Frame = Union[str, bytes]


class _Task:
    """A task without a result yet: its serialized frame and where it last went."""

    __slots__ = ("pc_id", "frame", "sent_on")

    def __init__(self, pc_id: Optional[str], frame: str, sent_on: Optional[NodeSession]) -> None:
        self.pc_id = pc_id  # None: whichever node sends node_ready first
        self.frame = frame
        self.sent_on = sent_on


def _skips_pong(ws: Any, request_id: Any) -> bool:
    """Whether the pong to a JSON ping with ``request_id`` is one of those ``LocalHub.skip_pongs`` drops."""
    if not getattr(ws, "pongs_to_skip", 0) or not isinstance(request_id, str):
        return False
    if not request_id.encode("utf-8", "replace").startswith(ws.skip_prefix):
        return False
    ws.pongs_to_skip -= 1
    return True


class HubState:
    """Connections, tasks and what one hub saw; thread-safe, shared by its servers.

    The recorded collections (:attr:`results`, :attr:`received`, :attr:`connections`,
    :attr:`api_requests`) are handed out as they are, to be read; only the methods
    here change them.

    Args:
        dialect: ``"seed"`` or ``"go"``: message forms, and the go table rule (docs/protocol.md §5).
        redeliver: on node_ready, re-send tasks sent earlier to that pc_id without a result.
        notify_replaced: tell an evicted connection why before dropping it.
        clock: the hub's clock, for the timestamps of its replies.
    """

    def __init__(
        self, *, dialect: str, redeliver: bool, notify_replaced: bool, clock: Callable[[], float]
    ) -> None:
        self._cond = threading.Condition()
        self._dialect = dialect
        self._redeliver = redeliver
        self._notify_replaced = notify_replaced
        self._clock = clock
        self._table = ConnectionTable(remove_by_pc_id=dialect == messages.GO)
        self._results: dict[str, list[dict]] = {}
        self._progress: dict[str, list[dict]] = {}
        self._received: list[dict] = []
        self._connections: list[dict] = []
        self._api_requests: list[dict] = []
        self._forgotten: list[dict] = []
        self._handshakes_rejected = 0
        self._kinds: Counter[str] = Counter()
        self._frames: Counter[str] = Counter()
        self._crashes: list[dict] = []
        self._pending: dict[str, _Task] = {}

    # -- records -----------------------------------------------------------

    @property
    def results(self) -> dict[str, list[dict]]:
        """task_id -> every task_result received for it, duplicates included."""
        return self._results

    @property
    def progress(self) -> dict[str, list[dict]]:
        """task_id -> every task_progress received for it, in order."""
        return self._progress

    @property
    def received(self) -> list[dict]:
        """Every JSON object received from nodes, in order, each with an added ``_pc_id`` and ``_bytes``."""
        return self._received

    @property
    def connections(self) -> list[dict]:
        """The record (:attr:`NodeSession.info`) of every accepted connection, in order."""
        return self._connections

    @property
    def api_requests(self) -> list[dict]:
        """Every API request recorded by :meth:`record_api`, in order."""
        return self._api_requests

    @property
    def forgotten(self) -> list[dict]:
        """A snapshot: records of the connections the go table lost while they were open."""
        with self._cond:
            return list(self._forgotten)

    @property
    def handshakes_rejected(self) -> int:
        """How many WebSocket handshakes were refused."""
        return self._handshakes_rejected

    def record_api(self, record: dict[str, Any]) -> None:
        """Append one API request's record."""
        with self._cond:
            self._api_requests.append(record)
            self._cond.notify_all()

    def reject_handshake(self) -> None:
        """Count one refused WebSocket handshake."""
        with self._cond:
            self._handshakes_rejected += 1
            self._cond.notify_all()

    def count(self, kind: str) -> int:
        """How many received messages had that kind."""
        with self._cond:
            return self._kinds[kind]

    def count_frame(self, opcode: str) -> None:
        """Count one frame received from a node, by opcode (``ping``, ``pong``, ``text``, ..)."""
        with self._cond:
            self._frames[opcode] += 1
            self._cond.notify_all()

    def frames(self, opcode: str) -> int:
        """How many frames with that opcode were counted."""
        with self._cond:
            return self._frames[opcode]

    @property
    def crashes(self) -> list[dict]:
        """A snapshot: every crash of the WebSocket server (pc_id, why, time)."""
        with self._cond:
            return list(self._crashes)

    def record_crash(self, pc_id: str, why: str) -> None:
        """The WebSocket server crashed, because of a frame from ``pc_id``."""
        with self._cond:
            self._crashes.append({"pc_id": pc_id, "why": why, "time": time.monotonic()})
            self._cond.notify_all()

    def pending_ids(self) -> List[str]:
        """Ids of the tasks that have no result yet."""
        with self._cond:
            return list(self._pending)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds, re-checking on every change; its value at the end."""
        with self._cond:
            return bool(self._cond.wait_for(predicate, timeout))

    # -- connections -------------------------------------------------------

    def attach(self, pc_id: str, ws: Any) -> NodeSession:
        """Register a new connection; the previous one of that pc_id, if any, is evicted."""
        session = NodeSession(pc_id, ws)
        with self._cond:
            old = self._table.add(session)
            self._connections.append(session.info)
            self._cond.notify_all()
        if old is not None:
            self._evict(old)
        return session

    def _evict(self, old: NodeSession) -> None:
        logger.info("new connection for %s replaces the previous one", old.pc_id)
        if self._notify_replaced:
            # Written at once, ahead of the go dialect's queue: the socket closes next (the Go server's own
            # notice is lost that way, which notify_replaced=False reproduces).
            self._send_quietly(old, messages.dumps(messages.replaced(self._dialect)), now=True)
        old.ws.close_socket()

    def mark_greeted(self, session: NodeSession) -> None:
        """The node has its ``connected`` message; tasks may now go to it directly."""
        with self._cond:
            session.greeted = True

    def detach(self, session: NodeSession) -> None:
        """A connection ended: record it and update the table (its pending tasks stay pending).

        In the go dialect this may forget a newer, still open connection of the same
        pc_id, as the Go server's ``RemoveConnection`` does (docs/protocol.md §5).
        """
        # websockets reports the code the node sent, or 1006 when no close frame came.
        ws = session.ws
        code, reason = getattr(ws, "close_code", None), getattr(ws, "close_reason", None)
        with self._cond:
            session.info.update(closed=time.monotonic(), close_code=code, close_reason=reason)
            lost = self._table.remove(session)
            if lost is not None:
                self._forgotten.append(lost.info)
                logger.info("the end of an old connection of %s made the hub forget the open one", lost.pc_id)
            self._cond.notify_all()

    def sessions(self, pc_id: Optional[str] = None) -> List[NodeSession]:
        """A snapshot of the sessions in the connection table (of one pc_id, or all)."""
        with self._cond:
            return self._table.known(pc_id)

    def open_sessions(self) -> List[NodeSession]:
        """A snapshot of every session still open, forgotten ones included."""
        with self._cond:
            return self._table.open_sessions()

    # -- node -> hub -------------------------------------------------------

    def on_frame(self, session: NodeSession, frame: Frame) -> None:
        """Record one frame from a node and answer it as the chosen hub dialect does."""
        try:
            message = json.loads(frame)
        except ValueError:
            logger.debug("ignoring a frame from %s that is not JSON", session.pc_id)
            return
        if not isinstance(message, dict):
            logger.debug("ignoring a JSON frame from %s that is not an object", session.pc_id)
            return
        kind = messages.kind_of(message)
        resend: List[str] = []
        with self._cond:
            message["_pc_id"] = session.pc_id
            message["_bytes"] = frame_size(frame) if isinstance(frame, str) else len(frame)
            self._received.append(message)
            self._kinds[kind] += 1
            if kind == "task_result":
                self._record_result(message)
            elif kind == "task_progress" and isinstance(message.get("task_id"), str):
                self._progress.setdefault(message["task_id"], []).append(message)
            elif kind == "node_ready":
                session.ready = True
                # The Go server sends tasks only through its table: a forgotten connection gets none.
                resend = [] if session.forgotten else self._claim_for(session)
            self._cond.notify_all()
        for task_frame in resend:
            self._send_quietly(session, task_frame)
        reply = messages.reply_to(self._dialect, message, self._clock())
        if reply is not None and kind == "ping" and _skips_pong(session.ws, message.get("request_id")):
            reply = None  # lost, as in the Go server's full queue
        if reply is not None:
            self._send_quietly(session, messages.dumps(reply))

    def _record_result(self, message: dict) -> None:
        task_id = message.get("task_id")
        if isinstance(task_id, str):
            self._results.setdefault(task_id, []).append(message)
            self._pending.pop(task_id, None)

    def _claim_for(self, session: NodeSession) -> List[str]:
        """Tasks to (re)send on a connection that just became ready."""
        frames = []
        for task in self._pending.values():
            if task.pc_id not in (None, session.pc_id) or task.sent_on is session:
                continue
            if task.sent_on is not None and not self._redeliver:
                continue  # a hub without redelivery loses what it sent to a dead connection
            task.pc_id = session.pc_id
            task.sent_on = session
            frames.append(task.frame)
        if frames:
            logger.debug("delivering %d pending task(s) to %s", len(frames), session.pc_id)
        return frames

    # -- hub -> node -------------------------------------------------------

    def add_task(self, task_id: str, pc_id: Optional[str], frame: str, *, at_close: Optional[float] = None) -> None:
        """Record a task as pending and send it now if its node is connected.

        ``at_close``: send it when the node's close frame arrives, just before the hub answers it,
        which it does that many seconds later.

        Raises:
            ConnectionError: ``at_close`` and that node is not connected.
        """
        with self._cond:
            session = self._table.target(pc_id)
            owner = pc_id if pc_id is not None else (session.pc_id if session else self._table.last_pc_id)
            if session is not None and not session.greeted:
                session = None  # a task must not overtake "connected": node_ready will claim it
            if at_close is not None:
                if session is None:
                    raise ConnectionError(f"no node connected with pc_id {pc_id!r}" if pc_id else "no node connected")
                session.ws.at_close.append(frame)
                session.ws.close_delay = at_close
            self._pending[task_id] = _Task(owner, frame, session)
            self._cond.notify_all()
        if session is not None and at_close is None:
            self._send_quietly(session, frame)

    def owner(self, task_id: str) -> Optional[str]:
        """The pc_id a task without a result went to (or is meant for); None if unknown."""
        with self._cond:
            task = self._pending.get(task_id)
            return None if task is None else task.pc_id

    def send(self, pc_id: Optional[str], frame: Frame) -> None:
        """Send one frame to a node.

        Raises:
            ConnectionError: no such node is connected, or the send failed.
        """
        with self._cond:
            session = self._table.target(pc_id)
        if session is None:
            raise ConnectionError(f"no node connected with pc_id {pc_id!r}" if pc_id else "no node connected")
        try:
            session.ws.send(frame)
        except Exception as exc:  # ConnectionClosed, OSError: both mean the node is gone
            raise ConnectionError(f"sending to {session.pc_id} failed: {exc}") from exc

    @staticmethod
    def _send_quietly(session: NodeSession, frame: Frame, *, now: bool = False) -> None:
        # A connection may die between lookup and send; its tasks then stay pending.
        try:
            (session.ws.send_now if now else session.ws.send)(frame)
        except Exception as exc:
            logger.debug("send to %s failed: %s", session.pc_id, exc)
