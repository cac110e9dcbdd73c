"""A TCP proxy on loopback that can cut and refuse connections: the network
faults between a Redis client and its server, made on purpose.

``FaultProxy(port)`` forwards ``127.0.0.1:<proxy.port>`` to
``127.0.0.1:<port>`` until told otherwise:

- ``cut()``: closes every connection it carries (both sides see them end);
- ``refuse()`` / ``accept()``: new connections are closed at once, or
  forwarded again (an outage, then its end);
- ``close()``: stops it.

It runs in threads of the test process, so it works for clients in child
processes too.
"""
from __future__ import annotations

import socket
import threading
from typing import List


class FaultProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self._target = (host, target_port)
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://{host}:{self.port}/0"
        self._lock = threading.Lock()
        self._socks: List[socket.socket] = []
        self._refusing = False
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    # ------------------------------------------------------------ faults

    def cut(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            _shut(s)

    def refuse(self) -> None:
        """Close new connections at once, and cut the ones there are."""
        with self._lock:
            self._refusing = True
        self.cut()

    def accept(self) -> None:
        with self._lock:
            self._refusing = False

    def close(self) -> None:
        self._closed = True
        _shut(self._listener)
        self.cut()

    # ------------------------------------------------------------ plumbing

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                _shut(client)
                continue
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                _shut(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    _shut(src)
    _shut(dst)


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
