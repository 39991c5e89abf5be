"""Slow down guessing without ever locking out a correct credential.

Callers authenticate first and tell the throttle only of failures
(``failed(peer, credential)``), so a right token is never refused, whatever its address
did before (a typo on a shared host or behind NAT must not lock everyone out). Two
rules, as an SSH server's delays rather than fail2ban's lockouts:

- **per address** (without the port: a new connection gets a new one): the first
  ``free_failures`` failures within ``window_s`` are answered at once; each further one
  waits ``base_delay_s × 2^k``, at most ``max_delay_s``, before its answer, so a guesser
  gets a few tries a second at most. At most ``max_waiting`` answers wait at a time;
  beyond that failures are refused at once, so waits cannot tie up the server's threads;
- **per credential**: the same wrong credential failing ``repeat_limit`` times within
  the window is refused at once with ``ThrottledError`` (RESOURCE_EXHAUSTED, HTTP 429 with
  Retry-After): a client looping on a stale token is told to stop, cheaply.

Counts of delayed and refused answers are kept for the metrics. Memory stays bounded: at
most ``max_peers`` addresses and credentials are tracked, least recently seen forgotten.
"""

from __future__ import annotations

import hashlib
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
    """Counts failures per address and per credential; thread-safe; ``clock`` and
    ``sleep`` are injectable for tests."""

    def __init__(
        self,
        free_failures: int = 5,
        window_s: float = 60.0,
        base_delay_s: float = 0.1,
        max_delay_s: float = 2.0,
        repeat_limit: int = 10,
        max_waiting: int = 8,
        max_peers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.free_failures = free_failures
        self.window_s = window_s
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.repeat_limit = repeat_limit
        self.max_waiting = max_waiting
        self.max_peers = max_peers
        self.clock = clock
        self.sleep = sleep
        self._by_host: OrderedDict[str, deque[float]] = OrderedDict()
        self._by_credential: OrderedDict[str, deque[float]] = OrderedDict()
        self._waiting = 0
        self.delayed = 0  # failed answers held back
        self.refused = (
            0  # failed answers refused at once (repeated credential, or too many waiting)
        )
        self._lock = threading.Lock()

    def _record(self, table: OrderedDict[str, deque[float]], key: str, now: float) -> int:
        """Add a failure at ``now`` under ``key``; the failures within the window."""
        recent = table.pop(key, None) or deque()
        recent.append(now)
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        table[key] = recent
        while len(table) > self.max_peers:
            table.popitem(last=False)
        return len(recent)

    def delay_for(self, failures: int) -> float:
        """How long the answer to an address's ``failures``-th failure in the window waits."""
        over = failures - self.free_failures
        if over <= 0:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2 ** (over - 1))

    def failed(self, peer: str, credential: str = "") -> None:
        """Record a failed authentication and hold its answer back as the rules say.

        Returns when the caller may answer with its authentication error; raises
        ``ThrottledError`` when the answer is a refusal instead.
        """
        host = peer_host(peer)
        now = self.clock()
        with self._lock:
            failures = self._record(self._by_host, host, now)
            repeats = 0
            if credential:
                key = hashlib.sha256(credential.encode()).hexdigest()  # never the secret itself
                repeats = self._record(self._by_credential, key, now)
            delay = self.delay_for(failures)
            refuse = repeats >= self.repeat_limit or (delay and self._waiting >= self.max_waiting)
            if refuse:
                self.refused += 1
            elif delay:
                self.delayed += 1
                self._waiting += 1
        if refuse:
            why = (
                "this token failed repeatedly"
                if repeats >= self.repeat_limit
                else f"too many failed authentication attempts from {host}"
            )
            raise ThrottledError(
                f"{why}: slow down, and check the token (or ask the operator for a new one)",
                retry_after_s=self.window_s if repeats >= self.repeat_limit else self.max_delay_s,
            )
        if delay:
            try:
                self.sleep(delay)
            finally:
                with self._lock:
                    self._waiting -= 1

    def tracked(self) -> int:
        """How many addresses and credentials have state (for tests of the memory bound)."""
        with self._lock:
            return len(self._by_host) + len(self._by_credential)
