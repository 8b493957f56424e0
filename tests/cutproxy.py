"""A loopback TCP proxy that cuts connections: the network that drops an upload mid-way."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable

BUFFER = 64 * 1024


class CuttingProxy:
    """Forwards connections to ``127.0.0.1:upstream_port``; when the bytes sent upstream (all
    connections together) reach each of ``cuts``, forwards exactly up to it and then closes
    that connection on both sides, as a dropped network would. ``cut`` counts the cuts made."""

    def __init__(self, upstream_port: int, cuts: Iterable[int]) -> None:
        self.upstream_port = upstream_port
        self.pending = sorted(cuts)
        self.cut = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        self._sockets: list[socket.socket] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> CuttingProxy:
        threading.Thread(target=self._accept, name="cutting-proxy", daemon=True).start()
        return self

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, upstream]
            pair = (client, upstream)
            threading.Thread(target=self._pump_up, args=pair, daemon=True).start()
            threading.Thread(target=self._pump_down, args=pair, daemon=True).start()

    def _allowance(self, size: int) -> tuple[int, bool]:
        """How much of ``size`` bytes may go upstream now, and whether to cut after them."""
        with self._lock:
            if self.pending and self.sent + size >= self.pending[0]:
                allowed = self.pending.pop(0) - self.sent
                self.sent += allowed
                self.cut += 1
                return allowed, True
            self.sent += size
            return size, False

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(BUFFER):
                allowed, cut = self._allowance(len(data))
                upstream.sendall(data[:allowed])
                if cut:
                    break
        except OSError:
            pass
        _hang_up(client, upstream)

    def _pump_down(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := upstream.recv(BUFFER):
                client.sendall(data)
        except OSError:
            pass
        _hang_up(client, upstream)


def _hang_up(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
