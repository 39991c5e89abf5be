"""``anypu-repack``: the online anypu policy, plus moving running *sharing* pods (issue 3).

FGD's protocol never moves a pod. This row goes where it cannot: a sharing pod (one GPU,
``gpu_milli`` < 1000) is treated as stateless, so when an arriving pod fits nowhere we may
move up to ``max_moves`` (1 or 2) running sharing pods off one node to make room for it
there. Whole-GPU pods never move. The search (:class:`Repacker`):

1. *Movable* pods: running sharing pods whose shape fits on some node now (else they have
   nowhere to go). Eviction sets, vectorised: one movable pod, or two on the same node,
   after whose release the arriving pod would fit on that node (CPU, memory, GPU model,
   enough GPUs with enough milli). Fewest moves first, then fewest milli moved.
2. The first ``max_plans`` sets are tried on a copy of the state: release them, place the
   pod on their node (anypu picks the GPUs), then place each evicted pod wherever anypu
   puts it. A plan is valid when all fit; one with more moves is tried only if none with
   fewer worked, because moves are not free.
3. Of the valid plans, the one whose touched nodes end with the least fragmentation +
   stranded GPU milli (anypu's objective, in expected GPU milli) is applied; with none, the
   pod is dropped as the protocol says.

Everything else is :func:`~anypu.simulations._openb_protocol.replay`'s protocol: the same
arrivals, node order and per-arrival recording (``decision_s`` includes the search).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from anypu.placement.gpushare import (
    AnypuPolicy,
    ClusterState,
    NodeTable,
    PodTable,
    Request,
    TypicalPods,
    fragmentation,
    stranded,
)
from anypu.simulations._openb_protocol import Replay, replay

__all__ = ["MovePlan", "RepackStats", "Repacker", "SharingPods", "replay_repack"]


@dataclass
class RepackStats:
    """What re-placement did in one replay."""

    searches: int = 0  # arrivals that fit nowhere, so a plan was looked for
    rescued: int = 0  # of those, placed thanks to a move
    migrations: int = 0  # running pods moved (one per rescued pod here)
    moved_milli: int = 0  # GPU milli of the moved pods
    moved_cpu: int = 0  # CPU milli-cores of the moved pods (what a restart re-reserves)


@dataclass(frozen=True)
class MovePlan:
    """Evict the ``moves``' pods from ``node``, bind the arrival there on ``gpus``, then
    bind each moved pod at its ``(pod, node, gpu)``. ``cost``: the objective change on the
    touched nodes (expected GPU milli, lower is better)."""

    moves: tuple[tuple[int, int, int], ...]
    node: int
    gpus: tuple[int, ...]
    cost: float


class SharingPods:
    """Where every running sharing pod is and what it asks, as arrays indexed by pod id."""

    def __init__(self, capacity: int) -> None:
        self.node = np.zeros(capacity, dtype=np.int64)
        self.gpu = np.zeros(capacity, dtype=np.int64)
        self.cpu = np.zeros(capacity, dtype=np.int64)
        self.mem = np.zeros(capacity, dtype=np.int64)
        self.milli = np.zeros(capacity, dtype=np.int64)
        self.spec = np.zeros(capacity, dtype=np.int64)
        self.alive = np.zeros(capacity, dtype=bool)

    def add(self, pod: int, node: int, gpu: int, req: Request) -> None:
        self.node[pod], self.gpu[pod] = node, gpu
        self.cpu[pod], self.mem[pod], self.milli[pod] = req.cpu, req.mem, req.milli
        self.spec[pod] = req.spec
        self.alive[pod] = True

    def request(self, pod: int) -> Request:
        return Request(
            int(self.cpu[pod]), int(self.mem[pod]), 1, int(self.milli[pod]), int(self.spec[pod])
        )


class Repacker:
    """Finds and applies the cheapest plan of at most ``max_moves`` moves (of sharing pods
    on the node that then takes the arrival) that makes room for an arriving pod."""

    def __init__(self, policy: AnypuPolicy, max_moves: int = 2, max_plans: int = 8) -> None:
        if not 1 <= max_moves <= 2:
            raise ValueError(f"max_moves must be 1 or 2, got {max_moves}")
        if max_plans < 1:
            raise ValueError(f"max_plans must be at least 1, got {max_plans}")
        self.policy = policy
        self.typical: TypicalPods = policy.typical
        self.max_moves = max_moves
        self.max_plans = max_plans
        # movable() depends only on the state and the running pods, which do not change
        # while arrivals keep failing (most of them, once the cluster is full): cache it.
        self._movable_key: tuple[int, int, int] | None = None
        self._movable: np.ndarray = np.zeros(0, dtype=np.int64)

    def movable(self, state: ClusterState, pods: SharingPods) -> np.ndarray:
        """Running sharing pods whose shape fits on some node now: a pod that fits nowhere
        has nowhere to go (its own slot will be the arrival's). One test per shape."""
        # Versions only grow, so the newest one changes with every bind or release.
        key = (id(state), int(state.version.max(initial=0)), int(pods.alive.sum()))
        if key == self._movable_key:
            return self._movable
        ids = np.flatnonzero(pods.alive)
        if len(ids) == 0:
            return ids
        shapes = np.stack([pods.cpu[ids], pods.mem[ids], pods.milli[ids], pods.spec[ids]], 1)
        uniq, inverse = np.unique(shapes, axis=0, return_inverse=True)
        fits = np.array([len(state.feasible(c, m, 1, mi, sp)) > 0 for c, m, mi, sp in uniq])
        self._movable_key, self._movable = key, ids[fits[inverse.ravel()]]
        return self._movable

    def _room(
        self, state: ClusterState, req: Request, node: np.ndarray, cpu: np.ndarray,
        mem: np.ndarray, left: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """Whether ``req`` fits on each ``node`` given its CPU, memory and GPU row ``left``
        after the evictions (vectorised over candidate plans)."""
        ok = (cpu >= req.cpu) & (mem >= req.mem)
        if req.num:
            if req.spec:
                model = state.nodes.model[node]
                ok &= (model >= 0) & (((req.spec >> np.maximum(model, 0)) & 1) == 1)
            ok &= (left >= req.milli).sum(axis=1) >= req.num
        return ok

    def candidates(
        self, state: ClusterState, req: Request, pods: SharingPods
    ) -> list[tuple[int, ...]]:
        """Eviction sets (one movable pod, or two on the same node) after which ``req`` fits
        on their node; fewest moves first, then fewest milli moved, then node order."""
        ids = self.movable(state, pods)
        if len(ids) == 0:
            return []
        n, g = pods.node[ids], pods.gpu[ids]
        rows = np.arange(len(ids))
        left = state.gpu_left[n].copy()
        left[rows, g] += pods.milli[ids]
        ok = self._room(
            state, req, n, state.cpu_left[n] + pods.cpu[ids], state.mem_left[n] + pods.mem[ids],
            left,
        )  # fmt: skip
        single = ids[ok]
        plans: list[tuple[int, ...]] = [
            (int(p),) for p in single[np.lexsort((pods.node[single], pods.milli[single]))]
        ]
        if self.max_moves < 2 or len(plans) >= self.max_plans:
            return plans
        # Pairs on one node: every pair of movable pods that share a node.
        order = np.argsort(n, kind="stable")
        a_list, b_list = [], []
        sorted_n = n[order]
        bounds = np.flatnonzero(np.diff(sorted_n)) + 1
        for group in np.split(order, bounds):
            if len(group) > 1:
                for i in range(len(group)):
                    for j in range(i + 1, len(group)):
                        a_list.append(group[i])
                        b_list.append(group[j])
        if not a_list:
            return plans
        a, b = ids[np.asarray(a_list)], ids[np.asarray(b_list)]
        node = pods.node[a]
        left = state.gpu_left[node].copy()
        k = np.arange(len(a))
        left[k, pods.gpu[a]] += pods.milli[a]
        left[k, pods.gpu[b]] += pods.milli[b]
        ok = self._room(
            state, req, node, state.cpu_left[node] + pods.cpu[a] + pods.cpu[b],
            state.mem_left[node] + pods.mem[a] + pods.mem[b], left,
        )  # fmt: skip
        a, b, node = a[ok], b[ok], node[ok]
        for q in np.lexsort((node, pods.milli[a] + pods.milli[b])):
            plans.append((int(a[q]), int(b[q])))
        return plans

    def objective(self, state: ClusterState, rows: np.ndarray) -> float:
        """anypu's objective on ``rows``: expected fragmented + stranded GPU milli."""
        typ = self.typical
        left = state.gpu_left[rows]
        cpu, mem = state.cpu_left[rows], state.mem_left[rows]
        frag = fragmentation(cpu, left, state.nodes.model[rows], typ)
        free = left.sum(axis=1).astype(np.float64)
        strand = stranded(free, cpu.astype(np.float64), mem.astype(np.float64),
                          typ.cpu_per_milli, typ.mem_per_milli)  # fmt: skip
        return float(frag.sum() + strand.sum())

    def plan(
        self, state: ClusterState, req: Request, pods: SharingPods, rng: np.random.Generator
    ) -> MovePlan | None:
        """Among the first ``max_plans`` candidates with the fewest moves that work, the
        one with the least objective change on the touched nodes; None if none works."""
        best: MovePlan | None = None
        only = np.zeros(len(state.nodes), dtype=bool)
        for evict in self.candidates(state, req, pods)[: self.max_plans]:
            if best is not None and len(evict) > len(best.moves):
                break  # a plan with fewer moves already works: moves are not free
            n = int(pods.node[evict[0]])
            trial = state.copy()
            for p in evict:
                r = pods.request(p)
                trial.release(n, (int(pods.gpu[p]),), r.cpu, r.mem, r.milli)
            only[n] = True
            here = self.policy.choose(trial, req, rng, allowed=only)
            only[n] = False
            if here is None:
                continue
            trial.bind(here.node, here.gpus, req.cpu, req.mem, req.milli)
            moves: list[tuple[int, int, int]] = []
            for p in sorted(evict, key=lambda q: -int(pods.milli[q])):  # biggest first
                r = pods.request(p)
                dest = self.policy.choose(trial, r, rng)
                if dest is None:
                    break
                trial.bind(dest.node, dest.gpus, r.cpu, r.mem, r.milli)
                moves.append((p, dest.node, dest.gpus[0]))
            if len(moves) < len(evict):
                continue
            rows = np.unique([n, *(d for _, d, _ in moves)])
            cost = self.objective(trial, rows) - self.objective(state, rows)
            if best is None or cost < best.cost:
                best = MovePlan(tuple(moves), n, here.gpus, cost)
        return best

    def apply(self, state: ClusterState, req: Request, pods: SharingPods, plan: MovePlan) -> None:
        """Evict, bind the arrival, re-bind the moved pods (the order the plan was checked in)."""
        for p, _, _ in plan.moves:
            r = pods.request(p)
            state.release(int(pods.node[p]), (int(pods.gpu[p]),), r.cpu, r.mem, r.milli)
        state.bind(plan.node, plan.gpus, req.cpu, req.mem, req.milli)
        for p, node, gpu in plan.moves:
            r = pods.request(p)
            state.bind(node, (gpu,), r.cpu, r.mem, r.milli)
            pods.node[p], pods.gpu[p] = node, gpu


def replay_repack(
    nodes: NodeTable,
    pods: PodTable,
    policy: AnypuPolicy,
    seed: int,
    *,
    max_moves: int = 2,
    max_plans: int = 8,
    track_frag: bool = True,
    progress: Callable[[int, int], object] | None = None,
) -> tuple[Replay, RepackStats]:
    """:func:`~anypu.simulations._openb_protocol.replay` with ``policy``, plus moves of
    running sharing pods for arrivals that fit nowhere (see the module). Never mutates
    inputs."""
    running = SharingPods(len(pods))
    repacker = Repacker(policy, max_moves, max_plans)
    stats = RepackStats()

    def place(state: ClusterState, req: Request, i: int, rng: np.random.Generator) -> bool:
        choice = policy.choose(state, req, rng)
        if choice is not None:
            state.bind(choice.node, choice.gpus, req.cpu, req.mem, req.milli)
            node, gpus = choice.node, choice.gpus
        else:
            stats.searches += 1
            plan = repacker.plan(state, req, running, rng)
            if plan is None:
                return False
            repacker.apply(state, req, running, plan)
            stats.rescued += 1
            stats.migrations += len(plan.moves)
            for p, _, _ in plan.moves:
                stats.moved_milli += int(running.milli[p])
                stats.moved_cpu += int(running.cpu[p])
            node, gpus = plan.node, plan.gpus
        if req.shared:
            running.add(i, node, gpus[0], req)
        return True

    result = replay(
        nodes,
        pods,
        policy,
        seed,
        policy.typical,
        track_frag=track_frag,
        progress=progress,
        place=place,
    )
    return result, stats
