"""Bookkeeping of the local hub: connections, pending tasks, results and what was received.

Everything here is guarded by one :class:`threading.Condition`; every change
notifies it, which is what :meth:`LocalHub.wait_for` waits on. Sockets are
duck-typed (``send``, ``close_socket``) and are never written to while the
lock is held, so a slow node cannot stall the others.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from typing import Any, Callable, List, Optional, Union

from octohub_sync.hub import messages

logger = logging.getLogger(__name__)

Frame = Union[str, bytes]


class Link:
    """One accepted WebSocket connection of a node.

    Attributes:
        pc_id: the node's id, from the signed URL.
        ws: the server-side connection (anything with ``send`` and ``close_socket``).
        info: the public record in :attr:`HubState.connections`.
        greeted: the ``connected`` message went out; tasks are sent directly from then on.
        ready: ``node_ready`` was received on this connection.
        forgotten: the go-dialect connection table lost this connection while it was open.
    """

    __slots__ = ("pc_id", "ws", "info", "greeted", "ready", "forgotten")

    def __init__(self, pc_id: str, ws: Any, info: dict[str, Any]) -> None:
        self.pc_id = pc_id
        self.ws = ws
        self.info = info
        self.greeted = False
        self.ready = False
        self.forgotten = False


class _Task:
    """A task without a result yet: its serialized frame and where it last went."""

    __slots__ = ("pc_id", "frame", "sent_on")

    def __init__(self, pc_id: Optional[str], frame: str, sent_on: Optional[Link]) -> None:
        self.pc_id = pc_id  # None: whichever node sends node_ready first
        self.frame = frame
        self.sent_on = sent_on


class HubState:
    """Connections, tasks and received messages of one hub; thread-safe."""

    def __init__(
        self, *, dialect: str, redeliver: bool, notify_replaced: bool, clock: Callable[[], float]
    ) -> None:
        self.cond = threading.Condition()
        self.dialect = dialect
        self.redeliver = redeliver
        self.notify_replaced = notify_replaced
        self.clock = clock
        self.links: dict[str, Link] = {}
        self.results: dict[str, list[dict]] = {}
        self.received: list[dict] = []
        self.connections: list[dict] = []
        self.api_requests: list[dict] = []
        self.forgotten: list[dict] = []
        self.handshakes_rejected = 0
        self._open: set[Link] = set()
        self._kinds: Counter[str] = Counter()
        self._pending: dict[str, _Task] = {}
        self._last_pc_id: Optional[str] = None
        #: Called (without the lock) after each new connection, e.g. to re-plan the read deadline.
        self.on_attach: Optional[Callable[[], None]] = None

    # -- connections -------------------------------------------------------

    def attach(self, pc_id: str, ws: Any) -> Link:
        """Register a new connection; the previous one of that pc_id, if any, is evicted."""
        info = {"pc_id": pc_id, "opened": time.monotonic(), "closed": None}
        info.update(close_code=None, close_reason=None)
        link = Link(pc_id, ws, info)
        with self.cond:
            old = self.links.get(pc_id)
            self.links[pc_id] = link
            self._open.add(link)
            self._last_pc_id = pc_id
            self.connections.append(link.info)
            self.cond.notify_all()
        if old is not None:
            self._evict(old)
        if self.on_attach is not None:
            self.on_attach()
        return link

    def _evict(self, old: Link) -> None:
        logger.info("new connection for %s replaces the previous one", old.pc_id)
        if self.notify_replaced:
            self._send_quietly(old, json.dumps(messages.replaced(self.dialect), ensure_ascii=False))
        old.ws.close_socket()

    def mark_greeted(self, link: Link) -> None:
        """The node has its ``connected`` message; tasks may now go to it directly."""
        with self.cond:
            link.greeted = True

    def detach(self, link: Link) -> None:
        """Forget a connection that ended (its pending tasks stay pending).

        The seed hub removes the pc_id's entry only if it is this connection. The Go
        server's ``RemoveConnection`` removes it by pc_id alone, so the cleanup of a
        replaced connection also forgets the newer one that is still open (docs/protocol.md §5).
        """
        # websockets reports the code the node sent, or 1006 when no close frame came.
        code, reason = getattr(link.ws, "close_code", None), getattr(link.ws, "close_reason", None)
        with self.cond:
            link.info.update(closed=time.monotonic(), close_code=code, close_reason=reason)
            self._open.discard(link)
            entry = self.links.get(link.pc_id)
            if entry is link:
                del self.links[link.pc_id]
            elif entry is not None and self.dialect == messages.GO:
                del self.links[link.pc_id]
                entry.forgotten = True
                self.forgotten.append(entry.info)
                logger.info("the connection table lost the open connection of %s (Go RemoveConnection)", link.pc_id)
            self.cond.notify_all()

    def target(self, pc_id: Optional[str]) -> Optional[Link]:
        """The live link of ``pc_id``, or by default of the only/most recently connected node."""
        with self.cond:
            if pc_id is not None:
                return self.links.get(pc_id)
            if not self.links:
                return None
            link = self.links.get(self._last_pc_id or "")
            return link or max(self.links.values(), key=lambda item: item.info["opened"])

    def live_links(self, pc_id: Optional[str] = None) -> List[Link]:
        """A snapshot of the current links (of one pc_id, or all)."""
        with self.cond:
            if pc_id is None:
                return list(self.links.values())
            link = self.links.get(pc_id)
            return [] if link is None else [link]

    def open_links(self) -> List[Link]:
        """A snapshot of every connection still open, forgotten ones included."""
        with self.cond:
            return list(self._open)

    # -- node -> hub -------------------------------------------------------

    def on_frame(self, link: Link, frame: Frame) -> None:
        """Record one frame from a node and answer it as the chosen hub dialect does."""
        try:
            message = json.loads(frame)
        except ValueError:
            logger.debug("ignoring a frame from %s that is not JSON", link.pc_id)
            return
        if not isinstance(message, dict):
            logger.debug("ignoring a JSON frame from %s that is not an object", link.pc_id)
            return
        kind = messages.kind_of(message)
        resend: List[str] = []
        with self.cond:
            message["_pc_id"] = link.pc_id
            self.received.append(message)
            self._kinds[kind] += 1
            if kind == "task_result":
                self._record_result(message)
            elif kind == "node_ready":
                link.ready = True
                # The Go server sends tasks only through its table: a forgotten connection gets none.
                resend = [] if link.forgotten else self._claim_for(link)
            self.cond.notify_all()
        for task_frame in resend:
            self._send_quietly(link, task_frame)
        reply = messages.reply_to(self.dialect, message, self.clock())
        if reply is not None:
            self._send_quietly(link, json.dumps(reply, ensure_ascii=False))

    def _record_result(self, message: dict) -> None:
        task_id = message.get("task_id")
        if isinstance(task_id, str):
            self.results.setdefault(task_id, []).append(message)
            self._pending.pop(task_id, None)

    def _claim_for(self, link: Link) -> List[str]:
        """Tasks to (re)send on a connection that just became ready."""
        frames = []
        for task in self._pending.values():
            if task.pc_id not in (None, link.pc_id) or task.sent_on is link:
                continue
            if task.sent_on is not None and not self.redeliver:
                continue  # a hub without redelivery loses what it sent to a dead connection
            task.pc_id = link.pc_id
            task.sent_on = link
            frames.append(task.frame)
        if frames:
            logger.debug("delivering %d pending task(s) to %s", len(frames), link.pc_id)
        return frames

    def count(self, kind: str) -> int:
        """How many received messages had that kind."""
        with self.cond:
            return self._kinds[kind]

    # -- hub -> node -------------------------------------------------------

    def add_task(self, task_id: str, pc_id: Optional[str], frame: str) -> None:
        """Record a task as pending and send it now if its node is connected."""
        with self.cond:
            link = self.target(pc_id)
            owner = pc_id if pc_id is not None else (link.pc_id if link else self._last_pc_id)
            if link is not None and not link.greeted:
                link = None  # a task must not overtake "connected": node_ready will claim it
            self._pending[task_id] = _Task(owner, frame, link)
            self.cond.notify_all()
        if link is not None:
            self._send_quietly(link, frame)

    def pending_ids(self) -> List[str]:
        """Ids of the tasks that have no result yet."""
        with self.cond:
            return list(self._pending)

    def send(self, pc_id: Optional[str], frame: Frame) -> None:
        """Send one frame to a node.

        Raises:
            ConnectionError: no such node is connected, or the send failed.
        """
        link = self.target(pc_id)
        if link is None:
            raise ConnectionError(f"no node connected with pc_id {pc_id!r}" if pc_id else "no node connected")
        try:
            link.ws.send(frame)
        except Exception as exc:  # ConnectionClosed, OSError: both mean the node is gone
            raise ConnectionError(f"sending to {link.pc_id} failed: {exc}") from exc

    @staticmethod
    def _send_quietly(link: Link, frame: Frame) -> None:
        # A connection may die between lookup and send; its tasks then stay pending.
        try:
            link.ws.send(frame)
        except Exception as exc:
            logger.debug("send to %s failed: %s", link.pc_id, exc)
