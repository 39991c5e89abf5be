r"""The network as measured: declared links refitted to the latencies of measured paths.

What can be measured is a path, not a link: an agent times round trips between its site
and the scheduler on its stream; a probe, between two sites. Take a sample of path
:math:`P` (the least-latency path of the declared graph between its two ends) to be
:math:`m_P` seconds one way (half a round trip), :math:`a_P` seconds old. With
:math:`p_e` the declared latency of link :math:`e` and :math:`r_e` the factor the fit
puts on it (fitted latency :math:`x_e = p_e r_e`)::

    minimise   Σ_P w_P · ((Σ_{e∈P} p_e r_e − m_P) / m_P)²   +   λ · Σ_e (p_e / p̄) (r_e − 1)²
    w_P = min(1, 2^(1 − a_P / h))                      (h = ``half_life_s``)

a least-squares fit of every measured path in relative terms, the declared values the
prior (λ tiny, so it only decides what the samples leave open): a link no sample
touches keeps its declared latency; a sample is spread over its path's links in
proportion to their declared latencies (the prior's weight :math:`p_e / p̄`, p̄ their
mean, makes every :math:`r_e` of a lone path equal); links shared by several measured paths get the
value that fits them all best, newer samples weighing more. A sample counts fully for
one half-life and then fades: a link's fitted latency is
:math:`p_e (1 + (r_e − 1) · w_e)`, :math:`w_e` the weight of the freshest sample on it,
so an unmeasured link drifts back to what was declared; samples older than
``_FORGET_AFTER`` half-lives are dropped. :math:`r_e` stays within
``[_MIN_FACTOR, _MAX_FACTOR]``; links declared with no latency count as ``_FLOOR_S`` so a
measurement can move them.

Bandwidth, where a sample carries one (:math:`b_P`, bytes per second): no link of a path
that carried :math:`b_P` is slower, so links declared below it are raised to it; and
when the declared bottleneck is faster than :math:`b_P`, that bottleneck link is
lowered to it. Samples are applied oldest first, so the newest has the last word.

Pure: a declared graph and samples in, a new frozen graph out (edges carry
``latency_s``/``bandwidth_bps`` fitted, ``declared_latency_s``/``declared_bandwidth_bps``
and ``measured_age_s``, ``None`` where no sample touched the link).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import networkx as nx
import numpy as np

__all__ = ["PathSample", "fit_network"]

_MIN_FACTOR, _MAX_FACTOR = 0.01, 1000.0
_FLOOR_S = 1e-4
_FORGET_AFTER = 8.0
_PRIOR_WEIGHT = 1e-6


@dataclass(frozen=True)
class PathSample:
    """One measured path: between vertices ``a`` and ``b``, ``latency_s`` one way (half
    a round trip), ``age_s`` old; ``bandwidth_bps`` where a transfer was timed too."""

    a: str
    b: str
    latency_s: float
    age_s: float = 0.0
    bandwidth_bps: float | None = None


def _path(graph: nx.Graph[str], a: str, b: str) -> list[tuple[str, str]] | None:
    if a == b or a not in graph or b not in graph:
        return None
    try:
        nodes = nx.shortest_path(graph, a, b, weight="latency_s")
    except nx.NetworkXNoPath:
        return None
    return list(zip(nodes, nodes[1:], strict=False))


def _key(u: str, v: str) -> tuple[str, str]:
    return (u, v) if u <= v else (v, u)


def fit_network(
    declared: nx.Graph[str], samples: Sequence[PathSample], *, half_life_s: float = 300.0
) -> nx.Graph[str]:
    """The declared graph with each link's latency and bandwidth refitted to ``samples``
    (the module docstring). Samples between unknown or unconnected vertices, or not
    finite, are ignored. Returns a new frozen graph; ``declared`` is not changed."""
    edges = [(str(u), str(v)) for u, v in declared.edges()]  # as declared, for display
    index = {_key(*e): i for i, e in enumerate(edges)}
    prior = np.array(
        [max(float(declared.edges[e]["latency_s"]), _FLOOR_S) for e in edges], dtype=float
    )
    rows: list[np.ndarray] = []
    targets: list[float] = []
    weights: list[float] = []
    age = np.full(len(edges), math.inf)
    freshness = np.zeros(len(edges))
    paths: list[tuple[PathSample, list[int]]] = []
    for sample in samples:
        if not (math.isfinite(sample.latency_s) and sample.latency_s >= 0):
            continue
        if not (math.isfinite(sample.age_s) and sample.age_s >= 0):
            continue
        if sample.age_s > _FORGET_AFTER * half_life_s:
            continue
        path = _path(declared, sample.a, sample.b)
        if not path:
            continue
        members = [index[_key(u, v)] for u, v in path]
        paths.append((sample, members))
        measured = max(sample.latency_s, _FLOOR_S)
        row = np.zeros(len(edges))
        row[members] = prior[members] / measured
        rows.append(row)
        targets.append(1.0)
        weight = min(1.0, 2.0 ** (1.0 - sample.age_s / half_life_s))
        weights.append(weight)
        age[members] = np.minimum(age[members], sample.age_s)
        freshness[members] = np.maximum(freshness[members], weight)
    factor = np.ones(len(edges))
    if rows:
        w = np.sqrt(np.array(weights))
        prior_w = np.sqrt(_PRIOR_WEIGHT * prior / prior.mean())
        a = np.vstack([np.vstack(rows) * w[:, None], np.diag(prior_w)])
        b = np.concatenate([np.array(targets) * w, prior_w])
        factor = np.clip(np.linalg.lstsq(a, b, rcond=None)[0], _MIN_FACTOR, _MAX_FACTOR)
        factor = 1.0 + (factor - 1.0) * freshness
    fitted: nx.Graph[str] = nx.Graph()
    fitted.add_nodes_from(declared.nodes(data=True))
    bandwidth = {e: float(declared.edges[e]["bandwidth_bps"]) for e in edges}
    for sample, members in sorted(paths, key=lambda item: -item[0].age_s):
        carried = sample.bandwidth_bps
        if carried is None or not (math.isfinite(carried) and carried > 0):
            continue
        on_path = [edges[i] for i in members]
        for e in on_path:
            bandwidth[e] = max(bandwidth[e], carried)
        narrowest = min(on_path, key=lambda e: bandwidth[e])
        if bandwidth[narrowest] > carried:
            bandwidth[narrowest] = carried
    for i, e in enumerate(edges):
        data: dict[str, Any] = declared.edges[e]
        measured = math.isfinite(age[i])
        fitted.add_edge(
            *e,
            latency_s=float(prior[i] * factor[i]) if measured else float(data["latency_s"]),
            bandwidth_bps=bandwidth[e],
            declared_latency_s=float(data["latency_s"]),
            declared_bandwidth_bps=float(data["bandwidth_bps"]),
            measured_age_s=float(age[i]) if measured else None,
        )
    return cast("nx.Graph[str]", nx.freeze(fitted))
