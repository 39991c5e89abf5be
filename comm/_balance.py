"""Which replica a call goes to: the one predicted to answer first, as the caller sees it.

Both callers of replicas (the SDK's ``Service`` and the scheduler's inference gateway)
keep one ``ReplicaBalancer``. It learns, per replica, the time a call took *from this
caller*: the network to the replica's node from where the caller is, its queue and the
model's run, all in one number. A call then goes to the replica with the least predicted
answer time

.. math::  \\hat t_r = (q_r + 1)\\,\\bar t_r

where :math:`q_r` is the calls this caller has in flight there and :math:`\\bar t_r` a
peak-sensitive moving average of its answer times (Finagle's and Linkerd's "peak EWMA"):
a sample above the average replaces it at once, so a replica that slows is avoided at
once; below, the average decays toward it with time constant ``DECAY_S`` (10 s), so a
replica that recovers is trusted again gradually. Between samples the average read
decays toward zero with the same constant (as Finagle's ``get`` observes 0), so a
replica avoided after one slow answer is tried again within seconds, not never; but
not while a call is in flight there, and a replica is never predicted sooner than its
oldest call in flight has already waited, so a hung replica looks slower the longer it
hangs. A failed call counts as an answer of ``FAILURE_PENALTY_S`` (a peak), so a
replica that keeps failing is tried last. A replica never timed yet is predicted at
the least known average (0 while none is known), so it is tried early and learnt.
Ties go round-robin. It does no I/O; ``now`` is passed in where time matters.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["DECAY_S", "FAILURE_PENALTY_S", "ReplicaBalancer"]

#: How fast an answer time learnt falls toward faster answers (seconds).
DECAY_S = 10.0
#: What a failed call counts as (seconds).
FAILURE_PENALTY_S = 1.0

T = TypeVar("T")


@dataclass
class _Learnt:
    average_s: float
    at: float
    #: When each call in flight there started, oldest first.
    starts: list[float] = field(default_factory=list)


class ReplicaBalancer:
    """``choose(keys, now)`` the key to call; ``started(key)`` and
    ``finished(key, seconds, now)`` around each call. Thread-safe."""

    def __init__(self, decay_s: float = DECAY_S) -> None:
        self.decay_s = decay_s
        self._learnt: dict[str, _Learnt] = {}
        self._lock = threading.Lock()
        self._turns = itertools.count()

    def predicted_s(self, key: str, now: float) -> float:
        """The answer time predicted for a call sent to ``key`` at ``now``."""
        with self._lock:
            return self._predicted(key, self._floor(now), now)

    def order(self, items: Sequence[T], keys: Sequence[str], now: float) -> list[T]:
        """``items`` (``keys`` their replicas' keys) best first."""
        with self._lock:
            floor = self._floor(now)
            turn = next(self._turns)
            ranked = sorted(
                range(len(items)),
                key=lambda i: (self._predicted(keys[i], floor, now), (i - turn) % len(items)),
            )
        return [items[i] for i in ranked]

    def started(self, key: str, now: float) -> None:
        with self._lock:
            learnt = self._learnt.setdefault(key, _Learnt(math.nan, now))
            learnt.starts.append(now)

    def finished(self, key: str, seconds: float | None, now: float) -> None:
        """A call to ``key`` ended after ``seconds`` (None: it failed: counted as
        ``FAILURE_PENALTY_S``)."""
        with self._lock:
            learnt = self._learnt.setdefault(key, _Learnt(math.nan, now))
            if learnt.starts:
                learnt.starts.pop(0)  # calls end about in the order they began
            seconds = FAILURE_PENALTY_S if seconds is None else max(0.0, seconds)
            if math.isnan(learnt.average_s) or seconds >= learnt.average_s:
                learnt.average_s = seconds
            else:
                weight = math.exp(-max(0.0, now - learnt.at) / self.decay_s)
                learnt.average_s = weight * learnt.average_s + (1 - weight) * seconds
            learnt.at = now

    def forget(self, keep: Sequence[str]) -> None:
        """Drop what was learnt of replicas not in ``keep`` (they have gone)."""
        with self._lock:
            for key in set(self._learnt) - set(keep):
                if not self._learnt[key].starts:
                    del self._learnt[key]

    def _decayed(self, learnt: _Learnt, now: float) -> float:
        if learnt.starts:  # no news is not good news while a call is out there
            return learnt.average_s
        return learnt.average_s * math.exp(-max(0.0, now - learnt.at) / self.decay_s)

    def _floor(self, now: float) -> float:
        known = [
            self._decayed(v, now) for v in self._learnt.values() if not math.isnan(v.average_s)
        ]
        return min(known, default=0.0)

    def _predicted(self, key: str, floor: float, now: float) -> float:
        learnt = self._learnt.get(key)
        if learnt is None:
            return floor
        average = floor if math.isnan(learnt.average_s) else self._decayed(learnt, now)
        waited = now - learnt.starts[0] if learnt.starts else 0.0
        return max((len(learnt.starts) + 1) * average, waited)
