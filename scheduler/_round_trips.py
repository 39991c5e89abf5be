"""Round-trip times measured on the agent stream: what each heartbeat's echo took.

The scheduler echoes every heartbeat that asks for it (``Heartbeat.wants_echo``) with
its ``sent_at`` (``HeartbeatEcho``); the agent subtracts that from the time the echo
arrives, on its own clock (so the two clocks need not agree), and reports the result in
its next heartbeat (``Heartbeat.rtt_s``). Here the scheduler keeps each node's last
``WINDOW`` samples: the median and 95th percentile over them, how old the newest is, and
an exponentially weighted mean (``EWMA_WEIGHT`` on the newest) that follows a change
within a few samples, which the measured network is fitted to (``_measured_network``).
A round trip on the stream includes the time either side takes to read the message, so
it is an upper bound on the network's; on a busy scheduler it grows, which is also what
a call routed there meets.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["EWMA_WEIGHT", "WINDOW", "RoundTrips"]

#: Samples kept per node: a minute of heartbeats at the default interval.
WINDOW = 64
#: The newest sample's weight in ``RoundTrips.ewma``.
EWMA_WEIGHT = 0.3


class RoundTrips:
    """The last ``WINDOW`` round trips to one node, with when the newest arrived; and the
    bandwidth its agent's last probe measured to the scheduler (``agents._probes``)."""

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=WINDOW)
        self.last_at: float | None = None
        self.ewma = 0.0
        self.bandwidth_bps = 0.0
        self.bandwidth_at: float | None = None

    def add_bandwidth(self, bps: float, now: float) -> None:
        """One probe's bytes per second; one not finite or not above 0 is dropped."""
        if math.isfinite(bps) and bps > 0:
            self.bandwidth_bps, self.bandwidth_at = bps, now

    def bandwidth_age(self, now: float) -> float:
        """Seconds since the last probe's measurement; -1.0 with none."""
        return -1.0 if self.bandwidth_at is None else max(0.0, now - self.bandwidth_at)

    def add(self, seconds: float, now: float) -> None:
        """One measured round trip; a negative or non-finite one (a clock stepped back
        between send and echo) is dropped."""
        if math.isfinite(seconds) and seconds >= 0:
            first = not self._samples
            self._samples.append(seconds)
            self.last_at = now
            self.ewma = seconds if first else self.ewma + EWMA_WEIGHT * (seconds - self.ewma)

    def __len__(self) -> int:
        return len(self._samples)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (nearest rank) of the samples; 0.0 with none."""
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    def age(self, now: float) -> float:
        """Seconds since the newest sample; -1.0 with none."""
        return -1.0 if self.last_at is None else max(0.0, now - self.last_at)
