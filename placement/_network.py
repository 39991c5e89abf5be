"""The network between sites: validated construction and cached transfer costs.

A network is a ``networkx.Graph`` whose vertices are site names and whose edges carry
``latency_s`` (seconds) and ``bandwidth_bps`` (bytes per second, despite the name: it
is what a transfer divides by). Moving ``b`` bytes from ``u`` to ``v`` costs

    T(u, v, b) = Σ_{e ∈ P} latency_s(e)  +  b / min_{e ∈ P} bandwidth_bps(e)

where ``P`` is the path of least total latency. Placement asks for the same
(origin, site) pairs over and over, so path metrics are computed once per source with
one Dijkstra run and cached.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import networkx as nx

from anypu.errors import ConfigError

__all__ = [
    "SCHEDULER_VERTEX",
    "NetworkCosts",
    "PathMetrics",
    "build_network",
    "transfer_seconds",
]

#: A vertex of this name is where artifacts are served from; without it the scheduler
#: is taken to be co-located with each job's origin.
SCHEDULER_VERTEX = "scheduler"

_SPEC_KEYS = frozenset({"sites", "links"})
_LINK_KEYS = frozenset({"a", "b", "latency_ms", "bandwidth_mbps"})


@dataclass(frozen=True)
class PathMetrics:
    """Latency summed along the least-latency path, and that path's narrowest link."""

    latency_s: float
    bandwidth_bps: float

    def __iter__(self) -> Iterator[float]:
        return iter((self.latency_s, self.bandwidth_bps))

    def seconds(self, nbytes: float) -> float:
        if nbytes <= 0:
            return self.latency_s
        return self.latency_s + nbytes / self.bandwidth_bps


#: Endpoints at the same vertex (or outside the graph): no latency, unlimited bandwidth.
COLOCATED = PathMetrics(0.0, math.inf)


def _number(value: object, where: str, what: str, *, positive: bool) -> float:
    # bool is an int subclass; ``latency_ms: yes`` in YAML must not become 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{where}: {what} must be a number, got {value!r}")
    if positive and not value > 0:
        raise ConfigError(f"{where}: {what} must be greater than 0, got {value!r}")
    if not positive and value < 0:
        raise ConfigError(f"{where}: {what} must not be negative, got {value!r}")
    if math.isinf(value):
        raise ConfigError(f"{where}: {what} must be finite, got {value!r}")
    return float(value)


def build_network(spec: Mapping[str, Any]) -> nx.Graph[str]:
    """Validate a network description and return the frozen graph placement uses.

    ``spec`` is what ``network.yaml`` holds::

        sites: [cloud-eu, edge-paris, phone]
        links:
          - {a: phone, b: edge-paris, latency_ms: 8, bandwidth_mbps: 100}
          - {a: edge-paris, b: cloud-eu, latency_ms: 12, bandwidth_mbps: 1000}

    ``bandwidth_mbps`` is megabits per second; edges store bytes per second. Raises
    ``ConfigError`` naming the first bad entry. The graph is frozen so a cached path
    can never go stale behind the scheduler's back: build a new one to change it.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"network: expected a mapping with 'sites' and 'links', got {type(spec).__name__}"
        )
    unknown = sorted(str(k) for k in spec if k not in _SPEC_KEYS)
    if unknown:
        raise ConfigError(
            f"network: unknown key(s) {', '.join(unknown)}; only 'sites' and 'links' are allowed"
        )
    sites = spec.get("sites")
    if not isinstance(sites, list) or not sites:
        raise ConfigError("network.sites: must be a non-empty list of site names")
    graph: nx.Graph[str] = nx.Graph()
    for i, site in enumerate(sites):
        if not isinstance(site, str) or not site.strip():
            raise ConfigError(f"network.sites[{i}]: must be a non-empty string, got {site!r}")
        if site in graph:
            raise ConfigError(f"network.sites[{i}]: site {site!r} is listed twice")
        graph.add_node(site)
    links = spec.get("links", [])
    if not isinstance(links, list):
        raise ConfigError("network.links: must be a list of {a, b, latency_ms, bandwidth_mbps}")
    for i, link in enumerate(links):
        where = f"network.links[{i}]"
        if not isinstance(link, Mapping):
            raise ConfigError(f"{where}: must be a mapping, got {link!r}")
        missing = sorted(_LINK_KEYS - set(link))
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        extra = sorted(str(k) for k in link if k not in _LINK_KEYS)
        if extra:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(extra)}; "
                "a link has a, b, latency_ms and bandwidth_mbps"
            )
        a, b = link["a"], link["b"]
        for end in (a, b):
            if end not in graph:
                raise ConfigError(
                    f"{where}: site {end!r} is not in network.sites; add it there or fix the name"
                )
        if a == b:
            raise ConfigError(f"{where}: links {a!r} to itself; a link joins two different sites")
        if graph.has_edge(a, b):
            raise ConfigError(f"{where}: {a!r}–{b!r} is already linked; keep one entry")
        latency_ms = _number(link["latency_ms"], where, "latency_ms", positive=False)
        mbps = _number(link["bandwidth_mbps"], where, "bandwidth_mbps", positive=True)
        graph.add_edge(a, b, latency_s=latency_ms / 1e3, bandwidth_bps=mbps * 1e6 / 8)
    # The stubs leave freeze() unannotated; it freezes ``graph`` in place and returns it.
    return cast("nx.Graph[str]", nx.freeze(graph))


def _metrics_from(graph: nx.Graph[str], source: str) -> dict[str, PathMetrics]:
    """Least-latency paths from ``source`` to every reachable vertex, with bottlenecks."""
    # Without a target, single_source_dijkstra returns (distances, paths) by vertex; the
    # stubs return a union with the (distance, path) of a single target instead.
    dist, paths = cast(
        "tuple[dict[str, float], dict[str, list[str]]]",
        nx.single_source_dijkstra(graph, source, weight="latency_s"),
    )
    out: dict[str, PathMetrics] = {}
    for target, path in paths.items():
        bottleneck = math.inf
        for u, v in zip(path, path[1:], strict=False):
            bottleneck = min(bottleneck, float(graph[u][v]["bandwidth_bps"]))
        out[target] = PathMetrics(float(dist[target]), bottleneck)
    return out


# Frozen graphs cannot change, so their per-source tables outlive a single plan() call.
_FROZEN_CACHE: weakref.WeakKeyDictionary[nx.Graph[str], dict[str, dict[str, PathMetrics]]] = (
    weakref.WeakKeyDictionary()
)


class NetworkCosts:
    """Path metrics between vertices of one network, computed lazily and cached.

    ``metrics`` returns ``COLOCATED`` when there is no network or either end is not a
    vertex of it (unknown origin or site means "same place"), and ``None`` when both are
    vertices but no path joins them.
    """

    def __init__(self, network: object | None) -> None:
        if network is not None and not isinstance(network, nx.Graph):
            raise TypeError(
                f"ClusterSnapshot.network must be a networkx.Graph or None, "
                f"got {type(network).__name__}; build one with build_network(spec)"
            )
        self.graph: nx.Graph[str] | None = network
        self._by_source: dict[str, dict[str, PathMetrics]]
        if network is not None and nx.is_frozen(network):
            self._by_source = _FROZEN_CACHE.setdefault(network, {})
        else:
            self._by_source = {}

    def has(self, vertex: str) -> bool:
        return self.graph is not None and bool(vertex) and vertex in self.graph

    def metrics(self, source: str, target: str) -> PathMetrics | None:
        if not (self.has(source) and self.has(target)) or source == target:
            return COLOCATED
        table = self._by_source.get(source)
        if table is None:
            assert self.graph is not None
            table = _metrics_from(self.graph, source)
            self._by_source[source] = table
        return table.get(target)

    def artifact_source(self, origin: str) -> str:
        """Where model artifacts come from for a job submitted at ``origin``."""
        return SCHEDULER_VERTEX if self.has(SCHEDULER_VERTEX) else origin


def transfer_seconds(network: object | None, origin: str, site: str, nbytes: float) -> float:
    """Seconds to move ``nbytes`` from ``origin`` to ``site``; ``inf`` when unreachable."""
    metrics = NetworkCosts(network).metrics(origin, site)
    return math.inf if metrics is None else metrics.seconds(nbytes)
