r"""Deadlines: a job with one goes only where it is predicted to finish in time, and a
job no device can finish in time fails at once with the best there was.

A job's deadline is :math:`D_j` seconds left as the round runs (its caller's
``deadline_ms`` less what it has waited). On device :math:`d` it is predicted to take

    C(j, d) = transfer(j, d) + warm(j, d) + compute(j, d) + min_{s ∈ d} busy(s)

(the terms of the solver's docstring, inputs in and outputs back, the queue of the least
busy slice; on a shared device a free seat has none). A deployment's replica
(``deadline_warm``) is judged as its calls will run, warm: without the warm term. ``DeadlineFilter`` keeps the
devices with :math:`C(j, d) ≤ D_j`, so every strategy (the cost model, which minimises
predicted completion, and the GPU-sharing policies) chooses among them only. Each round:

1. every job with a deadline (not best effort) that some device passes the other filters
   for but none has :math:`C(j, d) ≤ D_j` is taken out: ``Plan.deadline_unreachable``
   holds the device of least :math:`C` and its terms, for the caller's error. Waiting
   cannot help it: the deadline only draws nearer.
2. the rest are planned by the strategy.
3. a job whose placement is predicted late after all (jobs before it in the round
   queued on the same slice) is planned again, alone with the other late ones, on the
   cluster as the round left it; at most ``_PASSES`` passes, after which a job still
   late is held for the next round (which then finds it reachable or not).

A job with ``best_effort`` is placed by the strategy as any other: where it is
predicted to finish first under the cost model, whether or not that meets the deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from anypu.placement._framework import PREDICTED_TERMS, DeviceIndex, PlanContext
from anypu.placement._model import (
    ClusterSnapshot,
    DeadlineMiss,
    DeviceView,
    JobRequest,
    NodeView,
    Placement,
    Plan,
)
from anypu.placement._scores import score_terms

if TYPE_CHECKING:  # _config imports the filters, this one among them
    from anypu.placement._config import PlacementConfig

__all__ = [
    "DeadlineFilter",
    "completion_seconds",
    "completion_terms",
    "passing_but_the_deadline",
    "plan_with_deadlines",
    "with_placed",
]

PlanFunction = Callable[[ClusterSnapshot, Sequence[JobRequest], "PlacementConfig"], Plan]

#: Passes of step 3 in a round.
_PASSES = 3


def _firm(job: JobRequest) -> float | None:
    """The deadline ``job`` must meet: None without one, or with ``best_effort``."""
    return None if job.best_effort else job.deadline_s


def _least_busy(ctx: PlanContext) -> NDArray[np.float64]:
    """Per device: the busy time of its least busy slice (what a job waits behind)."""
    t = ctx.table
    if not t.n_slices:
        return np.zeros(t.n_devices)
    least: NDArray[np.float64] = np.minimum.reduceat(t.slice_busy, t.layout.dev_first_slice)
    return least


def completion_terms(
    job: JobRequest, ctx: PlanContext, idx: DeviceIndex = slice(None)
) -> dict[str, NDArray[np.float64]]:
    """``PREDICTED_TERMS`` of ``job`` on devices ``idx`` as the round starts (the queue
    of each device's least busy slice)."""
    terms = score_terms(job, ctx, idx, ctx.table.dev_idle)
    out = {k: np.asarray(terms[k], float) for k in PREDICTED_TERMS if k in terms}
    out["queue"] = _least_busy(ctx)[idx]
    if job.deadline_warm:  # a replica: each call is judged once the model is loaded
        out.pop("warm", None)
    return out


def completion_seconds(
    job: JobRequest, ctx: PlanContext, idx: DeviceIndex = slice(None)
) -> NDArray[np.float64]:
    """:math:`C(j, d)` of the module docstring on devices ``idx``."""
    terms = completion_terms(job, ctx, idx)
    total: NDArray[np.float64] = np.zeros(len(terms["queue"]))
    for values in terms.values():
        total = total + values
    return total


class DeadlineFilter:
    """Devices predicted to finish a job with a deadline in time (the module docstring);
    every device for a job without one, or with ``best_effort``. Waiting only shortens a
    deadline, so a rejection stands (``unresolvable``)."""

    name = "deadline"
    node_level = False
    unresolvable = True

    def check(
        self, job: JobRequest, node: NodeView, device: DeviceView | None, ctx: PlanContext
    ) -> str | None:
        deadline = _firm(job)
        if device is None or deadline is None:
            return None
        keys = [dv.key for dv in ctx.table.devices]
        d = keys.index(device.key)
        predicted = float(completion_seconds(job, ctx, np.array([d]))[0])
        if predicted <= deadline:
            return None
        return (
            f"predicted to take {predicted * 1000:.0f} ms, over the"
            f" {max(deadline, 0.0) * 1000:.0f} ms its deadline leaves"
        )

    def mask(self, job: JobRequest, ctx: PlanContext) -> np.ndarray:
        deadline = _firm(job)
        if deadline is None:
            return np.ones(ctx.table.n_devices, dtype=bool)
        return completion_seconds(job, ctx) <= deadline


def passing_but_the_deadline(job: JobRequest, ctx: PlanContext) -> NDArray[np.bool_]:
    """Per device: whether every filter of the config but ``DeadlineFilter`` passes."""
    others = np.ones(ctx.table.n_devices, dtype=bool)
    for f in ctx.config.filters:
        if not isinstance(f, DeadlineFilter):
            others &= f.mask(job, ctx)
    return others


def _unreachable(job: JobRequest, deadline: float, ctx: PlanContext) -> DeadlineMiss | None:
    """The best prediction for ``job`` when no device that passes the other filters
    meets its deadline; None when one does, or when none passes them (the strategy then
    says why, as for any job)."""
    others = passing_but_the_deadline(job, ctx)
    if not others.any():
        return None
    terms = completion_terms(job, ctx)
    total = sum(terms.values(), np.zeros(ctx.table.n_devices))
    total = np.where(others, total, np.inf)
    if (total <= deadline).any():
        return None
    d = int(np.argmin(total))
    dv = ctx.table.devices[d]
    node = ctx.table.nodes[int(ctx.table.dev_node[d])]
    return DeadlineMiss(
        job_id=job.job_id,
        deadline_s=deadline,
        node_id=dv.node_id,
        device_id=dv.device.device_id,
        tier=node.tier,
        predicted_seconds=float(total[d]),
        terms={k: float(v[d]) for k, v in terms.items()},
        origin=job.origin,
    )


def _late(p: Placement, job: JobRequest) -> bool:
    deadline = _firm(job)
    if deadline is None:
        return False
    warm = p.terms.get("warm", 0.0) if job.deadline_warm else 0.0
    return p.predicted_seconds - warm > deadline


def with_placed(snapshot: ClusterSnapshot, placements: Sequence[Placement]) -> ClusterSnapshot:
    """``snapshot`` with ``placements`` taken: their slices busier by each job's compute
    (what the solver queues later jobs of a round behind), their reservations made."""
    by_device: dict[tuple[str, str], list[Placement]] = {}
    for p in placements:
        by_device.setdefault((p.node_id, p.device_id), []).append(p)
    if not by_device:
        return snapshot

    def taken(dv: DeviceView) -> DeviceView:
        busy = list(dv.slice_busy_seconds)
        memory, milli = dv.reserved_memory_bytes, dv.reserved_milli
        for p in by_device[dv.key]:
            if p.slice_index < len(busy):
                busy[p.slice_index] += max(p.terms.get("compute", p.predicted_seconds), 1e-6)
            memory, milli = memory + p.memory_bytes, milli + p.milli
        return replace(
            dv, slice_busy_seconds=tuple(busy), reserved_memory_bytes=memory, reserved_milli=milli
        )

    nodes = tuple(
        replace(n, devices=tuple(taken(dv) if dv.key in by_device else dv for dv in n.devices))
        if any(dv.key in by_device for dv in n.devices)
        else n
        for n in snapshot.nodes
    )
    return replace(snapshot, nodes=nodes)


def plan_with_deadlines(
    snapshot: ClusterSnapshot,
    jobs: Sequence[JobRequest],
    config: PlacementConfig,
    plan: PlanFunction,
) -> Plan:
    """``plan(snapshot, jobs, config)`` with deadlines kept (the module docstring); the
    plain plan when no job has a firm deadline or the config has no ``DeadlineFilter``."""
    if all(_firm(j) is None for j in jobs) or not any(
        isinstance(f, DeadlineFilter) for f in config.filters
    ):
        return plan(snapshot, jobs, config)
    by_id = {j.job_id: j for j in jobs}
    misses: dict[str, DeadlineMiss] = {}
    placed: list[Placement] = []
    unschedulable: dict[str, dict[str, str]] = {}
    unresolvable: set[str] = set()
    deferred: list[str] = []
    solvers: list[str] = []
    solve_seconds = objective = 0.0
    todo = list(jobs)
    for attempt in range(_PASSES):
        ctx = PlanContext(snapshot, config)
        for job in todo:
            deadline = _firm(job)
            miss = None if deadline is None else _unreachable(job, deadline, ctx)
            if miss is not None:
                misses[job.job_id] = miss
        todo = [j for j in todo if j.job_id not in misses]
        if not todo:
            break
        result = plan(snapshot, todo, config)
        solvers.append(result.solver)
        solve_seconds += result.solve_seconds
        objective += result.objective
        unschedulable.update(result.unschedulable)
        unresolvable |= result.unresolvable
        deferred += result.deferred
        late = [p for p in result.placements if _late(p, by_id[p.job_id])]
        on_time = [p for p in result.placements if not _late(p, by_id[p.job_id])]
        placed += on_time
        if not late:
            break
        if attempt == _PASSES - 1:
            deferred += [p.job_id for p in late]
            break
        snapshot = with_placed(snapshot, on_time)
        todo = [by_id[p.job_id] for p in late]
    solver = solvers[0] if solvers else "none"
    if len(solvers) > 1:
        solver += f"; {len(solvers) - 1} more pass(es) for jobs predicted late"
    if misses:
        solver += f"; {len(misses)} job(s) cannot meet their deadline"
    return Plan(
        placements=tuple(placed),
        unschedulable=unschedulable,
        unresolvable=frozenset(unresolvable),
        deferred=tuple(deferred),
        solver=solver,
        solve_seconds=solve_seconds,
        objective=objective,
        deadline_unreachable=misses,
    )
