"""A TCP proxy on loopback that can cut traffic, to make partitions in tests.

``partition()`` stops forwarding in both directions while keeping the connections open
(packets are held, as in a real network partition, not refused); ``heal()`` resumes.
"""

from __future__ import annotations

import selectors
import socket
import threading

__all__ = ["Proxy"]


class Proxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def address(self) -> str:
        return f"{self.target[0]}:{self.port}"

    def partition(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self._listener.close()
        for a, b in self._pairs:
            a.close()
            b.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self._pairs.append((client, upstream))
            threading.Thread(
                target=self._pump, args=(client, upstream), name="proxy-pump", daemon=True
            ).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while not self._closed.is_set():
                self._flowing.wait()
                for key, _ in selector.select(timeout=0.05):
                    if not self._flowing.is_set():
                        break  # hold what arrived until the partition heals
                    try:
                        data = key.fileobj.recv(1 << 16)  # type: ignore[union-attr]
                    except OSError:
                        data = b""
                    if not data:
                        a.close()
                        b.close()
                        return
                    peers[key.fileobj].sendall(data)  # type: ignore[index]
