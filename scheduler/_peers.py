"""Whom agents time to other sites: one agent per site that takes direct calls.

Each site is represented by its connected, ready node with a direct address that sorts
first by name (a stable choice: the set changes only when such a node comes or goes).
Every agent is told the representatives of the sites other than its own (``m.Peers``)
when it joins and whenever the set changes; its agent then times round trips and
bandwidth to them in turn (``agents._peers``). At most ``MAX_PEERS`` sites are named.
"""

from __future__ import annotations

from collections.abc import Iterable

from anypu.protos import messages as m
from anypu.scheduler._records import NodeRecord

__all__ = ["MAX_PEERS", "peers_for", "representatives"]

#: The most other sites an agent is asked to time (and the scheduler reads of a beat).
MAX_PEERS = 32


def representatives(nodes: Iterable[NodeRecord]) -> dict[str, m.Peer]:
    """Site -> the node that represents it (the module docstring)."""
    out: dict[str, m.Peer] = {}
    for node in sorted(nodes, key=lambda n: n.node_id):
        ready = node.connected and node.state == "ready"
        if ready and node.site and node.direct_address and node.site not in out:
            out[node.site] = m.Peer(node.node_id, node.site, node.direct_address)
    return out


def peers_for(site: str, reps: dict[str, m.Peer]) -> m.Peers:
    """What an agent at ``site`` is to time: every other site's representative."""
    others = [peer for other, peer in sorted(reps.items()) if other != site]
    return m.Peers(tuple(others[:MAX_PEERS]))
