"""Slow down guessing: a peer with too many failed authentications is refused a while.

The rule, as fail2ban's: ``max_failures`` failures within ``window_s`` seconds lock the
peer out for ``lockout_s`` seconds, during which every call from it is answered
RESOURCE_EXHAUSTED without looking at its credentials. Peers are keyed by address
without the port (a new connection gets a new port). Memory stays bounded: at most
``max_peers`` are tracked, the least recently seen forgotten first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from anypu.errors import AnypuError

__all__ = ["FailureThrottle", "ThrottledError", "http_peer", "peer_host"]


class ThrottledError(AnypuError):
    """The peer failed to authenticate too often (gRPC RESOURCE_EXHAUSTED, HTTP 429)."""

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def http_peer(host: str, port: int) -> str:
    """An HTTP client's address as gRPC names a peer, so one throttle counts a guesser's
    failures on both surfaces: ``("10.0.0.7", 5)`` → ``ipv4:10.0.0.7:5``, ``("::1", 5)``
    → ``ipv6:[::1]:5``."""
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def peer_host(peer: str) -> str:
    """``ipv4:10.0.0.7:51234`` → ``ipv4:10.0.0.7``; ``ipv6:[::1]:5`` → ``ipv6:[::1]``."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class FailureThrottle:
    """Counts failures per peer; thread-safe; ``clock`` is injectable for tests."""

    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 60.0,
        lockout_s: float = 60.0,
        max_peers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_peers = max_peers
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, peer: str) -> None:
        """Raise ``ThrottledError`` while ``peer`` is locked out."""
        host = peer_host(peer)
        with self._lock:
            until = self._locked_until.get(host)
            if until is None:
                return
            left = until - self.clock()
            if left <= 0:
                del self._locked_until[host]
                return
        raise ThrottledError(
            f"too many failed authentication attempts from {host}: refused for another"
            f" {left:.0f} s; check the token (or ask the operator for a new one)",
            retry_after_s=left,
        )

    def failed(self, peer: str) -> None:
        """Record a failed authentication; may lock ``peer`` out."""
        host = peer_host(peer)
        now = self.clock()
        with self._lock:
            recent = self._failures.pop(host, None) or deque()
            recent.append(now)
            while recent and recent[0] <= now - self.window_s:
                recent.popleft()
            if len(recent) >= self.max_failures:
                self._locked_until[host] = now + self.lockout_s
                recent.clear()
            else:
                self._failures[host] = recent
            while len(self._failures) > self.max_peers:
                self._failures.popitem(last=False)
            if len(self._locked_until) > self.max_peers:
                for stale in [h for h, t in self._locked_until.items() if t <= now]:
                    del self._locked_until[stale]

    def tracked(self) -> int:
        """How many peers have state (for tests of the memory bound)."""
        with self._lock:
            return len(self._failures) + len(self._locked_until)
