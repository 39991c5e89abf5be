"""Batch placement: a window of pending pods placed together with CP-SAT (``anypu-batch``).

Online, a pod must be placed before the next one is seen; a window lets the solver pair
sharing pods whose GPU requests complement each other (810 + 160 milli on one GPU) and
decide which pod gets a scarce node. The model, per window:

- candidates: each pod's ``candidates`` cheapest options under ``anypu``'s online cost
  (a node, plus the GPU for a sharing pod), computed on the state before the window;
- a boolean per (pod, candidate), at most one per pod; CPU and memory per node; milli per
  shared GPU; whole GPUs per node minus the free GPUs that sharing pods start to use;
- objective: place as much GPU milli as possible (then CPU-only pods), minus the online
  cost of whole-GPU and CPU-only choices, minus for every shared GPU the exact expected
  fragmentation of its free milli once the window lands (a table over 0..1000 milli).

The online greedy plan of the window is the hint, so the solver starts from what ``anypu``
would do; pods the solver leaves out are retried online before being dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from ortools.sat.python import cp_model

from anypu.placement.gpushare._cluster import MILLI, ClusterState
from anypu.placement.gpushare._frag import TypicalPods
from anypu.placement.gpushare._policies import AnypuPolicy, Choice, Request

__all__ = ["BatchPlacer", "BatchStats", "gpu_fragment_table"]

# Placing one more milli of GPU is worth more than any fragmentation it costs (costs are
# at most a node's 8,000 milli), so the solver never drops a pod to save fragmentation.
PLACE_WEIGHT = 16
CPU_POD_VALUE = 16 * MILLI


def gpu_fragment_table(typical: TypicalPods) -> NDArray[np.float64]:
    """Expected fragmented milli of one GPU with ``f`` milli free, for f = 0..1000: the
    free milli times the share of typical GPU pods whose per-GPU request exceeds ``f``."""
    f = np.arange(MILLI + 1)
    if len(typical) == 0:
        return np.zeros(MILLI + 1)
    above: NDArray[np.float64] = (typical.milli[None, :] > f[:, None]) @ typical.freq
    return f * above


def _fits(state: ClusterState, req: Request, node: int, gpu: int) -> bool:
    """Whether the solver's pick still fits: a safety net, since the model is exact only
    over its own candidates."""
    if state.cpu_left[node] < req.cpu or state.mem_left[node] < req.mem:
        return False
    if req.shared:
        return bool(state.gpu_left[node, gpu] >= req.milli)
    return bool((state.gpu_left[node] == MILLI).sum() >= req.num)


@dataclass
class BatchStats:
    windows: int = 0
    optimal: int = 0
    solve_s: float = 0.0


class BatchPlacer:
    """Places windows of pods on a live :class:`ClusterState` (see the module doc).

    ``time_limit_s`` is CP-SAT's *deterministic* time budget per window, so with one
    worker the same window always gets the same plan, however loaded the machine is.
    """

    def __init__(
        self,
        typical: TypicalPods,
        *,
        candidates: int = 8,
        time_limit_s: float = 0.2,
        workers: int = 1,
    ) -> None:
        self.online = AnypuPolicy(typical)
        self.table = np.round(gpu_fragment_table(typical)).astype(np.int64)
        self.candidates = candidates
        self.time_limit_s = time_limit_s
        self.workers = workers
        self.stats = BatchStats()

    def _options(self, state: ClusterState, req: Request) -> list[tuple[int, int, float]]:
        """Up to ``candidates`` cheapest ``(node, gpu or -1, cost)`` for ``req`` now."""
        nodes = state.feasible(req.cpu, req.mem, req.num, req.milli, req.spec)
        if len(nodes) == 0:
            return []
        cost = self.online.cost(state, req, nodes)
        flat = cost.ravel()
        k = min(self.candidates, int(np.isfinite(flat).sum()))
        # Stable order so equal costs go to the first node, as online.
        best = np.argsort(flat, kind="stable")[:k]
        if req.shared:
            width = cost.shape[1]
            return [(int(nodes[i // width]), int(i % width), float(flat[i])) for i in best]
        return [(int(nodes[i]), -1, float(flat[i])) for i in best]

    def _greedy(self, state: ClusterState, reqs: Sequence[Request]) -> list[Choice | None]:
        trial = state.copy()
        rng = np.random.default_rng(0)  # anypu breaks ties by node order: unused
        out: list[Choice | None] = []
        for req in reqs:
            choice = self.online.choose(trial, req, rng)
            if choice is not None:
                trial.bind(choice.node, choice.gpus, req.cpu, req.mem, req.milli)
            out.append(choice)
        return out

    def place(self, state: ClusterState, reqs: Sequence[Request]) -> list[Choice | None]:
        """Bind as many of ``reqs`` as fit onto ``state``; the choice per pod (``None``:
        dropped). Mutates ``state`` as the online path does."""
        options = [self._options(state, r) for r in reqs]
        hint = self._greedy(state, reqs)
        picked = self._solve(state, reqs, options, hint)
        result: list[Choice | None] = [None] * len(reqs)
        rng = np.random.default_rng(0)
        # The solver's picks bind first, shared pods before whole-GPU ones (the whole-GPU
        # constraint assumed the shared pods take their GPUs); then the left-out pods are
        # retried online, in arrival order, on what remains.
        solved = sorted(
            ((i, pick) for i, pick in enumerate(picked) if pick is not None),
            key=lambda item: not reqs[item[0]].shared,
        )
        for i, (node, gpu) in solved:
            req = reqs[i]
            if _fits(state, req, node, gpu):
                gpus = (gpu,) if req.shared else self.online.gpus_on(state, req, node, rng)
                result[i] = Choice(node, gpus)
                state.bind(node, gpus, req.cpu, req.mem, req.milli)
        for i, req in enumerate(reqs):
            if result[i] is None:
                choice = self.online.choose(state, req, rng)
                result[i] = choice
                if choice is not None:
                    state.bind(choice.node, choice.gpus, req.cpu, req.mem, req.milli)
        return result

    def _solve(
        self,
        state: ClusterState,
        reqs: Sequence[Request],
        options: list[list[tuple[int, int, float]]],
        hint: list[Choice | None],
    ) -> list[tuple[int, int] | None]:
        m = cp_model.CpModel()
        x: list[list[cp_model.IntVar]] = []
        # (coefficient, variable) terms of each node's and shared GPU's constraints.
        node_cpu: dict[int, list[tuple[int, cp_model.IntVar]]] = {}
        node_mem: dict[int, list[tuple[int, cp_model.IntVar]]] = {}
        node_whole: dict[int, list[tuple[int, cp_model.IntVar]]] = {}
        gpu_use: dict[tuple[int, int], list[tuple[int, cp_model.IntVar]]] = {}
        objective: list[cp_model.LinearExprT] = []
        for p, (req, opts) in enumerate(zip(reqs, options, strict=True)):
            row: list[cp_model.IntVar] = []
            for node, gpu, cost in opts:
                v = m.new_bool_var(f"x{p}_{node}_{gpu}")
                row.append(v)
                node_cpu.setdefault(node, []).append((req.cpu, v))
                node_mem.setdefault(node, []).append((req.mem, v))
                value = PLACE_WEIGHT * req.gpu_total if req.num else CPU_POD_VALUE
                if req.shared:
                    gpu_use.setdefault((node, gpu), []).append((req.milli, v))
                    objective.append(value * v)  # its GPU's fragmentation is costed below
                else:
                    if req.num:
                        node_whole.setdefault(node, []).append((req.num, v))
                    objective.append((value - int(round(cost))) * v)
            if row:
                m.add_at_most_one(row)
                chosen = hint[p]
                for (node, gpu, _), v in zip(opts, row, strict=True):
                    hinted = (
                        chosen is not None
                        and chosen.node == node
                        and (gpu < 0 or chosen.gpus == (gpu,))
                    )
                    m.add_hint(v, hinted)
            x.append(row)
        for node, terms in node_cpu.items():
            m.add(sum(c * v for c, v in terms) <= int(state.cpu_left[node]))
        for node, terms in node_mem.items():
            m.add(sum(c * v for c, v in terms) <= int(state.mem_left[node]))
        opened: dict[int, list[cp_model.IntVar]] = {}
        for (node, gpu), terms in gpu_use.items():
            left = int(state.gpu_left[node, gpu])
            used = sum(c * v for c, v in terms)
            m.add(used <= left)
            free_after = m.new_int_var(0, left, f"f{node}_{gpu}")
            m.add(free_after == left - used)
            frag = m.new_int_var(0, int(self.table.max()), f"c{node}_{gpu}")
            m.add_element(free_after, self.table[: left + 1].tolist(), frag)
            objective.append(-frag)
            if left == MILLI:
                touched = m.new_bool_var(f"t{node}_{gpu}")
                for _, v in terms:
                    m.add_implication(v, touched)
                opened.setdefault(node, []).append(touched)
        for node, terms in node_whole.items():
            free = int((state.gpu_left[node] == MILLI).sum())
            m.add(sum(n * v for n, v in terms) + sum(opened.get(node, [])) <= free)
        m.maximize(sum(objective))
        solver = cp_model.CpSolver()
        # A deterministic budget (one worker) makes replays reproducible under any load;
        # the wall-clock limit only guards against a pathological window.
        solver.parameters.max_deterministic_time = self.time_limit_s
        solver.parameters.max_time_in_seconds = 5 * self.time_limit_s
        solver.parameters.num_workers = self.workers
        status = solver.solve(m)
        self.stats.windows += 1
        self.stats.solve_s += solver.wall_time
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return [(c.node, c.gpus[0] if c.gpus else -1) if c else None for c in hint]
        self.stats.optimal += status == cp_model.OPTIMAL
        picked: list[tuple[int, int] | None] = []
        for opts, row in zip(options, x, strict=True):
            hit = [
                (node, gpu) for (node, gpu, _), v in zip(opts, row, strict=True) if solver.value(v)
            ]
            picked.append(hit[0] if hit else None)
        return picked
