"""A TCP proxy on 127.0.0.1 that can stall: the path stays open but nothing gets through.

That is a half-open connection as a node sees it when a NAT entry or a link dies
silently: no FIN, no RST, just silence.
"""
from __future__ import annotations

import socket
import threading


class StallProxy:
    """Forwards 127.0.0.1:<port> to ``target``; :meth:`stall` freezes every open connection."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stalled = threading.Event()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        #: Pipes that forward (opened before any stall) and those of them that stopped for it.
        self._pipes_changed = threading.Condition()
        self._forwarding: set[threading.Thread] = set()
        self._parked: set[threading.Thread] = set()
        self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name="proxy", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            stalled = self._stalled.is_set()
            with self._lock:
                self._sockets += [client, upstream]
            self._spawn(self._pipe, client, upstream, stalled)
            self._spawn(self._pipe, upstream, client, stalled)

    def _pipe(self, src: socket.socket, dst: socket.socket, born_stalled: bool) -> None:
        me = threading.current_thread()
        if not born_stalled:
            with self._pipes_changed:
                self._forwarding.add(me)
        try:
            self._forward(src, dst, born_stalled, me)
        finally:
            with self._pipes_changed:
                self._forwarding.discard(me)
                self._pipes_changed.notify_all()

    def _forward(self, src: socket.socket, dst: socket.socket, born_stalled: bool, me: threading.Thread) -> None:
        try:
            src.settimeout(0.05)
        except OSError:  # the other direction already closed both sockets
            return
        while not self._closing.is_set():
            # A connection stalls when stall() is called; ones opened afterwards work normally.
            if self._stalled.is_set() and not born_stalled:
                with self._pipes_changed:
                    self._parked.add(me)
                    self._pipes_changed.notify_all()
                self._closing.wait(0.05)
                continue
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        for sock in (src, dst):  # one direction ended: so does the other
            try:
                sock.close()
            except OSError:
                pass

    def stall(self, timeout: float = 5.0) -> None:
        """Stop forwarding on every connection open now (new connections pass).

        Returns once every pipe has stopped: data read before that still went through, nothing
        sent afterwards does.
        """
        self._stalled.set()
        with self._pipes_changed:
            assert self._pipes_changed.wait_for(lambda: self._forwarding <= self._parked, timeout), "proxy did not stall"

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass
            threads = list(self._threads)
        for thread in threads:
            thread.join(2)
