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
        self._parked = threading.Condition()
        self._running_pipes = 0  # pipes forwarding now, born before any stall
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
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
        try:
            src.settimeout(0.05)
        except OSError:  # the other direction already closed both sockets
            return
        if not born_stalled:
            with self._parked:
                self._running_pipes += 1
        parked = born_stalled
        while not self._closing.is_set():
            # A connection stalls when stall() is called; ones opened afterwards work normally.
            if self._stalled.is_set() and not born_stalled:
                if not parked:
                    parked = True
                    with self._parked:
                        self._running_pipes -= 1
                        self._parked.notify_all()
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
        if not parked:
            with self._parked:
                self._running_pipes -= 1
                self._parked.notify_all()
        for sock in (src, dst):  # one direction ended: so does the other
            try:
                sock.close()
            except OSError:
                pass

    def stall(self) -> None:
        """Stop forwarding on every connection open now (new connections pass).

        Returns once every open pipe has stopped: nothing sent afterwards gets through.
        """
        self._stalled.set()
        with self._parked:
            assert self._parked.wait_for(lambda: self._running_pipes == 0, 5), "a pipe did not stall"

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
