r"""Where a client is, inferred from the round trips it measured.

A client that names no origin sends the round trips it timed to a few vertices of the
network (the scheduler, the sites of agents it can reach directly): :math:`m_t` seconds
one way (half of each) to vertex :math:`t`. Were the client at vertex :math:`v`, the
network predicts :math:`L(v, t)`, the least-latency path's latency. The origin is

    v* = argmin_v  Σ_t  ln²((m_t + ε) / (L(v, t) + ε))        (ε = ``_EPSILON_S``)

the vertex whose predictions fit the measurements best in relative terms (a 2 ms
sample off by 1 ms weighs as a 40 ms one off by 20 ms); ε (1 ms: below it nothing
placement costs differs) keeps a loopback sample and a co-located vertex finite. Targets that are not vertices, or that no path from
:math:`v` reaches, are left out for that :math:`v`; a vertex reaching none of them is
no candidate. The fit reports its root-mean-square factor, :math:`e^{\sqrt{S/n}}`
(1.0 is a perfect fit), and the runner-up, so an operator can tell a clear inference
from a guess between two vertices.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx

__all__ = ["OriginFit", "infer_origin"]

_EPSILON_S = 0.001


@dataclass(frozen=True)
class OriginFit:
    """The inferred origin, how well it fits (``factor``: 1.0 is exact) and the
    runner-up vertex with its factor ("" and inf when there is none)."""

    vertex: str
    factor: float
    samples: int
    runner_up: str = ""
    runner_up_factor: float = math.inf

    def describe(self) -> str:
        """``inferred from 2 round trips: home (within ×1.05; next office ×3.2)``."""
        text = (
            f"inferred from {self.samples} round trip(s): {self.vertex} (within ×{self.factor:.2f}"
        )
        if self.runner_up:
            text += f"; next {self.runner_up} ×{self.runner_up_factor:.2g}"
        return text + ")"


# Frozen graphs cannot change: their all-pairs latencies are worked out once.
_FROZEN: weakref.WeakKeyDictionary[nx.Graph[str], dict[str, dict[str, float]]] = (
    weakref.WeakKeyDictionary()
)


def _lengths(graph: nx.Graph[str]) -> dict[str, dict[str, float]]:
    known = _FROZEN.get(graph)
    if known is None:
        known = {
            v: dict(lengths)
            for v, lengths in nx.all_pairs_dijkstra_path_length(graph, weight="latency_s")
        }
        if nx.is_frozen(graph):
            _FROZEN[graph] = known
    return known


def infer_origin(graph: object | None, round_trips: Mapping[str, float]) -> OriginFit | None:
    """The vertex of ``graph`` the module docstring chooses for ``round_trips`` (vertex
    -> round-trip seconds); None without a network or a sample of one of its vertices."""
    if not isinstance(graph, nx.Graph):
        return None
    one_way = {
        t: max(0.0, rtt) / 2 for t, rtt in round_trips.items() if t in graph and math.isfinite(rtt)
    }
    if not one_way:
        return None
    scores: list[tuple[int, float, str]] = []
    table = _lengths(graph)
    for v in sorted(graph.nodes):
        lengths = table[v]
        terms = [
            math.log((m + _EPSILON_S) / (float(lengths[t]) + _EPSILON_S)) ** 2
            for t, m in one_way.items()
            if t in lengths
        ]
        if terms:
            scores.append((-len(terms), sum(terms) / len(terms), v))
    if not scores:
        return None
    scores.sort()  # a vertex reaching more of the targets first, then the best fit
    (n, best, vertex), rest = scores[0], scores[1:]
    factor = math.exp(math.sqrt(best))
    if not rest:
        return OriginFit(vertex, factor, -n)
    _, second, other = rest[0]
    return OriginFit(vertex, factor, -n, other, math.exp(math.sqrt(second)))
