r"""Bandwidth to the scheduler, measured by timing small uploads, within a byte budget.

Every ``interval_s`` (jittered ±20 %) the agent sends a probe of :math:`s` bytes to the
scheduler (``AgentService.Probe``, which only counts them) and times the call,
:math:`t` seconds. With :math:`r` the least of the recent round trips on its stream (the
path's own; one timed while a probe filled the link is longer), the upload carried

    b = s / (t − r)                         (when t − r > t / 20; else no sample)

bytes per second. The next probe's size aims for a transfer of ``TRANSFER_RTTS`` round
trips (so the round trip is a small part of what is timed), within three bounds an
operator sets::

    s ≤ budget_bytes_per_hour · interval_s / 3600       (the byte budget)
    s ≤ link_share · b · interval_s                     (at most that share of the link)
    MIN_BYTES ≤ s ≤ MAX_BYTES

A probe the budget cannot pay ``MIN_BYTES`` for is not sent (said once in the log).
``ProbePlan`` is the arithmetic, without I/O; ``BandwidthProber`` the thread.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MAX_BYTES",
    "MIN_BYTES",
    "TRANSFER_RTTS",
    "BandwidthProber",
    "ProbeConfig",
    "ProbePlan",
    "timed_upload",
]

log = logging.getLogger("anypu.agent")

MIN_BYTES = 64 << 10
MAX_BYTES = 8 << 20
TRANSFER_RTTS = 20


@dataclass(frozen=True)
class ProbeConfig:
    """How often to probe and how much it may cost. ``interval_s`` 0 switches probes off."""

    interval_s: float = 30.0
    budget_bytes_per_hour: int = 64 << 20
    link_share: float = 0.01

    def __post_init__(self) -> None:
        from anypu.errors import ConfigError

        if not (math.isfinite(self.interval_s) and self.interval_s >= 0):
            raise ConfigError(
                f"the probe interval must be seconds ≥ 0 (0: no probes), got {self.interval_s}"
            )
        if self.budget_bytes_per_hour < 0:
            raise ConfigError(
                f"the probe budget must be ≥ 0 bytes an hour, got {self.budget_bytes_per_hour}"
            )
        if not 0 < self.link_share <= 0.5:
            raise ConfigError(
                f"the probes' share of the link must be in (0, 0.5], got {self.link_share}"
            )

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0 and self.budget_bytes_per_hour > 0


class ProbePlan:
    """The sizes to send and what a timed probe says (the module's arithmetic)."""

    def __init__(self, config: ProbeConfig) -> None:
        self.config = config
        self.bandwidth_bps: float | None = None  # the last measurement

    def cap(self, waited_s: float | None = None) -> int:
        """The most one probe may carry after ``waited_s`` since the last (default the
        interval): budget and share of the link over that time, and ``MAX_BYTES``."""
        c = self.config
        waited = c.interval_s if waited_s is None else waited_s
        cap = min(MAX_BYTES, c.budget_bytes_per_hour * waited / 3600)
        if self.bandwidth_bps is not None:
            cap = min(cap, c.link_share * self.bandwidth_bps * waited)
        return int(cap)

    def next_size(self, rtt_s: float, waited_s: float | None = None) -> int | None:
        """The next probe's size; None when the budget cannot pay ``MIN_BYTES``."""
        cap = self.cap(waited_s)
        if cap < MIN_BYTES:
            return None
        want = MIN_BYTES
        if self.bandwidth_bps is not None:
            want = max(MIN_BYTES, int(TRANSFER_RTTS * max(rtt_s, 1e-3) * self.bandwidth_bps))
        return min(want, cap)

    def measured(self, nbytes: int, elapsed_s: float, rtt_s: float) -> float | None:
        """Bytes per second from one timed probe; None when the round trip swamps it."""
        moving = elapsed_s - max(rtt_s, 0.0)
        if not (math.isfinite(elapsed_s) and moving > elapsed_s / 20 and moving > 0):
            return None
        self.bandwidth_bps = nbytes / moving
        return self.bandwidth_bps


def timed_upload(
    plan: ProbePlan, rtt_s: float, waited_s: float | None, send: Callable[[bytes], None]
) -> tuple[int, float | None] | None:
    """Send the probe ``plan`` sizes now and time it: (bytes sent, bytes per second it
    measured or None); None when the budget cannot pay for one."""
    size = plan.next_size(rtt_s, waited_s)
    if size is None:
        return None
    payload = random.randbytes(size)  # incompressible, whatever the link does
    started = time.monotonic()
    send(payload)
    return size, plan.measured(size, time.monotonic() - started, rtt_s)


class BandwidthProber:
    """Probes on a thread of its own; ``report(bps)`` hears of each measurement.

    ``send(payload)`` uploads a probe and returns when the scheduler has it (raising on a
    broken stream: that probe is skipped); ``rtt()`` is the stream's round trip without queueing (``AgentState.base_rtt_s``).
    """

    def __init__(
        self,
        config: ProbeConfig,
        send: Callable[[bytes], None],
        rtt: Callable[[], float],
        report: Callable[[float], None],
    ) -> None:
        self.plan = ProbePlan(config)
        self._send, self._rtt, self._report = send, rtt, report
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said_budget = False
        self.sent_bytes = 0
        #: (started, ended) of the probe in flight or the last one, on ``time.time()``;
        #: ended is inf while one is in flight; (inf, -inf) before the first.
        self._window = (math.inf, -math.inf)

    def overlapped(self, since: float, until: float) -> bool:
        """Whether a probe was on the link at any time between ``since`` and ``until``
        (a round trip timed then queued behind the probe's bytes: not the link's own)."""
        started, ended = self._window
        return started <= until and ended >= since

    def start(self) -> None:
        if not self.plan.config.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="anypu-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def probe_once(self, waited_s: float | None = None) -> float | None:
        """Send one probe now, ``waited_s`` after the last (default the interval), and
        return what it measured (None: nothing to say)."""
        self._window = (time.time(), math.inf)
        try:
            sent = timed_upload(self.plan, self._rtt(), waited_s, self._send)
        finally:
            self._window = (self._window[0], time.time())
        if sent is None:
            if not self._said_budget:
                log.info(
                    "bandwidth probes: a budget of %d bytes an hour cannot pay for a %d-byte"
                    " probe every %g s; raise --probe-budget or --probe-interval",
                    self.plan.config.budget_bytes_per_hour,
                    MIN_BYTES,
                    self.plan.config.interval_s,
                )
                self._said_budget = True
            return None
        size, measured = sent
        self.sent_bytes += size
        if measured is not None:
            self._report(measured)
        return measured

    def _run(self) -> None:
        interval = self.plan.config.interval_s
        while True:
            # Jittered, so agents started together do not probe together; each probe
            # is sized to the time actually waited, so jitter never spends past budget.
            waited = interval * random.uniform(0.8, 1.2)
            if self._stop.wait(waited):
                return
            try:
                self.probe_once(waited)
            except Exception as error:  # a broken stream: the next probe tries again
                log.debug("bandwidth probe failed: %s", error)
