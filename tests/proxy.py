"""A TCP proxy on loopback that can cut, delay and narrow traffic, to shape links in tests.

``partition()`` stops forwarding in both directions while keeping the connections open
(packets are held, as in a real network partition, not refused); ``heal()`` resumes.
``shape(delay_s=…, bandwidth_bps=…)`` makes every byte arrive ``delay_s`` later in each
direction (a round trip ``2 · delay_s`` longer) and no faster than ``bandwidth_bps``
bytes per second per direction, as a link of that latency and capacity would; it may be
changed while connections are open (a link degrading).
"""

from __future__ import annotations

import collections
import math
import selectors
import socket
import threading
import time

__all__ = ["Proxy"]


class _Direction:
    """Bytes read from one side, sent on to the other when their time comes."""

    def __init__(self, proxy: Proxy, out: socket.socket) -> None:
        self.proxy = proxy
        self.out = out
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.ready = threading.Condition()
        self.free_at = 0.0  # when the link has sent what it was given so far
        threading.Thread(target=self._send, name="proxy-send", daemon=True).start()

    def put(self, data: bytes) -> None:
        now = time.monotonic()
        bandwidth = self.proxy.bandwidth_bps
        start = max(now, self.free_at)
        self.free_at = start + (len(data) / bandwidth if math.isfinite(bandwidth) else 0.0)
        with self.ready:
            self.queue.append((self.free_at + self.proxy.delay_s, data))
            self.ready.notify()

    def _send(self) -> None:
        while not self.proxy.closed.is_set():
            with self.ready:
                while not self.queue and not self.proxy.closed.is_set():
                    self.ready.wait(0.05)
                if not self.queue:
                    return
                due, data = self.queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self.out.sendall(data)
            except OSError:
                return


class Proxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self.closed = threading.Event()
        self.delay_s = 0.0
        self.bandwidth_bps = math.inf
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def address(self) -> str:
        return f"{self.target[0]}:{self.port}"

    def partition(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def shape(self, delay_s: float = 0.0, bandwidth_bps: float = math.inf) -> None:
        """One-way delay and capacity from now on, for bytes read after this call."""
        self.delay_s = delay_s
        self.bandwidth_bps = bandwidth_bps

    def close(self) -> None:
        self.closed.set()
        self._flowing.set()
        self._listener.close()
        for a, b in self._pairs:
            a.close()
            b.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
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
        towards = {a: _Direction(self, b), b: _Direction(self, a)}
        with selectors.DefaultSelector() as selector:
            for sock in towards:
                selector.register(sock, selectors.EVENT_READ)
            while not self.closed.is_set():
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
                    towards[key.fileobj].put(data)  # type: ignore[index]
