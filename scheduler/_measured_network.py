"""The network placement costs with: what ``network.yaml`` declares, refitted to what the
agents measure (``placement.fit_network``).

Each site's round trip to the scheduler is the lowest ``RoundTrips.ewma`` among its
connected nodes' agents (the least loaded of them says most about the network); half of
it is a sample of the declared path from the site to the ``scheduler`` vertex, with the
widest bandwidth its agents' probes measured in the last ``BANDWIDTH_FRESH_HALF_LIVES``
half-lives (``agents._probes``). A network
without that vertex, or a site it does not list, gives no sample: those paths stay as
declared. Agents that time each other's sites (``agents._peers``) add a sample of the
path between the two sites: the least round trip either way, the widest fresh bandwidth.
The fit runs at most once per ``refresh_s``, and its graph replaces the last
one only when some link moved by more than ``CHANGE`` of its latency, so placement's
cached paths stay warm while nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from anypu.placement import SCHEDULER_VERTEX, PathSample, fit_network
from anypu.scheduler._records import NodeRecord

__all__ = ["CHANGE", "MeasuredNetwork"]

#: A refit replaces the graph placement uses when a link's latency or bandwidth moved by
#: this share.
CHANGE = 0.05
#: A bandwidth probe counts for this many half-lives (then the declared value is back).
BANDWIDTH_FRESH_HALF_LIVES = 2.0


class MeasuredNetwork:
    """The declared network and its latest fit to the agents' round trips."""

    def __init__(
        self,
        declared: object | None,
        *,
        enabled: bool = True,
        refresh_s: float = 1.0,
        half_life_s: float = 300.0,
    ) -> None:
        self.declared = declared if isinstance(declared, nx.Graph) else None
        self.enabled = enabled and self.declared is not None and SCHEDULER_VERTEX in self.declared
        self.refresh_s = refresh_s
        self.half_life_s = half_life_s
        self._fitted: nx.Graph[str] | None = self.declared
        self._fitted_at = -float("inf")

    def samples(self, nodes: Iterable[NodeRecord], now: float) -> list[PathSample]:
        """One sample per site whose connected agents have measured a round trip."""
        best: dict[str, tuple[float, float]] = {}
        widest: dict[str, float] = {}
        for node in nodes:
            trips = node.round_trips
            if not node.connected or not len(trips) or node.site == SCHEDULER_VERTEX:
                continue
            age = trips.age(now)
            if node.site not in best or trips.ewma < best[node.site][0]:
                best[node.site] = (trips.ewma, age)
            fresh = 0 <= trips.bandwidth_age(now) <= BANDWIDTH_FRESH_HALF_LIVES * self.half_life_s
            if fresh:
                widest[node.site] = max(widest.get(node.site, 0.0), trips.bandwidth_bps)
        to_scheduler = [
            PathSample(site, SCHEDULER_VERTEX, rtt / 2, age_s=age, bandwidth_bps=widest.get(site))
            for site, (rtt, age) in sorted(best.items())
        ]
        return to_scheduler + self._between_sites(nodes, now)

    def _between_sites(self, nodes: Iterable[NodeRecord], now: float) -> list[PathSample]:
        """One sample per pair of sites whose agents timed each other (``agents._peers``):
        the least round trip either way, the widest fresh bandwidth."""
        best: dict[tuple[str, str], tuple[float, float]] = {}
        widest: dict[tuple[str, str], float] = {}
        fresh_s = BANDWIDTH_FRESH_HALF_LIVES * self.half_life_s
        for node in nodes:
            if not node.connected or not node.site:
                continue
            for other, (rtt, at, bps, bps_at) in node.peer_trips.items():
                pair = (min(node.site, other), max(node.site, other))
                if pair not in best or rtt < best[pair][0]:
                    best[pair] = (rtt, max(0.0, now - at))
                if bps > 0 and now - bps_at <= fresh_s:
                    widest[pair] = max(widest.get(pair, 0.0), bps)
        return [
            PathSample(a, b, rtt / 2, age_s=age, bandwidth_bps=widest.get((a, b)))
            for (a, b), (rtt, age) in sorted(best.items())
        ]

    def graph(self, nodes: Iterable[NodeRecord], now: float) -> nx.Graph[str] | None:
        """The graph placement costs with now: the declared one refitted (see the module),
        the same object while no link moved by ``CHANGE``."""
        if not self.enabled or now - self._fitted_at < self.refresh_s:
            return self._fitted
        self._fitted_at = now
        fitted = self.fit(nodes, now)
        if self._fitted is None or fitted is None or _moved(self._fitted, fitted):
            self._fitted = fitted
        return self._fitted

    def fit(self, nodes: Iterable[NodeRecord], now: float) -> nx.Graph[str] | None:
        """A fit to the samples as they are now, uncached (for display: its ages are
        current); the declared graph when measurement is off."""
        if not self.enabled or self.declared is None:
            return self.declared
        return fit_network(self.declared, self.samples(nodes, now), half_life_s=self.half_life_s)


def _moved(old: nx.Graph[str], new: nx.Graph[str]) -> bool:
    for u, v, data in new.edges(data=True):
        before = old.edges[u, v]
        if before.get("measured_age_s") is None and data["measured_age_s"] is not None:
            return True
        was, now = float(before["latency_s"]), float(data["latency_s"])
        if abs(now - was) > CHANGE * max(was, 1e-6):
            return True
        was, now = float(before["bandwidth_bps"]), float(data["bandwidth_bps"])
        if abs(now - was) > CHANGE * was:
            return True
    return False
