"""The dashboard's topology: sites ranked by tier, links as declared and as fitted to
measurements (with the age of the newest sample on each), recent job flows, and round
trips measured on the agent streams beside what ``network.yaml`` declares."""

from __future__ import annotations

from anypu.placement import SCHEDULER_VERTEX, TIERS, NetworkCosts
from anypu.protos.messages import JobInfo, NodeInfo
from anypu.scheduler._metrics import ClusterView

__all__ = ["measured_round_trips", "topology_layout", "topology_view"]

_CLIENT_RANK = len(TIERS)  # sites where no node sits (clients' origins) go below devices


def topology_layout(sites: dict[str, int], edges: list[tuple[str, str]]) -> dict[str, list]:
    """Positions in the unit square: one row per rank (cloud on top), few crossings.

    ``sites`` maps each site to its rank. A row's order is the mean position of each
    site's neighbours in rows already placed (the barycentre heuristic), names breaking
    ties, so the same network always draws the same way.
    """
    neighbours: dict[str, set[str]] = {s: set() for s in sites}
    for a, b in edges:
        if a in neighbours and b in neighbours:
            neighbours[a].add(b)
            neighbours[b].add(a)
    ranks = sorted(set(sites.values()))
    x: dict[str, float] = {}
    out: dict[str, list] = {}
    for row, rank in enumerate(ranks):
        members = [s for s in sites if sites[s] == rank]

        def key(site: str) -> tuple[float, str]:
            placed = [x[n] for n in neighbours[site] if n in x]
            return (sum(placed) / len(placed) if placed else 0.5, site)

        members.sort(key=key)
        for i, site in enumerate(members):
            x[site] = (i + 1) / (len(members) + 1)
            out[site] = [round(x[site], 4), round((row + 0.5) / len(ranks), 4)]
    return out


def topology_view(view: ClusterView, recent: list[JobInfo]) -> dict:
    graph = view.network
    rank: dict[str, int] = {}
    for n in view.nodes:
        rank[n.site] = min(rank.get(n.site, _CLIENT_RANK), TIERS.index(n.tier))
    links = []
    if graph is not None:
        for site in graph.nodes:  # type: ignore[attr-defined]
            rank.setdefault(str(site), _CLIENT_RANK)
        for a, b, data in graph.edges(data=True):  # type: ignore[attr-defined]
            links.append(_link(str(a), str(b), data))
    flows: dict[tuple[str, str], dict] = {}
    for job in recent:
        if job.placement is None:
            continue
        flow = flows.setdefault(
            (job.origin, job.placement.node_id),
            {"origin": job.origin, "node_id": job.placement.node_id, "jobs": 0, "last": {}},
        )
        flow["jobs"] += 1
        if not flow["last"]:  # recent is newest first
            flow["last"] = {"job_id": job.job_id, "name": job.name, "state": job.state}
    return {
        "sites": [
            {"site": s, "rank": r, "tier": TIERS[r] if r < len(TIERS) else "client"}
            for s, r in sorted(rank.items())
        ],
        "links": links,
        "nodes": [
            {"node_id": n.node_id, "tier": n.tier, "site": n.site, "state": n.state}
            for n in view.nodes
        ],
        "flows": list(flows.values()),
        "measured": measured_round_trips(view),
        "layout": topology_layout(rank, [(lk["a"], lk["b"]) for lk in links]),
    }


def _link(a: str, b: str, data: dict) -> dict:
    """A link as declared and, where a sample touched it, as fitted to measurements."""
    declared_s = data.get("declared_latency_s", data["latency_s"])
    declared_bps = data.get("declared_bandwidth_bps", data["bandwidth_bps"])
    age = data.get("measured_age_s")
    return {
        "a": a,
        "b": b,
        "latency_ms": declared_s * 1e3,
        "bandwidth_mbps": declared_bps * 8 / 1e6,
        "measured_latency_ms": None if age is None else data["latency_s"] * 1e3,
        "measured_bandwidth_mbps": (
            None if data["bandwidth_bps"] == declared_bps else data["bandwidth_bps"] * 8 / 1e6
        ),
        "measured_age_s": age,
    }


def measured_round_trips(view: ClusterView) -> list[dict]:
    """Per site, the round trip to the scheduler as its nodes' agents measure it on their
    streams (the lowest median among them, the highest 95th percentile, the newest
    sample's age), beside what ``network.yaml`` declares for the same path (twice the
    least-latency path to its ``scheduler`` vertex; None where it declares none)."""
    costs = NetworkCosts(
        view.declared_network if view.declared_network is not None else view.network
    )
    by_site: dict[str, list[NodeInfo]] = {}
    for n in view.nodes:
        if n.rtt_age_s >= 0:
            by_site.setdefault(n.site, []).append(n)
    rows = []
    for site, nodes in sorted(by_site.items()):
        declared = None
        if costs.has(site) and costs.has(SCHEDULER_VERTEX):
            path = costs.metrics(site, SCHEDULER_VERTEX)
            declared = None if path is None else 2e3 * path.latency_s
        rows.append(
            {
                "site": site,
                "to": SCHEDULER_VERTEX,
                "nodes": sorted(n.node_id for n in nodes),
                "measured_rtt_p50_ms": min(n.rtt_p50_s for n in nodes) * 1e3,
                "measured_rtt_p95_ms": max(n.rtt_p95_s for n in nodes) * 1e3,
                "age_s": min(n.rtt_age_s for n in nodes),
                "declared_rtt_ms": declared,
            }
        )
    return rows
