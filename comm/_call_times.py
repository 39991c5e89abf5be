"""What a deployment's callers measured: their calls and end-to-end times, in buckets.

A caller (an SDK ``Service``, a protocol gateway at an agent or the scheduler) counts each
call it got an answer to and how long that took from where it stands, in the buckets of
``CALL_SECONDS_BUCKETS`` (one more: above the last), and says so with its next listing
or look-up (``drain``). The scheduler merges every caller's buckets: the dashboard's
callers' p50/p99 (``quantile``) and the ``anypu_deployment_call_seconds`` histogram.
Buckets, not samples: a report's size does not grow with the rate of calls.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

from anypu.protos import messages as m

__all__ = ["CALL_SECONDS_BUCKETS", "CallLog", "bucket_of", "merged", "quantile"]

#: Upper bounds (seconds) of the buckets call times are counted in; one more bucket
#: holds those above the last.
CALL_SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def bucket_of(seconds: float) -> int:
    return bisect.bisect_left(CALL_SECONDS_BUCKETS, seconds)


def merged(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """Two bucket counts added (either may be shorter: zeros)."""
    n = max(len(a), len(b))
    return tuple((a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n))


def quantile(buckets: Sequence[int], q: float) -> float:
    """The ``q`` quantile of the times counted, interpolated within its bucket (the
    last bound for times above it); 0 with none counted."""
    total = sum(buckets)
    if total <= 0:
        return 0.0
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i >= len(CALL_SECONDS_BUCKETS):
                return CALL_SECONDS_BUCKETS[-1]
            low = CALL_SECONDS_BUCKETS[i - 1] if i else 0.0
            high = CALL_SECONDS_BUCKETS[i]
            return low + (high - low) * (rank - seen) / count
        seen += count
    return CALL_SECONDS_BUCKETS[-1]


class CallLog:
    """One caller's calls since it last said, by deployment (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, list[int]] = {}
        self._seconds: dict[str, float] = {}

    def add(self, deployment: str, seconds: float) -> None:
        with self._lock:
            buckets = self._buckets.setdefault(deployment, [0] * (len(CALL_SECONDS_BUCKETS) + 1))
            buckets[bucket_of(seconds)] += 1
            self._seconds[deployment] = self._seconds.get(deployment, 0.0) + seconds

    def drain(self) -> tuple[tuple[tuple[str, int], ...], tuple[m.CallTimes, ...]]:
        """(deployment, calls) and their times since the last drain; then empty."""
        with self._lock:
            buckets, seconds = self._buckets, self._seconds
            self._buckets, self._seconds = {}, {}
        calls = tuple((name, sum(counts)) for name, counts in sorted(buckets.items()))
        times = tuple(
            m.CallTimes(name, tuple(counts), seconds[name])
            for name, counts in sorted(buckets.items())
        )
        return calls, times

    def restore(self, times: Sequence[m.CallTimes]) -> None:
        """Times drained but not delivered: said with the next report."""
        with self._lock:
            for entry in times:
                old = self._buckets.get(entry.deployment, [])
                self._buckets[entry.deployment] = list(merged(old, entry.buckets))
                self._seconds[entry.deployment] = (
                    self._seconds.get(entry.deployment, 0.0) + entry.seconds
                )
