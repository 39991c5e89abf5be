"""Leases: a placed slice kept for one client's further calls of the same model.

Ray's answer to per-call scheduling cost is the worker lease: the raylet places the first
task of a scheduling class, then the owner sends the following ones straight to the
leased worker until it is idle or needed elsewhere. anypu does the same. A job submitted
with ``SubmitRequest.lease`` that succeeds on an agent taking direct calls leaves its
slice leased to the caller; the caller hands further calls with the same model and
constraints to that agent directly; the agent reports them afterwards in batches
(``LeasedRuns``) and the scheduler records each as a job, placed by ``lease``.

A lease ends, with ``LeaseRevoked`` sent to its agent, when other jobs wait for
placement (the slice may be what they need, and the client's next call is placed afresh
with them), when a node joins (a better placement may exist now), when it has been idle
for ``lease_idle_s``, or with its node. This module only keeps the book; the state
machine decides when.

A deployment's replicas are leases too (``_deployments``), held by the deployment rather
than a caller: they end only with their node, a scale-down or the deployment.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, replace

from anypu.protos import messages as m

__all__ = ["HeldLease", "LeaseBook"]

_RETIRED_KEPT = 1024  # revoked leases whose late run reports are still recorded


@dataclass
class HeldLease:
    lease: m.Lease
    #: The granting job's request without its inputs: what each direct run asked for.
    template: m.SubmitRequest
    placement: m.PlacementInfo
    last_used: float
    #: The deployment whose replica this is ("" for a caller's lease), and the job that
    #: placed and warmed that replica.
    deployment: str = ""
    replica_id: str = ""
    version: int = 0


class LeaseBook:
    def __init__(self) -> None:
        self.active: dict[str, HeldLease] = {}
        self._retired: OrderedDict[str, HeldLease] = OrderedDict()
        self.granted = 0

    def grant(
        self,
        request: m.SubmitRequest,
        placement: m.PlacementInfo,
        address: str,
        now: float,
        deployment: str = "",
        replica_id: str = "",
        version: int = 0,
    ) -> m.Lease:
        lease = m.Lease(
            # The id is the capability a client shows the agent: unguessable.
            lease_id="lease-" + secrets.token_hex(16),
            node_id=placement.node_id,
            device_id=placement.device_id,
            slice_index=placement.slice_index,
            artifact_digest=request.artifact_digest,
            address=address,
        )
        template = replace(request, inputs=b"", inputs_digest="", wait=False, lease=False)
        self.active[lease.lease_id] = HeldLease(
            lease,
            template,
            replace(placement, solver="lease"),
            now,
            deployment,
            replica_id,
            version,
        )
        self.granted += 1
        return lease

    def slice_leased(self, placement: m.PlacementInfo) -> bool:
        where = (placement.node_id, placement.device_id, placement.slice_index)
        return any(
            (h.lease.node_id, h.lease.device_id, h.lease.slice_index) == where
            for h in self.active.values()
        )

    def retire(self, lease_id: str) -> HeldLease | None:
        held = self.active.pop(lease_id, None)
        if held is not None:
            self._retired[lease_id] = held
            while len(self._retired) > _RETIRED_KEPT:
                self._retired.popitem(last=False)
        return held

    def find(self, lease_id: str) -> HeldLease | None:
        """An active lease, or a recently revoked one (runs may be reported late)."""
        return self.active.get(lease_id) or self._retired.get(lease_id)

    def on_node(self, node_id: str) -> list[HeldLease]:
        return [h for h in self.active.values() if h.lease.node_id == node_id]

    def idle(self, now: float, idle_s: float) -> list[HeldLease]:
        """Callers' leases unused for ``idle_s`` (a replica waits for calls)."""
        return [h for h in self.callers() if now - h.last_used > idle_s]

    def callers(self) -> list[HeldLease]:
        """Leases held by callers, not by deployments: the ones other work may take back."""
        return [h for h in self.active.values() if not h.deployment]

    def of_deployment(self, name: str) -> list[HeldLease]:
        return [h for h in self.active.values() if h.deployment == name]
