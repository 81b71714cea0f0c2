"""A TCP proxy on loopback that can go silent, like a stopped database server or a network
path that drops everything: connections stay open, and nothing comes back.

While frozen, the proxy accepts new connections and never connects them, and it drops what
either side sends (a connection that lost data is never forwarded again). Thawed, new
connections work as before. Use it as ``with contextlib.closing(FreezingProxy(...))``.
"""

from __future__ import annotations

import contextlib
import socket
import threading

_CHUNK = 65536


class FreezingProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def _keep(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.append(s)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._flowing.wait()  # frozen: accepted, never answered
        if self._closed:
            return
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        self._keep(upstream)
        lost = threading.Event()  # set once data of this connection was dropped
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst, lost), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, lost: threading.Event) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                if not self._flowing.is_set():
                    lost.set()
                if lost.is_set():
                    continue  # dropped: the stream has a gap now
                dst.sendall(data)
        except OSError:
            pass
        for s in (dst, src):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()
