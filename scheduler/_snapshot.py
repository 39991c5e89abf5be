"""The cluster as placement sees it: a ``ClusterSnapshot`` built from the scheduler's
nodes and live jobs, and what those jobs reserve of shared devices. Pure: no I/O."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from anypu.placement import ClusterSnapshot, DeviceView, NodeView, WorkloadShape
from anypu.protos import messages as m
from anypu.scheduler._quarantine import NodeQuarantine
from anypu.scheduler._records import JobRecord, NodeRecord

__all__ = ["reservations_of", "snapshot_of"]


def reservations_of(live: Iterable[JobRecord]) -> dict[str, tuple[m.Reservation, ...]]:
    """By node: what each of the ``live`` (placed or running) jobs holds of a shared
    device, in the order given."""
    held: dict[str, list[m.Reservation]] = {}
    for job in live:
        p = job.placement
        if p is not None and p.milli:
            held.setdefault(p.node_id, []).append(
                m.Reservation(job.job_id, p.device_id, p.slice_index, p.memory_bytes, p.milli)
            )
    return {node_id: tuple(rows) for node_id, rows in held.items()}


def snapshot_of(
    nodes: Iterable[NodeRecord],
    live: Sequence[JobRecord],
    quarantine: NodeQuarantine,
    network: object | None,
    workload: tuple[WorkloadShape, ...],
    now: float,
    held: Iterable[tuple[m.PlacementInfo, str]] = (),
) -> ClusterSnapshot:
    """Every node and device with the work on it: predicted busy seconds per slice (a
    seat of a shared device is taken while a job holds it), what the jobs reserve of
    shared devices, and the memory their vendor reads that no job accounts for.
    ``held``: slices deployments' replicas hold (``_deployments``), with the
    deployment's name: counted as one call of their model each, and
    ``DeviceView.replica_slices``, which no other deployment's or plain job may take."""
    # Per device with work on it: predicted busy seconds per slice, and what its jobs
    # reserve of it. Devices without work share one tuple of zeros per slice count.
    busy: dict[tuple[str, str], dict[int, float]] = {}
    reserved: dict[tuple[str, str], tuple[int, int]] = {}
    replicas = list(held)
    holds: dict[tuple[str, str], dict[int, str]] = {}
    for at, deployment in replicas:
        holds.setdefault((at.node_id, at.device_id), {})[at.slice_index] = deployment
    for p in itertools.chain((job.placement for job in live), (at for at, _ in replicas)):
        if p is not None:
            on = busy.setdefault((p.node_id, p.device_id), {})
            # At least a nanosecond: a job predicted to take no time still holds its seat.
            on[p.slice_index] = on.get(p.slice_index, 0.0) + max(p.predicted_seconds, 1e-9)
            if p.milli:
                memory, milli = reserved.get((p.node_id, p.device_id), (0, 0))
                reserved[(p.node_id, p.device_id)] = (memory + p.memory_bytes, milli + p.milli)
    idle: dict[int, tuple[float, ...]] = {}
    views = []
    for node in nodes:
        quarantined = quarantine.quarantined(node.node_id, now)
        unexplained = _unexplained_memory(node)
        devices = []
        for d in node.devices:
            key = (node.node_id, d.device_id)
            work = busy.get(key)
            if work is None:
                seconds = idle.get(d.slices) or idle.setdefault(d.slices, (0.0,) * d.slices)
            else:
                loads = [0.0] * d.slices
                for i, s in work.items():
                    if 0 <= i < d.slices:
                        loads[i] += s
                seconds = tuple(loads)
            memory, milli = reserved.get(key, (0, 0))
            devices.append(
                DeviceView(
                    node_id=node.node_id,
                    device=d,
                    slice_busy_seconds=seconds,
                    reserved_memory_bytes=memory,
                    reserved_milli=milli,
                    unexplained_memory_bytes=unexplained.get(d.device_id, 0) if d.shared else 0,
                    replica_slices=holds.get(key, {}),
                )
            )
        views.append(
            NodeView(
                node_id=node.node_id,
                tier=node.tier,
                site=node.site,
                healthy=node.state == "ready" and node.connected and not quarantined,
                unhealthy_reason=quarantine.reason(node.node_id, now)
                if quarantined
                else (node.state if node.connected else "disconnected"),
                labels=node.labels,
                devices=tuple(devices),
                warm_digests=node.warm_digests,
            )
        )
    return ClusterSnapshot(nodes=tuple(views), network=network, now=now, workload=workload)


def _unexplained_memory(node: NodeRecord) -> dict[str, int]:
    """Per device: memory in use, as its vendor read it on the last heartbeat, that no
    running job's own measured use accounts for."""
    jobs: dict[str, int] = {}
    for usage in node.job_usage:
        jobs[usage.device_id] = jobs.get(usage.device_id, 0) + usage.memory_used_bytes
    return {
        u.device_id: max(0, u.memory_used_bytes - jobs.get(u.device_id, 0))
        for u in node.usage
        if u.memory_used_bytes
    }
