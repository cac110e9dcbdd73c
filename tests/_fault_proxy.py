"""A TCP proxy on loopback that cuts, refuses, stalls and drops connections:
the network faults between a Redis client and its server, made on purpose.

``FaultProxy(port)`` forwards ``127.0.0.1:<proxy.port>`` to
``127.0.0.1:<port>`` until told otherwise:

- ``cut()``: closes every connection it carries (both sides see them end);
- ``refuse()`` / ``accept()``: new connections are closed at once, or
  forwarded again (an outage, then its end);
- ``stall()`` / ``resume()``: nothing is forwarded in either direction, the
  connections stay open and new ones are accepted; what was sent meanwhile
  is delivered on ``resume()`` (a frozen router, a long GC pause of a
  middlebox);
- ``drop()``: a black hole: nothing is forwarded ever again and nothing
  answers; connections stay open, bytes sent into them vanish, and new
  connections are accepted into the void (a host that vanished from the
  network without a reset);
- ``close()``: stops it.

It runs in threads of the test process, so it works for clients in child
processes too.
"""
from __future__ import annotations

import socket
import threading
from typing import List

FORWARD, STALL, DROP = "forward", "stall", "drop"


class FaultProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self._target = (host, target_port)
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://{host}:{self.port}/0"
        self._lock = threading.Lock()
        # Pumps wait on this while stalled; notified on every change of mode.
        self._changed = threading.Condition(self._lock)
        self._socks: List[socket.socket] = []
        self._refusing = False
        self._mode = FORWARD
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

    def stall(self) -> None:
        self._set_mode(STALL)

    def resume(self) -> None:
        """Forward again, after stall() (or drop(): later bytes only)."""
        self._set_mode(FORWARD)

    def drop(self) -> None:
        self._set_mode(DROP)

    def close(self) -> None:
        self._closed = True
        _shut(self._listener)
        self.resume()
        self.cut()

    def _set_mode(self, mode: str) -> None:
        with self._changed:
            self._mode = mode
            self._changed.notify_all()

    # ------------------------------------------------------------ plumbing

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refusing, mode = self._refusing, self._mode
            if refusing:
                _shut(client)
                continue
            if mode == DROP:
                # Accepted by the "network", answered by nobody.
                with self._lock:
                    self._socks.append(client)
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
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
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self._changed:
                    while self._mode == STALL and not self._closed:
                        self._changed.wait()
                    mode = self._mode
                if mode == DROP:
                    continue
                dst.sendall(data)
        except OSError:
            pass
        _shut(src)
        _shut(dst)

    @staticmethod
    def _swallow(sock: socket.socket) -> None:
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
        _shut(sock)


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
