r"""Round trips and bandwidth to agents of other sites, within the same byte budget.

The scheduler names one agent per other site that takes direct calls (``m.Peers``, at
``--direct-address``). Every ``interval_s`` (jittered ±20 %) the agent takes the next
of them in turn and

1. times ``PING_SAMPLES`` empty calls (``DirectService.Ping``) after one that opens
   the connection: the least is the round trip :math:`r` between the two sites;
2. uploads a probe (``DirectService.Probe``, which only counts the bytes) sized and
   bounded as a probe to the scheduler is (``_probes.ProbePlan``, one per site: its
   ``TRANSFER_RTTS`` aim, the byte budget over the time since the last probe to any
   site, so all sites together stay within ``--probe-budget``, and at most
   ``--probe-share`` of that site's measured bandwidth), and takes
   :math:`s / (t - r)` as the bandwidth.

Each measurement goes to the scheduler once, on the next heartbeat (``PeerSample``),
which fits the declared link between the two sites to it (``scheduler._measured_network``).
``--no-bandwidth-probes`` (interval 0) sends none of this.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable

from anypu.agents._probes import ProbeConfig, ProbePlan, timed_upload
from anypu.protos import messages as m

__all__ = ["PING_SAMPLES", "PeerProber"]

log = logging.getLogger("anypu.agent")

PING_SAMPLES = 3


class PeerProber:
    """Times other sites' agents on a thread of its own; ``report`` hears each sample.

    ``peers()`` is whom to time now; ``ping(peer)`` and ``upload(peer, payload)`` are the
    calls (raising when the peer does not answer: that round is skipped).
    """

    def __init__(
        self,
        config: ProbeConfig,
        peers: Callable[[], tuple[m.Peer, ...]],
        ping: Callable[[m.Peer], None],
        upload: Callable[[m.Peer, bytes], None],
        report: Callable[[m.PeerSample], None],
    ) -> None:
        self.config = config
        self._peers, self._ping, self._upload, self._report = peers, ping, upload, report
        self._plans: dict[str, ProbePlan] = {}
        self._turn = 0
        self._unreachable: set[str] = set()
        self._timed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent_bytes = 0

    def start(self) -> None:
        if not self.config.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="anypu-peer-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def probe_once(self, peer: m.Peer, waited_s: float | None = None) -> m.PeerSample:
        """Time ``peer`` now, ``waited_s`` after the last probe to any site."""
        self._ping(peer)  # opens the connection: not timed
        rtt = math.inf
        for _ in range(PING_SAMPLES):
            started = time.monotonic()
            self._ping(peer)
            rtt = min(rtt, time.monotonic() - started)
        plan = self._plans.setdefault(peer.site, ProbePlan(self.config))
        sent = timed_upload(plan, rtt, waited_s, lambda payload: self._upload(peer, payload))
        bandwidth = 0.0
        if sent is not None:
            self.sent_bytes += sent[0]
            bandwidth = sent[1] or 0.0
        sample = m.PeerSample(peer.site, rtt, bandwidth)
        if peer.site not in self._timed:
            self._timed.add(peer.site)
            log.info(
                "timing site %s (agent %s): %.2f ms round trip%s",
                peer.site,
                peer.node_id,
                rtt * 1e3,
                f", {bandwidth * 8 / 1e6:.0f} Mb/s" if bandwidth else "",
            )
        self._report(sample)
        return sample

    def _run(self) -> None:
        while True:
            waited = self.config.interval_s * random.uniform(0.8, 1.2)
            if self._stop.wait(waited):
                return
            peers = self._peers()
            if not peers:
                continue
            peer = peers[self._turn % len(peers)]
            self._turn += 1
            try:
                self.probe_once(peer, waited)
            except Exception as error:  # not reachable from here: say so once, go on
                if peer.site not in self._unreachable:
                    self._unreachable.add(peer.site)
                    log.info(
                        "cannot time site %s (agent %s at %s): %s; its links stay as"
                        " declared or as other agents measure them",
                        peer.site,
                        peer.node_id,
                        peer.direct_address,
                        error,
                    )
