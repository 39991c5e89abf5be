"""The GPU-sharing policies of ``placement.gpushare`` placing live jobs.

``PlacementConfig.policy`` names who places a round: ``cost`` (``_solver``: the objective
in seconds, CP-SAT) or one of ``gpushare``'s online policies (``random``, ``dotprod``,
``clustering``, ``packing``, ``bestfit``, ``fgd``, ``anypu``, ``anypu-ss``) — the very classes the openb
trace replay runs, called through :func:`make_policy` and :meth:`Policy.choose`. This module
translates a live snapshot into their cluster model and their choices back into slices.

The mapping (decided for issue 3):

- **Accelerators are GPUs.** Every device whose kind is not ``cpu`` (gpu, npu, tpu, xpu,
  mps, …) is one gpushare GPU of 1000 milli; its GPU model is the device's model name.
  A device cut into ``s`` slices offers slices of ``1000 // s`` milli (at most 1000 slices
  are modelled); the remainder ``1000 mod s`` goes with its last slice, so a device whose
  slices are all taken has no milli left. A slice with work on it (busy time > 0) is taken.
- **Nodes.** gpushare nodes hold up to 8 GPUs of one model, and a policy picks a node and
  then *any* GPU there with room. So a live node becomes one gpushare node per group of
  identical accelerators — same kind, model, memory, throughput and slicing — in chunks
  of 8. Every filter then says the same of all GPUs of a gpushare node, and a GPU the
  policy picks is always one the job may use and a slice of the size it was asked for.
  Each group carries the live node's host: CPU milli = 1000 × Σ slices × threads of its
  CPU devices, memory = Σ their MiB, less what busy CPU slices hold.
- **Requests.** A job the filters allow on accelerator ``d`` asks
  ``Request(cpu=0, mem=0, num=1, milli=1000 // slices(d))``: one slice, and no host CPU or
  memory, because the live scheduler reserves none for an accelerator job (its worker is
  per slice). The host's free CPU and memory still shape how full a node looks to
  ``dotprod`` and ``bestfit``.
- **The smallest slice that holds the job.** Candidates are grouped by slice size; the
  policy chooses (:meth:`Policy.choose`, with the live filters as its ``allowed`` mask)
  within the group of the smallest slices that have one free, and a larger size is
  tried only when none does — as MIG-aware schedulers pick the smallest profile that
  fits. (Comparing the policies' own scores across sizes, as before, let ``fgd`` and
  ``anypu``, which like a GPU filled to the brim, put 3 GiB jobs on whole 40 GiB GPUs:
  39–41 % of the memory used at saturation against 77 % now;
  ``benchmarks.placement_quality_live``.)
- **Held back, as the trace model holds a pod.** A job that may run only on accelerators
  and whose every allowed slice is taken is not queued behind another job: it stays
  pending (``Plan.deferred``: it fits, but not this round), and the next round, which a
  finishing job triggers, places it on the slice that freed — as Kubernetes keeps a pod
  pending until a GPU share is free.
- **What stays with the cost model.** Jobs the filters allow only on CPU devices, jobs no
  device can take (their per-node reasons are ``plan``'s, unchanged) and jobs that may
  also run on a CPU device but find every accelerator slice taken go through ``plan``
  with ``policy="cost"``, on the snapshot with this round's policy placements added.
  ``Plan.solver`` is ``policy:NAME``, with a note of how many jobs the cost model placed
  and how many were held back.
- **Typical workload.** ``fgd`` and ``anypu`` plan for a distribution of typical pods.
  It is built with ``gpushare.typical_pods`` from ``ClusterSnapshot.workload``: the
  shapes of the last :data:`WORKLOAD_WINDOW` jobs the scheduler placed
  (:func:`workload_shape`: one slice of the device each took; CPU-only jobs count as the
  share of pods that can use no GPU). Before any accelerator job was placed it assumes
  the workload fills the accelerators as they are sliced: one pod per slice.

Every placement carries the cost model's terms (compute, transfer, warm, queue,
fragmentation, and ``slo_violation``), so predicted seconds mean what they mean under
``cost``; only the choice of device differs.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from anypu.devices import Device
from anypu.placement._config import PlacementConfig
from anypu.placement._filters import allowed_devices
from anypu.placement._framework import (
    ClusterTable,
    PlanContext,
    in_report_order,
    predicted_seconds,
)
from anypu.placement._model import (
    ClusterSnapshot,
    JobRequest,
    Placement,
    Plan,
    WorkloadShape,
)
from anypu.placement._scores import score_terms
from anypu.placement._shares import share_memory, share_milli
from anypu.placement._solver import plan_cost
from anypu.placement.gpushare._cluster import MAX_GPUS, MILLI, ClusterState, NodeTable, PodTable
from anypu.placement.gpushare._frag import TypicalPods, typical_pods
from anypu.placement.gpushare._policies import Policy, Request, make_policy

__all__ = [
    "WORKLOAD_WINDOW",
    "LiveCluster",
    "TracePolicyStrategy",
    "plan_with_policy",
    "slice_milli",
    "typical_workload",
    "workload_shape",
]

#: How many recent placements the typical workload is estimated from: enough for the
#: shape frequencies to settle, recent enough to follow a change of workload.
WORKLOAD_WINDOW = 1000

_MIB = 2**20


def slice_milli(device: Device) -> int:
    """GPU milli of one slice of an accelerator (at most 1000 slices are modelled)."""
    return MILLI // min(max(1, device.slices), MILLI)


def workload_shape(device: Device, milli: int = 0) -> WorkloadShape:
    """What a job placed on ``device`` took, in gpushare units: one slice of an
    accelerator (``milli``, its reservation, on a shared one) and no host resources, or
    one CPU slice's threads and memory."""
    if device.kind == "cpu":
        return WorkloadShape(device.threads * MILLI, device.slice_memory_bytes // _MIB, 0, 0)
    return WorkloadShape(0, 0, 1, milli if device.shared else slice_milli(device))


class LiveCluster:
    """A live snapshot as a gpushare ``ClusterState`` (see the module docstring).

    ``devs[n]`` are the table indices of gpushare node ``n``'s GPUs in slot order;
    ``milli[n]`` is the slice size there. ``state`` starts at the snapshot's occupancy and
    follows this round's placements through :meth:`take`.
    """

    def __init__(self, ctx: PlanContext) -> None:
        t = ctx.table
        self.ctx = ctx
        shape = t.layout.memo("live-policy", lambda: _LiveShape(t))
        n_dev = t.n_devices
        self.accelerator = shape.accelerator
        taken = t.slice_busy > 0.0
        busy = np.bincount(t.slice_dev[taken], minlength=n_dev)
        self._first_slice = shape.first_slice
        self._taken = taken.copy()
        is_cpu = ~shape.accelerator
        node = t.dev_node[is_cpu]

        def per_node(values: np.ndarray) -> np.ndarray:
            return np.bincount(node, weights=values[is_cpu], minlength=len(t.nodes)).astype(
                np.int64
            )

        cpu_left = shape.host_cpu - per_node(busy * shape.threads * MILLI)
        mem_left = shape.host_mem - per_node(busy * np.floor(t.dev_slice_memory / _MIB))
        self.devs = shape.devs
        self.nodes = shape.nodes
        self.dev_node, self.dev_slot = shape.dev_node, shape.dev_slot
        slices = self.slices = shape.slices
        self.dev_milli, self.remainder, self.milli = shape.dev_milli, shape.remainder, shape.milli
        self.free = slices - np.minimum(busy, slices)  # modelled free slices per device
        live_node = shape.live_node

        # A fresh state set to the snapshot's occupancy before any cache has read it.
        state = ClusterState(self.nodes)
        state.cpu_left = cpu_left[live_node]
        state.mem_left = mem_left[live_node]
        acc = np.flatnonzero(self.accelerator)
        used_slices = slices[acc] - self.free[acc]
        used = used_slices * self.dev_milli[acc] + np.where(
            self.free[acc] == 0, self.remainder[acc], 0
        )
        # A shared device has what its reservations leave (less where its reading shows
        # memory no reservation explains), and nothing once every seat is taken.
        self.shared = t.dev_shared
        with np.errstate(divide="ignore", invalid="ignore"):
            by_memory = np.floor(MILLI * t.dev_free_memory / t.dev_memory)
        room = np.minimum(t.dev_free_milli, np.nan_to_num(by_memory, posinf=MILLI)).astype(np.int64)
        room = np.where(self.free > 0, np.clip(room, 0, MILLI), 0)
        used = np.where(self.shared[acc], MILLI - room[acc], used)
        state.gpu_left[self.dev_node[acc], self.dev_slot[acc]] -= used
        # GPU-clustering counts pods by kind: a slice of a shared GPU is a sharing pod,
        # a whole device a 1-GPU pod.
        kind = np.where(self.dev_milli[acc] < MILLI, 0, 1)
        np.add.at(state.tags, (self.dev_node[acc], kind), used_slices)
        state.allocated_milli = int(used.sum())
        self.state = state

    def default_workload(self) -> np.ndarray:
        """Shape rows (as in :class:`WorkloadShape`) of one pod per modelled slice of every
        accelerator: the workload assumed before any accelerator job was placed. Counts
        are divided by their common divisor, which keeps the frequencies and the table
        small (a uniform cluster is one row)."""
        acc = np.flatnonzero(self.accelerator)
        milli, inverse = np.unique(self.dev_milli[acc], return_inverse=True)
        pods = np.bincount(inverse.ravel(), weights=self.slices[acc]).astype(np.int64)
        pods //= np.gcd.reduce(pods)
        rows = np.zeros((int(pods.sum()), 4), dtype=np.int64)
        rows[:, 2] = 1
        rows[:, 3] = np.repeat(milli, pods)
        return rows

    def allowed_nodes(self, allowed_dev: NDArray[np.bool_]) -> NDArray[np.bool_]:
        """gpushare nodes all of whose GPUs pass the job's filters (by construction a
        filter says the same of all of them; requiring all keeps any exception out)."""
        acc = allowed_dev & self.accelerator
        hits = np.bincount(self.dev_node[acc], minlength=len(self.devs))
        all_pass: NDArray[np.bool_] = hits == self.nodes.gpus
        return all_pass

    def choose(
        self,
        policy: Policy,
        allowed_dev: NDArray[np.bool_],
        rng: np.random.Generator,
        share: NDArray[np.int64] | None = None,
    ) -> int | None:
        """The accelerator (table index) ``policy`` puts the job on, or ``None`` when no
        allowed accelerator has room. ``share[d]``: the job's milli on shared device ``d``
        (``_shares``), what the policy is asked to place there."""
        nodes = self.allowed_nodes(allowed_dev)
        asked = self.milli
        if share is not None and self.shared.any():
            first = np.fromiter((g[0] for g in self.devs), np.int64, len(self.devs))
            asked = np.where(self.shared[first], share[first], self.milli)
        # The smallest slice (or share) that holds the job, as a MIG-aware scheduler picks
        # the smallest profile: the policy places it among the devices offering that size.
        # Comparing the policies' scores across sizes let fgd and anypu, which like a GPU
        # filled to the brim, put a 3 GiB job on a whole 40 GiB GPU
        # (benchmarks.placement_quality_live).
        for milli in np.unique(asked[nodes]).tolist():  # smallest first
            req = Request(cpu=0, mem=0, num=1, milli=int(milli))
            choice = policy.choose(self.state, req, rng, allowed=nodes & (asked == milli))
            if choice is not None:
                return int(self.devs[choice.node][choice.gpus[0]])
        return None

    def take(self, d: int, share: int = 0) -> int:
        """Bind one slice of accelerator ``d`` (a seat and ``share`` milli of a shared
        one) in the policy's state; its slice index."""
        t = self.ctx.table
        start = int(self._first_slice[d])
        pos = int(np.argmin(self._taken[start : start + int(t.dev_slices[d])]))
        # The policy picks only a GPU with a slice's milli left, which a device has only
        # while one of its slices (seats) is free (the remainder goes with the last one).
        assert not self._taken[start + pos], f"no free slice on device {d}"
        self._taken[start + pos] = True
        self.free[d] -= 1
        if self.shared[d]:
            node, slot = int(self.dev_node[d]), int(self.dev_slot[d])
            left = int(self.state.gpu_left[node, slot])
            milli = share if self.free[d] > 0 else left  # no seat left: no room left
        else:
            milli = int(self.dev_milli[d]) + (int(self.remainder[d]) if self.free[d] == 0 else 0)
        self.state.bind(int(self.dev_node[d]), (int(self.dev_slot[d]),), 0, 0, milli)
        return pos


class _LiveShape:
    """What of a ``LiveCluster`` depends on the devices alone, not on the work on them:
    built once per layout (``_Layout.memo``), as the table's own layout columns are."""

    def __init__(self, t: ClusterTable) -> None:
        n_dev = t.n_devices
        is_cpu = np.array([k == "cpu" for k in t.kinds], dtype=bool)[t.dev_kind]
        self.accelerator: NDArray[np.bool_] = ~is_cpu
        self.first_slice = np.cumsum(t.dev_slices) - t.dev_slices
        devices = t.layout.device_objects
        # The host of each live node, from its CPU devices.
        self.threads = np.fromiter((d.threads for d in devices), np.int64, n_dev)
        memory_mib = np.fromiter((d.memory_bytes // _MIB for d in devices), float, n_dev)
        node = t.dev_node[is_cpu]

        def per_node(values: np.ndarray) -> np.ndarray:
            return np.bincount(node, weights=values[is_cpu], minlength=len(t.nodes)).astype(
                np.int64
            )

        self.host_cpu = per_node(t.dev_slices * self.threads * MILLI)
        self.host_mem = per_node(memory_mib)
        # Identical accelerators of one live node, 8 to a gpushare node.
        groups: dict[tuple[object, ...], list[int]] = {}
        for d in np.flatnonzero(self.accelerator).tolist():
            dev = devices[d]
            key = (int(t.dev_node[d]), dev.kind, dev.model, dev.memory_bytes, dev.tflops)
            groups.setdefault((*key, int(t.dev_slices[d]), dev.shared), []).append(d)
        self.devs: list[np.ndarray] = [
            np.asarray(members[i : i + MAX_GPUS], dtype=np.int64)
            for members in groups.values()
            for i in range(0, len(members), MAX_GPUS)
        ]
        models = tuple(sorted({devices[int(g[0])].model for g in self.devs}))
        model_index = {name: i for i, name in enumerate(models)}
        self.live_node = np.fromiter(
            (t.dev_node[g[0]] for g in self.devs), np.int64, len(self.devs)
        )
        self.nodes = NodeTable(
            names=tuple(
                f"{t.nodes[int(n)].node_id}/{devices[int(g[0])].device_id}"
                for n, g in zip(self.live_node, self.devs, strict=True)
            ),
            cpu=self.host_cpu[self.live_node],
            mem=self.host_mem[self.live_node],
            gpus=np.fromiter((len(g) for g in self.devs), np.int64, len(self.devs)),
            model=np.fromiter(
                (model_index[devices[int(g[0])].model] for g in self.devs),
                np.int64,
                len(self.devs),
            ),
            models=models,
        )
        self.dev_node = np.full(n_dev, -1, dtype=np.int64)
        self.dev_slot = np.full(n_dev, -1, dtype=np.int64)
        for n, g in enumerate(self.devs):
            self.dev_node[g] = n
            self.dev_slot[g] = np.arange(len(g))
        self.slices = np.minimum(t.dev_slices, MILLI)  # modelled slices per device
        self.dev_milli = MILLI // self.slices
        self.remainder = MILLI - self.slices * self.dev_milli
        self.milli = np.fromiter(
            (self.dev_milli[g[0]] for g in self.devs), np.int64, len(self.devs)
        )
        for array in (*vars(self).values(), *self.devs):
            if isinstance(array, np.ndarray):
                array.flags.writeable = False  # shared by every round of this layout


def typical_workload(workload: Sequence[WorkloadShape], live: LiveCluster) -> TypicalPods:
    """``gpushare.typical_pods`` of the recent placements, or of the default workload
    while none of them used an accelerator."""
    if any(s.gpus for s in workload):
        # fromiter over the flattened shapes: asarray of a thousand tuples takes ~1 ms.
        flat = itertools.chain.from_iterable(workload)
        cols = np.fromiter(flat, np.int64, 4 * len(workload)).reshape(-1, 4)
    else:
        cols = live.default_workload()
    pods = PodTable(
        names=("",) * len(cols),
        cpu=cols[:, 0],
        mem=cols[:, 1],
        num_gpu=cols[:, 2],
        gpu_milli=cols[:, 3],
        spec=np.zeros(len(cols), dtype=np.int64),  # live jobs never name a GPU model
    )
    return typical_pods(pods)


def _with_work(
    snapshot: ClusterSnapshot,
    ctx: PlanContext,
    work: Sequence[tuple[int, int, float, int, int]],
) -> ClusterSnapshot:
    """``snapshot`` with ``(device, slice, seconds, memory, milli)`` of work added, so the
    cost model queues later jobs behind this round's policy placements and counts their
    reservations on shared devices."""
    if not work:
        return snapshot
    t = ctx.table
    added: dict[int, dict[int, float]] = {}
    reserved: dict[int, tuple[int, int]] = {}
    for d, pos, seconds, memory, milli in work:
        added.setdefault(d, {})
        added[d][pos] = added[d].get(pos, 0.0) + seconds
        before = reserved.get(d, (0, 0))
        reserved[d] = (before[0] + memory, before[1] + milli)
    nodes = list(snapshot.nodes)
    first_dev = np.searchsorted(t.dev_node, np.arange(len(nodes)))
    first_slice = np.cumsum(t.dev_slices) - t.dev_slices
    for d, extra in added.items():
        n = int(t.dev_node[d])
        view = nodes[n].devices[d - int(first_dev[n])]
        start = int(first_slice[d])
        busy = t.slice_busy[start : start + int(t.dev_slices[d])].tolist()
        for pos, seconds in extra.items():
            busy[pos] += seconds
        views = list(nodes[n].devices)
        views[d - int(first_dev[n])] = dataclasses.replace(
            view,
            slice_busy_seconds=tuple(busy),
            reserved_memory_bytes=view.reserved_memory_bytes + reserved[d][0],
            reserved_milli=view.reserved_milli + reserved[d][1],
        )
        nodes[n] = dataclasses.replace(nodes[n], devices=tuple(views))
    return dataclasses.replace(snapshot, nodes=tuple(nodes))


def plan_with_policy(
    snapshot: ClusterSnapshot, jobs: Sequence[JobRequest], config: PlacementConfig, name: str
) -> Plan:
    """A round placed by GPU-sharing policy ``name`` (see the module docstring).

    Jobs are served highest priority first, then in the order given (the scheduler passes
    them in submission order), each on the slice its policy picks given the ones before.
    """
    started = time.perf_counter()
    ctx = PlanContext(snapshot, config)
    t = ctx.table
    accelerator = np.array([k != "cpu" for k in t.kinds], dtype=bool)[t.dev_kind]
    mine: list[tuple[JobRequest, np.ndarray]] = []
    rest: list[JobRequest] = []
    held: list[str] = []
    cpu_only = 0
    for job in jobs:
        ok = allowed_devices(job, ctx)
        if (ok & accelerator).any():
            mine.append((job, ok))
        else:
            rest.append(job)  # CPU only, or unschedulable: the cost model says why
            cpu_only += bool(ok.any())
    placements: list[Placement] = []
    work: list[tuple[int, int, float, int, int]] = []
    objective = 0.0
    if mine:
        live = LiveCluster(ctx)
        policy = make_policy(name, typical_workload(snapshot.workload, live))
        rng = np.random.default_rng(config.seed)
        lowest = min(j.priority for j in jobs)
        dev_idle = t.dev_idle.copy()
        for job, ok in sorted(mine, key=lambda item: -item[0].priority):
            terms = score_terms(job, ctx, slice(None), dev_idle)
            share = memory = None
            if live.shared.any():
                compute = terms.get("compute", np.zeros(t.n_devices))
                share = share_milli(job, ctx, slice(None), compute)
                memory = share_memory(job, ctx, slice(None))
            d = live.choose(policy, ok, rng, share)
            if d is None:  # every allowed accelerator slice (or share) is taken
                if (ok & ~accelerator).any():
                    rest.append(job)  # a CPU device may take it: the cost model decides
                else:
                    held.append(job.job_id)
                continue
            reserved = (0, 0)
            if share is not None and memory is not None and live.shared[d]:
                reserved = (int(memory[d]), int(share[d]))
            pos = live.take(d, reserved[1])
            # A free slice: nothing to wait behind.
            chosen = {k: float(v[d]) for k, v in terms.items()} | {"queue": 0.0}
            predicted = predicted_seconds(chosen)
            weight = 1.0 + config.priority_weight * (job.priority - lowest)
            objective += weight * sum(config.weight(k) * v for k, v in chosen.items())
            if job.slo_seconds is not None and predicted > job.slo_seconds:
                chosen["slo_violation"] = predicted - job.slo_seconds
            dev_idle[d] = False
            dv = t.devices[d]
            placements.append(
                Placement(
                    job_id=job.job_id,
                    node_id=dv.node_id,
                    device_id=dv.device.device_id,
                    slice_index=pos,
                    predicted_seconds=predicted,
                    terms=in_report_order(chosen),
                    memory_bytes=reserved[0],
                    milli=reserved[1],
                )
            )
            work.append((d, pos, predicted, *reserved))
    solver = f"policy:{name}"
    unschedulable: dict[str, dict[str, str]] = {}
    unresolvable: frozenset[str] = frozenset()
    deferred: tuple[str, ...] = tuple(held)
    if held:
        solver += f"; {len(held)} held back until a slice frees"
    if rest:
        fallback = plan_cost(_with_work(snapshot, ctx, work), rest, config)
        placements.extend(fallback.placements)
        unschedulable, deferred = fallback.unschedulable, deferred + fallback.deferred
        unresolvable = fallback.unresolvable
        objective += fallback.objective
        if fallback.placements:
            queued = len(fallback.placements) - cpu_only
            solver += (
                f"; cost ({fallback.solver}) placed {len(fallback.placements)}: "
                f"{cpu_only} cpu-only, {queued} with every accelerator slice taken"
                " (CPU allowed too)"
            )
    return Plan(
        placements=tuple(placements),
        unschedulable=unschedulable,
        unresolvable=unresolvable,
        deferred=deferred,
        solver=solver,
        solve_seconds=time.perf_counter() - started,
        objective=objective,
    )


class TracePolicyStrategy:
    """A GPU-sharing policy of ``placement.gpushare`` (``fgd``, ``anypu-ss``, …) placing the
    accelerator jobs of a round, the cost model the rest (the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def plan(
        self, snapshot: ClusterSnapshot, jobs: Sequence[JobRequest], config: PlacementConfig
    ) -> Plan:
        return plan_with_policy(snapshot, jobs, config, self.name)
