r"""Placing a batch of jobs on slices: a greedy pass always, CP-SAT over it for batches.

Notation. Job :math:`j` with FLOPs :math:`F_j`, bytes in/out :math:`I_j, O_j`, artifact
:math:`A_j`, origin :math:`o_j`, priority :math:`p_j`; slice :math:`s` of device
:math:`d` on node :math:`n` at site :math:`σ`; :math:`T(u, v, b)` the network cost of
``b`` bytes (``_network``: least-latency path, latency sum + b / bottleneck bandwidth).

Terms, all in seconds::

    compute(j,s)  = measured_j[model(d)] · slices(d)           if measured on that model
                  = F_j / (tflops(d)/slices(d) · 1e12 · eff[kind(d)]) + launch_overhead
    transfer(j,s) = T(o_j, σ, I_j) + T(σ, o_j, O_j)            (0 when co-located/unknown)
    warm(j,s)     = 0                                          if digest_j warm on n
                  = T(src_j, σ, A_j) + load_overhead + A_j / load_rate   otherwise
                    (src_j = the "scheduler" vertex if the network has one, else o_j)
    queue(j,s)    = busy(s) + Σ compute(j',s) over jobs j' placed on s earlier this round
    frag(j,s)     = f · ([d idle and slices(d) > 1] + 1 − mem_j / slice_mem(d))

    cost(j,s)     = Σ_t  weight_t · term_t(j,s)
    objective     = Σ_j  w_j · cost(j, s_j),      w_j = 1 + priority_weight · (p_j − min p)

Jobs are served on a slice in round order: priority descending, then smaller FLOPs
first (on one slice, shortest-first minimises the summed waiting), then job id. A job
whose best prediction exceeds its SLO is still placed; its terms carry ``slo_violation``
(seconds over).

Greedy. In round order, each job takes the slice minimising ``cost(j, s)`` given the
queue so far. Numpy over all slices: O(jobs × slices).

CP-SAT. Slices that no job in the batch can tell apart — same device model and shape,
same node site/tier/health/warm set, same busy time — form a class :math:`c` with
:math:`m_c` slices. Each job keeps its ``top_k`` cheapest classes plus the greedy's.
Variables :math:`x_{jc} ∈ \{0,1\}` (exactly one per job), prefix loads :math:`P_{c,i}`
and waits :math:`W_j ≥ 0`. For the jobs :math:`j_1 < j_2 < …` (round order) that have
class :math:`c` as a candidate::

    P_{c,1} = 0,     P_{c,i+1} = P_{c,i} + compute(j_i, c) · x_{j_i c}
    m_c · W_{j_i}  ≥  m_c · busy(c) + P_{c,i}          enforced only if x_{j_i c}

    minimise   Σ_j w_j · ( Σ_c (cost(j,c) − weight_queue · queue) · x_{jc}
                           + weight_queue · W_j )

Shared devices (``_shares``). A seat of a shared device takes one job and only while
the job's reservation fits the device: in the greedy such a seat is a candidate only
when free and :math:`mem_{jd}, milli_{jd}` fit what the round has left there; in CP-SAT
each shared device is a class of its free seats with, over the jobs :math:`J_c` that
have it as a candidate::

    Σ_{j∈J_c} x_{jc} ≤ m_c,   Σ_{j∈J_c} ⌈mem_{jc}⌉_MiB · x_{jc} ≤ ⌊free_mem_c⌋_MiB,
    Σ_{j∈J_c} milli_{jc} · x_{jc} ≤ free_milli_c

and no wait (its jobs run side by side, not in turn). A slice a deployment's replica
holds (``DeviceView.replica_slices``) is no candidate for other jobs than that
deployment's own, in either plan: its class is left out. A job that fits no device now is held back (``Plan.deferred``) until a
reservation ends or a replica is released.

Linear throughout: the queue a job waits behind is the class's prefix load divided
over its slices. For a single slice (:math:`m_c = 1`) that is exact; for
:math:`m_c > 1` it is an upper bound on list scheduling (the least-loaded slice carries
at most the average), which is how the solution is expanded back to concrete slices.
Costs are integers (microseconds × 100 so priority weights keep two decimals); the
greedy assignment is the hint. Both plans are then evaluated by the same exact
simulation, and the cheaper one is returned: CP-SAT is never allowed to make things
worse, and ``Plan.solver`` says which won and why.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from ortools.sat.python import cp_model

from anypu.placement._config import PlacementConfig
from anypu.placement._filters import allowed_devices, explain_unschedulable, unresolvable
from anypu.placement._framework import PlanContext, in_report_order, predicted_seconds
from anypu.placement._model import ClusterSnapshot, JobRequest, Placement, Plan, RunnerUp
from anypu.placement._scores import score_terms
from anypu.placement._shares import fits_now, share_memory, share_milli

__all__ = ["CostStrategy", "plan_cost"]

#: Terms beyond this are clamped inside the CP-SAT model only, so no sum can overflow.
_MAX_MODEL_SECONDS = 1e6
_SCALE = 1e8  # seconds → microseconds × 100
_MIB = 1 << 20


class _Round:
    """The state of one round as jobs are committed in order: slice loads, idle devices,
    the placements made and their weighted objective. Greedy and CP-SAT plans are both
    scored by replaying them through this, so their objectives are comparable."""

    def __init__(self, ctx: PlanContext) -> None:
        t = ctx.table
        self.ctx = ctx
        self.slice_load = t.slice_busy.copy()
        self.dev_idle = t.dev_idle.copy()
        self.placements: list[Placement] = []
        self.slices: list[int] = []
        self.objective = 0.0
        self.any_shared = bool(t.dev_shared.any())
        if self.any_shared:
            self.free_memory = t.dev_free_memory.copy()
            self.free_milli = t.dev_free_milli.copy()
            self.shared_slice = t.dev_shared[t.slice_dev]
            self.seat_taken = self.shared_slice & (t.slice_busy > 0)

    def room(self, memory: np.ndarray, milli: np.ndarray) -> np.ndarray:
        """Per slice: may a job reserving ``memory``/``milli`` (per device) start there
        now? Always on a slice; on a seat of a shared device, when the seat is free and
        the reservation fits what is left."""
        t = self.ctx.table
        fit = fits_now(memory, milli, self.free_memory, self.free_milli)[t.slice_dev]
        ok: np.ndarray = ~self.shared_slice | (fit & ~self.seat_taken)
        return ok

    def share(self, job: JobRequest, d: int, compute: float) -> tuple[int, int]:
        """What ``job`` reserves on device ``d`` (0, 0 unless it is shared)."""
        if not self.any_shared or not self.ctx.table.dev_shared[d]:
            return 0, 0
        idx = np.array([d])
        memory = int(share_memory(job, self.ctx, idx)[0])
        return memory, int(share_milli(job, self.ctx, idx, np.array([compute]))[0])

    def commit(
        self,
        job: JobRequest,
        weight: float,
        s: int,
        scored: dict[str, np.ndarray] | None = None,
        runner_up: RunnerUp | None = None,
    ) -> None:
        """Put ``job`` on slice ``s``. ``scored`` are its term vectors over all devices at
        this very state, when the caller has them; otherwise they are computed for ``s``."""
        t = self.ctx.table
        cfg = self.ctx.config
        d = int(t.slice_dev[s])
        if scored is None:
            raw = score_terms(job, self.ctx, np.array([d]), self.dev_idle)
            terms = {name: float(v[0]) for name, v in raw.items()}
        else:
            terms = {name: float(v[d]) for name, v in scored.items()}
        terms["queue"] = float(self.slice_load[s])
        predicted = predicted_seconds(terms)
        cost = sum(cfg.weight(k) * v for k, v in terms.items())
        if job.slo_seconds is not None and predicted > job.slo_seconds:
            terms["slo_violation"] = predicted - job.slo_seconds
        self.objective += weight * cost
        memory, milli = self.share(job, d, terms.get("compute", 0.0))
        if milli:
            self.free_memory[d] -= memory
            self.free_milli[d] -= milli
            self.seat_taken[s] = True
        self.slice_load[s] += terms.get("compute", 0.0)
        self.dev_idle[d] = False
        self.slices.append(s)
        dv = t.devices[d]
        self.placements.append(
            Placement(
                job_id=job.job_id,
                node_id=dv.node_id,
                device_id=dv.device.device_id,
                slice_index=int(t.slice_pos[s]),
                predicted_seconds=predicted,
                terms=in_report_order(terms),
                runner_up=runner_up,
                memory_bytes=memory,
                milli=milli,
            )
        )

    def runner_up(
        self, total: np.ndarray, s: int, scored: dict[str, np.ndarray]
    ) -> RunnerUp | None:
        """The cheapest slice (by ``total``, the greedy's cost over slices) on a node other
        than slice ``s``'s, with its terms; None when no other node could take the job."""
        t = self.ctx.table
        slice_node = t.dev_node[t.slice_dev]
        elsewhere = np.where(slice_node != slice_node[s], total, np.inf)
        r = int(np.argmin(elsewhere))
        if not np.isfinite(elsewhere[r]):
            return None
        d = int(t.slice_dev[r])
        terms = {name: float(v[d]) for name, v in scored.items()}
        terms["queue"] = float(self.slice_load[r])
        dv = t.devices[d]
        return RunnerUp(
            dv.node_id, dv.device.device_id, predicted_seconds(terms), in_report_order(terms)
        )


def _static_cost(
    job: JobRequest, ctx: PlanContext, allowed: np.ndarray, dev_idle: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Weighted cost of every term but the queue per device (``inf`` where filtered),
    and the term vectors it was summed from."""
    cost = np.zeros(ctx.table.n_devices)
    terms = score_terms(job, ctx, slice(None), dev_idle)
    for term, values in terms.items():
        w = ctx.config.weight(term)
        if w:
            cost += w * values
    cost[~allowed] = np.inf
    return cost, terms


def _compute(terms: dict[str, np.ndarray], ctx: PlanContext) -> np.ndarray:
    """The compute term over all devices: what later jobs on a slice wait behind."""
    return terms.get("compute", np.zeros(ctx.table.n_devices))


@dataclass
class _Classes:
    """Interchangeable slices: ``of_slice[s]`` is the class, ``members[c]`` its slices."""

    of_slice: np.ndarray
    members: list[np.ndarray]
    rep_dev: np.ndarray
    busy: np.ndarray
    holder: np.ndarray  # per class: ``DeviceTable.slice_holder`` of its slices


def _classes(ctx: PlanContext, jobs: Sequence[JobRequest]) -> _Classes:
    t = ctx.table
    digests = {j.artifact_digest for j in jobs}
    named = {n for j in jobs for n in j.nodes}
    node_keys: dict[tuple[object, ...], int] = {}
    node_class = np.empty(len(t.nodes), dtype=np.int64)
    for i, n in enumerate(t.nodes):
        # Only what a filter or score can see; the node id only when a job names it.
        key = (
            n.site,
            n.tier,
            n.healthy,
            frozenset(n.warm_digests & digests),
            n.node_id if n.node_id in named else None,
        )
        node_class[i] = node_keys.setdefault(key, len(node_keys))
    dev_cols = np.column_stack(
        [
            node_class[t.dev_node],
            t.dev_kind,
            t.dev_model,
            t.dev_slice_tflops,
            t.dev_slice_memory,
            t.dev_slices,
            t.dev_idle,
            # A shared device's room is its own: it is a class by itself.
            np.where(t.dev_shared, np.arange(t.n_devices), -1),
        ]
    ).astype(float)
    _, dev_class = np.unique(dev_cols, axis=0, return_inverse=True)
    slice_cols = np.column_stack([dev_class.ravel()[t.slice_dev], t.slice_busy, t.slice_holder])
    _, first, of_slice = np.unique(slice_cols, axis=0, return_index=True, return_inverse=True)
    of_slice = of_slice.ravel()
    order = np.argsort(of_slice, kind="stable")
    bounds = np.searchsorted(of_slice[order], np.arange(len(first) + 1))
    members = [order[bounds[c] : bounds[c + 1]] for c in range(len(first))]
    return _Classes(
        of_slice, members, t.slice_dev[first], t.slice_busy[first], t.slice_holder[first]
    )


@dataclass
class _Candidates:
    classes: list[int]
    cost: list[int]  # weighted, non-queue cost × _SCALE, already × w_j
    work: list[int]  # compute seconds in microseconds: what later jobs wait behind
    memory_mib: list[int]  # what the job reserves there, when the class is a shared device
    milli: list[int]


def _greedy(
    ctx: PlanContext,
    order: Sequence[JobRequest],
    allowed: dict[str, np.ndarray],
    weights: dict[str, float],
    classes: _Classes | None,
) -> tuple[_Round, list[_Candidates], list[str]]:
    """The greedy plan; with ``classes``, also each placed job's CP-SAT candidates; and
    the jobs held back, which fit no shared device now and may go nowhere else."""
    t = ctx.table
    wq = ctx.config.weight("queue")
    state = _Round(ctx)
    candidates: list[_Candidates] = []
    held: list[str] = []
    for job in order:
        static, terms = _static_cost(job, ctx, allowed[job.job_id], state.dev_idle)
        total = static[t.slice_dev] + wq * state.slice_load
        share: tuple[np.ndarray, np.ndarray] | None = None
        if state.any_shared:
            compute = _compute(terms, ctx)
            share = (
                share_memory(job, ctx, slice(None)),
                share_milli(job, ctx, slice(None), compute),
            )
            total[~state.room(*share)] = np.inf
        closed = t.held_from(job)
        if closed is not None:
            total[closed] = np.inf
        s = int(np.argmin(total))
        if not np.isfinite(total[s]):
            held.append(job.job_id)
            continue
        if classes is not None and len(candidates) < ctx.config.cpsat_max_jobs:
            candidates.append(
                _candidates_for(
                    job, ctx, static, _compute(terms, ctx), weights[job.job_id], classes, s, share
                )
            )
        state.commit(job, weights[job.job_id], s, terms, state.runner_up(total, s, terms))
    return state, candidates, held


def _candidates_for(
    job: JobRequest,
    ctx: PlanContext,
    static: np.ndarray,
    compute: np.ndarray,
    weight: float,
    classes: _Classes,
    greedy_slice: int,
    share: tuple[np.ndarray, np.ndarray] | None,
) -> _Candidates:
    """The job's ``top_k`` cheapest classes (by cost plus busy time) and the greedy's;
    never one of slices another deployment's replicas hold.

    Costs are read off the greedy pass's vectors, i.e. as the job saw the round when its
    turn came; only the packing tie-breaker can differ from the start of the round. A
    shared device is a candidate only with a free seat and room for the job at the
    start of the round (``share``: its reservation per device).
    """
    t = ctx.table
    wq = ctx.config.weight("queue")
    class_cost = static[classes.rep_dev] + wq * classes.busy
    if t.holders:
        own = t.holders.get(job.deployment, -1) if job.deployment else -1
        class_cost[(classes.holder >= 0) & (classes.holder != own)] = np.inf
    memory = milli = np.zeros(len(classes.rep_dev))
    if share is not None:
        memory, milli = share[0][classes.rep_dev], share[1][classes.rep_dev]
        rep = classes.rep_dev
        open_seat = classes.busy <= 0
        fit = fits_now(memory, milli, t.dev_free_memory[rep], t.dev_free_milli[rep])
        class_cost = np.where(~t.dev_shared[rep] | (open_seat & fit), class_cost, np.inf)
    k = min(ctx.config.top_k, len(class_cost))
    top = np.argpartition(class_cost, k - 1)[:k] if k < len(class_cost) else np.arange(k)
    picked = sorted(
        {int(c) for c in top if np.isfinite(class_cost[c])} | {int(classes.of_slice[greedy_slice])}
    )
    reps = classes.rep_dev[picked]
    cost = np.minimum(static[reps], _MAX_MODEL_SECONDS)
    work = np.minimum(compute[reps], _MAX_MODEL_SECONDS)
    return _Candidates(
        picked,
        [round(weight * c * _SCALE) for c in cost],
        [round(w * 1e6) for w in work],
        [-(-int(memory[c]) // _MIB) for c in picked],
        [int(milli[c]) for c in picked],
    )


def _cpsat(
    ctx: PlanContext,
    order: Sequence[JobRequest],
    weights: dict[str, float],
    classes: _Classes,
    candidates: list[_Candidates],
    greedy: _Round,
) -> tuple[str, list[int] | None]:
    """Solve the linear model in the docstring; returns (status name, class per job)."""
    cfg = ctx.config
    wq = cfg.weight("queue")
    model = cp_model.CpModel()
    greedy_class = [int(classes.of_slice[s]) for s in greedy.slices[: len(candidates)]]
    xs: list[list[cp_model.IntVar]] = []
    for j, cand in enumerate(candidates):
        row = [model.new_bool_var(f"x{j}_{c}") for c in cand.classes]
        model.add_exactly_one(row)
        for c, var in zip(cand.classes, row, strict=True):
            model.add_hint(var, c == greedy_class[j])
        xs.append(row)
    objective: list[cp_model.LinearExprT] = [
        cost * var
        for cand, row in zip(candidates, xs, strict=True)
        for cost, var in zip(cand.cost, row, strict=True)
    ]
    t = ctx.table
    shared_class = t.dev_shared[classes.rep_dev]
    seats: dict[int, list[tuple[int, int]]] = {}
    for j, cand in enumerate(candidates):
        for pos, c in enumerate(cand.classes):
            if shared_class[c]:
                seats.setdefault(c, []).append((j, pos))
    for c, entries in seats.items():
        rep = int(classes.rep_dev[c])
        row = [xs[j][pos] for j, pos in entries]
        model.add(sum(row) <= len(classes.members[c]))
        free_mib = int(min(t.dev_free_memory[rep], 2**50) // _MIB)
        model.add(sum(candidates[j].memory_mib[p] * xs[j][p] for j, p in entries) <= free_mib)
        milli_left = int(t.dev_free_milli[rep])
        model.add(sum(candidates[j].milli[p] * xs[j][p] for j, p in entries) <= milli_left)
    if wq > 0:
        busy_us = np.round(np.minimum(classes.busy, _MAX_MODEL_SECONDS) * 1e6).astype(np.int64)
        total_work = sum(max(c.work) for c in candidates)
        bound = int(busy_us.max(initial=0)) + total_work
        waits = [model.new_int_var(0, bound, f"w{j}") for j in range(len(candidates))]
        wait_hint = [0] * len(candidates)
        by_class: dict[int, list[tuple[int, int]]] = {}
        for j, cand in enumerate(candidates):
            for pos, c in enumerate(cand.classes):
                if not shared_class[c]:  # a shared device's jobs run side by side
                    by_class.setdefault(c, []).append((j, pos))
        for c, entries in by_class.items():
            m, busy = len(classes.members[c]), int(busy_us[c])
            prefix: cp_model.LinearExpr | int = 0  # 0, then the previous prefix variable
            prefix_value, prefix_bound = 0, 0
            for i, (j, pos) in enumerate(entries):
                x = xs[j][pos]
                model.add(m * waits[j] >= m * busy + prefix).only_enforce_if(x)
                if greedy_class[j] == c:
                    wait_hint[j] = -(-(m * busy + prefix_value) // m)
                if i + 1 < len(entries):
                    work = candidates[j].work[pos]
                    prefix_bound += work
                    nxt = model.new_int_var(0, prefix_bound, f"p{c}_{i + 1}")
                    model.add(nxt == prefix + work * x)
                    prefix_value += work if greedy_class[j] == c else 0
                    model.add_hint(nxt, prefix_value)
                    prefix = nxt
        for j, (wait, hint) in enumerate(zip(waits, wait_hint, strict=True)):
            model.add_hint(wait, hint)
            coef = round(weights[order[j].job_id] * wq * _SCALE / 1e6)
            objective.append(coef * wait)
    model.minimize(sum(objective))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = cfg.time_limit_s
    solver.parameters.num_workers = cfg.num_workers
    solver.parameters.random_seed = cfg.seed
    status = solver.solve(model)
    name = solver.status_name(status)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return name, None
    chosen = []
    for cand, row in zip(candidates, xs, strict=True):
        chosen.append(
            next(c for c, var in zip(cand.classes, row, strict=True) if solver.boolean_value(var))
        )
    return name, chosen


def _expand(
    ctx: PlanContext,
    order: Sequence[JobRequest],
    weights: dict[str, float],
    classes: _Classes,
    chosen: list[int],
) -> _Round | None:
    """Turn class choices into slices: each job, in order, takes its class's least-loaded
    slice (list scheduling, which is what the model's fluid wait bounds), or a free seat
    of a shared device. None if a reservation would not fit (the model rounds memory to
    MiB against it, so it should not happen; the greedy plan is kept if it does)."""
    state = _Round(ctx)
    for job, c in zip(order, chosen, strict=True):
        members = classes.members[c]
        load = state.slice_load[members]
        if state.any_shared:
            load = np.where(state.seat_taken[members], np.inf, load)
        s = int(members[np.argmin(load)])
        if not np.isfinite(load.min()):
            return None  # more jobs than free seats
        state.commit(job, weights[job.job_id], s)
        d = int(ctx.table.slice_dev[s])
        if state.any_shared and (state.free_memory[d] < 0 or state.free_milli[d] < 0):
            return None
    return state


def _runners_up_from(greedy: _Round, chosen: _Round) -> None:
    """Give CP-SAT's placements runners-up as the greedy pass saw them: the greedy's own
    choice when it was on another node, else the greedy's runner-up."""
    by_job = {p.job_id: p for p in greedy.placements}
    for i, p in enumerate(chosen.placements):
        g = by_job[p.job_id]
        runner_up = g.runner_up
        if g.node_id != p.node_id:
            runner_up = RunnerUp(g.node_id, g.device_id, g.predicted_seconds, g.terms)
        chosen.placements[i] = replace(p, runner_up=runner_up)


def _round_order(jobs: Sequence[JobRequest]) -> list[JobRequest]:
    return sorted(jobs, key=lambda j: (-j.priority, j.flops, j.memory_bytes, j.job_id))


def plan_cost(
    snapshot: ClusterSnapshot, jobs: Sequence[JobRequest], config: PlacementConfig
) -> Plan:
    """Place ``jobs`` on the slices of ``snapshot`` by the cost model. Pure: no I/O, no
    clock but timing.

    A job no device can take appears in ``Plan.unschedulable`` with every node's reason;
    it is never an exception. ``Plan.solver`` is ``single`` (one job, greedy only),
    ``greedy`` (CP-SAT disabled), ``cp-sat:OPTIMAL``/``cp-sat:FEASIBLE`` (CP-SAT's plan
    won) or ``greedy (cp-sat …)`` saying why the greedy plan was kept.
    """
    started = time.perf_counter()
    ctx = PlanContext(snapshot, config)
    allowed: dict[str, np.ndarray] = {}
    unschedulable: dict[str, dict[str, str]] = {}
    stuck: list[str] = []
    for job in jobs:
        ok = allowed_devices(job, ctx)
        if ok.any():
            allowed[job.job_id] = ok
        else:
            unschedulable[job.job_id] = explain_unschedulable(job, ctx)
            if unresolvable(job, ctx):
                stuck.append(job.job_id)
    order = _round_order([j for j in jobs if j.job_id in allowed])
    lowest = min((j.priority for j in order), default=0)
    weights = {j.job_id: 1.0 + config.priority_weight * (j.priority - lowest) for j in order}

    use_cpsat = config.use_cpsat and len(order) > 1
    classes = _classes(ctx, order) if use_cpsat else None
    greedy, candidates, held = _greedy(ctx, order, allowed, weights, classes)
    if held:
        order = [j for j in order if j.job_id not in set(held)]
    best, solver = greedy, ("single" if len(jobs) == 1 else "greedy")
    if classes is not None and len(order) > 1:
        status, chosen = _cpsat(ctx, order, weights, classes, candidates, greedy)
        greedy_classes = [int(classes.of_slice[s]) for s in greedy.slices]
        if chosen is None:
            solver = f"greedy (cp-sat {status} within {config.time_limit_s:g} s)"
        elif chosen == greedy_classes[: len(chosen)]:
            solver = f"greedy (cp-sat {status}, same plan)"
        else:
            # Jobs beyond the model's window keep the greedy's classes.
            chosen = chosen + greedy_classes[len(chosen) :]
            exact = _expand(ctx, order, weights, classes, chosen)
            if exact is None:
                solver = f"greedy (cp-sat {status}, a reservation did not fit)"
            elif exact.objective < greedy.objective - 1e-9 * max(1.0, abs(greedy.objective)):
                best, solver = exact, f"cp-sat:{status}"
                _runners_up_from(greedy, best)
            else:
                solver = f"greedy (cp-sat {status}, no better)"
    return Plan(
        placements=tuple(best.placements),
        unschedulable=unschedulable,
        unresolvable=frozenset(stuck),
        deferred=tuple(held),
        solver=solver + (f"; {len(held)} held back until a slice or share frees" if held else ""),
        solve_seconds=time.perf_counter() - started,
        objective=best.objective,
    )


class CostStrategy:
    """The cost model: predicted seconds of compute, transfer, warm-up and queueing,
    greedy with CP-SAT over it (the module docstring)."""

    name = "cost"

    def plan(
        self, snapshot: ClusterSnapshot, jobs: Sequence[JobRequest], config: PlacementConfig
    ) -> Plan:
        return plan_cost(snapshot, jobs, config)
