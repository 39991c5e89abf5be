r"""Earmarks: a device set aside for a job that has waited long for room, so that the
smaller jobs arriving behind it cannot take every share it needs for ever.

Without them a large reservation starves: each time a job ends on a shared device, the
room it frees fits a small job at once, and the large one never sees enough free together.
Slurm's backfill answers this with a reservation for the job at the head of the queue,
Kubernetes' preemption with a nominated node; an earmark is the first of these, without
killing anything.

A job held back (``Plan.deferred``) for ``held_s ≥ PlacementConfig.earmark_after_s``
earmarks one shared device :math:`d` it may use (every filter passes) and would fit
empty (:math:`mem_{jd} ≤ M_d − unexplained_d`, :math:`milli_{jd} ≤ 1000`). Of those, the
one with the least :math:`drain_d = \max_s busy_s` — when by prediction every job on it
now has ended, an upper bound on the wait — then the most memory, then the first listed;
at most one earmark per device, the job waiting longest choosing first. An earmark stays
on its device while the device is there and still fits the job empty.

Each round:

1. the earmarked and overdue jobs are planned first, alone; those placed end their
   earmark (anywhere they fit: the device set aside is where they wait, not a constraint);
2. each one still held holds its share of its device: the device is offered to the rest
   of the round as if :math:`(mem_{jd}, milli_{jd})` and a free seat were reserved
   (``DeviceView.reserved_*``), so only jobs that fit *beside* it go there and the device
   drains until it fits;
3. the rest are planned on what is left, by the same strategy.

Every strategy (the cost model, the GPU-sharing policies) sees the set-aside share as
an ordinary reservation, so none needs to know of earmarks. A job that becomes
unschedulable (its device gone, every filter failing) loses its earmark.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from anypu.placement._config import PlacementConfig
from anypu.placement._deadlines import with_placed
from anypu.placement._filters import allowed_devices
from anypu.placement._framework import PlanContext
from anypu.placement._model import ClusterSnapshot, DeviceView, JobRequest, Plan
from anypu.placement._scores import score_terms
from anypu.placement._shares import share_memory, share_milli

__all__ = ["plan_with_earmarks"]

Key = tuple[str, str]
PlanFunction = Callable[[ClusterSnapshot, Sequence[JobRequest], PlacementConfig], Plan]


def _reserve(
    snapshot: ClusterSnapshot,
    key: Key,
    memory: int,
    milli: int,
) -> ClusterSnapshot:
    """``snapshot`` with ``memory`` and ``milli`` more reserved on device ``key`` and its
    first free seat, if any, taken."""

    def changed(dv: DeviceView) -> DeviceView:
        busy = list(dv.slice_busy_seconds)
        index = next((i for i, b in enumerate(busy) if b <= 0), None)
        if index is not None:
            busy[index] = 1e-6
        return dataclasses.replace(
            dv,
            slice_busy_seconds=tuple(busy),
            reserved_memory_bytes=dv.reserved_memory_bytes + memory,
            reserved_milli=dv.reserved_milli + milli,
        )

    nodes = []
    for node in snapshot.nodes:
        if node.node_id == key[0]:
            devices = tuple(changed(dv) if dv.key == key else dv for dv in node.devices)
            node = dataclasses.replace(node, devices=devices)
        nodes.append(node)
    return dataclasses.replace(snapshot, nodes=tuple(nodes))


class _Shares:
    """What each held job would reserve on each device, and where it may earmark."""

    def __init__(self, snapshot: ClusterSnapshot, config: PlacementConfig) -> None:
        self.ctx = PlanContext(snapshot, config)
        t = self.ctx.table
        self.keys: list[Key] = [dv.key for dv in t.devices]
        unexplained = np.fromiter(
            (dv.unexplained_memory_bytes for dv in t.devices), float, t.n_devices
        )
        self.capacity = t.dev_memory - unexplained
        self.drain = np.zeros(t.n_devices)
        if t.n_slices:
            np.maximum.at(self.drain, t.slice_dev, t.slice_busy)

    def of(self, job: JobRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Memory and milli ``job`` reserves per device, and where it could earmark."""
        t = self.ctx.table
        terms = score_terms(job, self.ctx, slice(None), t.dev_idle)
        compute = terms.get("compute", np.zeros(t.n_devices))
        memory = share_memory(job, self.ctx, slice(None))
        milli = share_milli(job, self.ctx, slice(None), compute)
        fits_empty = t.dev_shared & (memory <= self.capacity) & (milli <= 1000)
        return memory, milli, fits_empty & allowed_devices(job, self.ctx)

    def choose(self, eligible: np.ndarray, taken: set[Key]) -> int | None:
        free = eligible & np.array([k not in taken for k in self.keys], dtype=bool)
        if not free.any():
            return None
        index = np.flatnonzero(free)
        best = np.lexsort((index, -self.ctx.table.dev_memory[index], self.drain[index]))[0]
        return int(index[best])


def _merge(first: Plan, rest: Plan, earmarks: Mapping[str, Key]) -> Plan:
    marked = f"; {len(earmarks)} device(s) set aside for jobs waiting long" if earmarks else ""
    return Plan(
        placements=first.placements + rest.placements,
        unschedulable={**first.unschedulable, **rest.unschedulable},
        unresolvable=first.unresolvable | rest.unresolvable,
        deferred=first.deferred + rest.deferred,
        solver=rest.solver + marked,
        solve_seconds=first.solve_seconds + rest.solve_seconds,
        objective=first.objective + rest.objective,
        earmarks=dict(earmarks),
        deadline_unreachable={**first.deadline_unreachable, **rest.deadline_unreachable},
    )


def plan_with_earmarks(
    snapshot: ClusterSnapshot,
    jobs: Sequence[JobRequest],
    config: PlacementConfig,
    plan: PlanFunction,
) -> Plan:
    """``plan(snapshot, jobs, config)`` with earmarks kept, made and held (the module
    docstring); the plain plan when no job is earmarked or overdue."""
    first_ids = {
        j.job_id
        for j in jobs
        if j.job_id in snapshot.earmarks or j.held_s >= config.earmark_after_s
    }
    if not first_ids:
        return plan(snapshot, jobs, config)
    first = [j for j in jobs if j.job_id in first_ids]
    placed = plan(snapshot, first, config)
    snapshot = with_placed(snapshot, placed.placements)
    still_held = set(placed.deferred)
    shares = _Shares(snapshot, config)
    earmarks: dict[str, Key] = {}
    for job in sorted(first, key=lambda j: (-j.held_s, j.job_id)):
        if job.job_id not in still_held:
            continue
        memory, milli, eligible = shares.of(job)
        taken = set(earmarks.values())
        kept = snapshot.earmarks.get(job.job_id)
        index = shares.keys.index(kept) if kept in shares.keys else None
        if index is None or not eligible[index] or kept in taken:
            index = shares.choose(eligible, taken)
        if index is None:
            continue
        key = shares.keys[index]
        earmarks[job.job_id] = key
        snapshot = _reserve(snapshot, key, int(memory[index]), int(milli[index]))
    rest = plan(snapshot, [j for j in jobs if j.job_id not in first_ids], config)
    return _merge(placed, rest, earmarks)
