"""An offline placement guided by the bound's LP: the other side of the bound.

Why: :mod:`anypu.simulations._openb_bound` bounds what any placement can allocate from
above. A real placement of the same pods bounds the optimum from below; if it leaves less
than a target unallocated, the target is reachable offline, and only online-ness stands in
its way. Pods never leave in the protocol, so a clairvoyant policy could reproduce this
placement arrival by arrival (each pod where it ends up here), provided it may turn away
the pods this placement leaves out, although they would fit when they arrive.

How (a heuristic; :func:`verify` re-checks the result from scratch):

1. Solve the ``node`` relaxation (optionally with CPU and memory headroom withheld) and
   round its solution down: per node group, ``⌊x_tg⌋`` whole-GPU pods of each type and
   ``⌊y_gp⌋`` GPUs of each pattern.
2. Fill the pattern GPUs' slots with real pods of the types the LP sent to the group,
   heaviest CPU first, each to the GPU with the least CPU so far (so that no GPU hoards the
   CPU-hungry pods).
3. Put the group's items (pattern GPUs, whole-GPU pods) on its nodes, widest first, then
   most CPU per GPU, each on the node left with the most CPU and memory beyond what its
   other free GPUs will need at the group's average demand per GPU.
4. Every GPU pod still out goes, largest request first, to the best fit anywhere: the
   fullest GPU that holds it, or the node with the fewest free whole GPUs. CPU-only pods
   go last, each to the node with the most free CPU.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anypu.placement.gpushare import MILLI, ClusterState, NodeTable, PodTable
from anypu.simulations._openb_bound import BoundModel

__all__ = ["HEADROOMS", "Offline", "offline_placement", "verify"]

#: Shares of each node group's CPU and memory withheld from the LP, one placement each.
HEADROOMS = (0.0, 0.02, 0.05, 0.1)
_ROUND = 1e-6  # LP values this close under an integer count as it


@dataclass(frozen=True)
class Offline:
    """One offline placement: where each pod went (node -1: left out)."""

    node: np.ndarray
    gpus: tuple[tuple[int, ...], ...]
    allocated_milli: int
    planned: int  # pods placed from the LP's plan (steps 1-3); the rest by best fit
    headroom: float  # share of CPU and memory the LP was denied

    @property
    def placed(self) -> np.ndarray:
        return self.node >= 0


@dataclass
class _Item:
    """What one node takes from the plan: a GPU of sharing pods, or one whole-GPU pod."""

    gpus: int
    pods: list[int]
    cpu: int = 0
    mem: int = 0


class _Binder:
    """The cluster state plus where each pod was bound."""

    def __init__(self, nodes: NodeTable, pods: PodTable) -> None:
        self.state = ClusterState(nodes)
        self.pods = pods
        self.node = np.full(len(pods), -1, dtype=np.int64)
        self.gpus: list[tuple[int, ...]] = [()] * len(pods)

    def bind(self, i: int, node: int, gpus: tuple[int, ...]) -> None:
        p = self.pods
        self.state.bind(node, gpus, int(p.cpu[i]), int(p.mem[i]), int(p.gpu_milli[i]))
        self.node[i] = node
        self.gpus[i] = gpus


def offline_placement(
    nodes: NodeTable, pods: PodTable, headrooms: Sequence[float] = HEADROOMS
) -> Offline:
    """Place ``pods`` all at once (see the module docstring), once per ``headroom``, and
    keep the placement that allocates the most. Headroom matters where the LP fills a node
    shape's CPU to the last core: the rounded plan then does not fit node by node."""
    if not headrooms:
        raise ValueError("give at least one headroom")
    runs = [_place(nodes, pods, h) for h in headrooms]
    return max(runs, key=lambda r: r.allocated_milli)


def _place(nodes: NodeTable, pods: PodTable, headroom: float) -> Offline:
    model = BoundModel(nodes, pods, "node", headroom)
    model.solve(len(pods))
    x, patterns = model.last_plan()
    # Pods still out, by type, last arrival first: pop() takes the earliest, so the pods
    # the plan leaves out are the last of their type to arrive (identical pods otherwise).
    pool: list[list[int]] = [[] for _ in range(len(model.types))]
    for i in range(len(pods) - 1, -1, -1):
        t = int(model.types.of[i])
        if t >= 0:
            pool[t].append(i)
    binder = _Binder(nodes, pods)
    for g in range(len(model.groups)):
        items = _whole_items(g, x, model, pool, pods)
        items += _pattern_items(g, x, patterns, model, pool, pods)
        _assign(binder, np.flatnonzero(model.groups.of_node == g), items, pool, model.types.of)
    planned = int((binder.node >= 0).sum())
    leftovers = [i for rest in pool for i in rest]
    leftovers.sort(key=lambda i: (-int(pods.num_gpu[i] * pods.gpu_milli[i]), i))
    for i in leftovers:
        _best_fit(binder, i)
    state = binder.state
    for i in np.flatnonzero(pods.num_gpu == 0).tolist():
        fit = state.feasible(int(pods.cpu[i]), int(pods.mem[i]), 0, 0, 0)
        if len(fit):
            binder.bind(i, int(fit[np.argmax(state.cpu_left[fit])]), ())
    return Offline(binder.node, tuple(binder.gpus), state.allocated_milli, planned, headroom)


def _whole_items(
    g: int, x: np.ndarray, model: BoundModel, pool: list[list[int]], pods: PodTable
) -> list[_Item]:
    items = []
    for t in np.flatnonzero(~model.types.shared & (x[:, g] >= 1.0 - _ROUND)).tolist():
        for _ in range(min(int(x[t, g] + _ROUND), len(pool[t]))):
            i = pool[t].pop()
            items.append(_Item(int(pods.num_gpu[i]), [i], int(pods.cpu[i]), int(pods.mem[i])))
    return items


def _pattern_items(
    g: int,
    x: np.ndarray,
    patterns: list[tuple[int, tuple[int, ...], float]],
    model: BoundModel,
    pool: list[list[int]],
    pods: PodTable,
) -> list[_Item]:
    """GPUs of the group's patterns, filled with the pods the LP sent to the group."""
    types = model.types
    bins: list[_Item] = []
    slots: list[list[int]] = []  # per bin, its open slots per size index
    for pg, a, y in patterns:
        if pg == g:
            for _ in range(int(y + _ROUND)):
                bins.append(_Item(1, []))
                slots.append(list(a))
    for k, size in sorted(enumerate(model.sizes), key=lambda e: -e[1]):
        chosen: list[int] = []
        for t in np.flatnonzero(types.shared & (types.milli == size)).tolist():
            chosen += [pool[t].pop() for _ in range(min(int(x[t, g] + _ROUND), len(pool[t])))]
        chosen.sort(key=lambda i: -int(pods.cpu[i]))
        heap = [(bins[b].cpu, b) for b in range(len(bins)) if slots[b][k]]
        heapq.heapify(heap)
        for n, i in enumerate(chosen):
            if not heap:  # more pods than slots (rounding): back to the pool for step 4
                for j in chosen[n:]:
                    pool[int(types.of[j])].append(j)
                break
            _, b = heapq.heappop(heap)
            bins[b].pods.append(i)
            bins[b].cpu += int(pods.cpu[i])
            bins[b].mem += int(pods.mem[i])
            slots[b][k] -= 1
            if slots[b][k]:
                heapq.heappush(heap, (bins[b].cpu, b))
    return [b for b in bins if b.pods]


def _assign(
    binder: _Binder, members: np.ndarray, items: list[_Item], pool: list[list[int]], of: np.ndarray
) -> None:
    """Bind ``items`` on the group's nodes ``members``; the pods of an item that fits
    nowhere go back to the pool."""
    if not items:
        return
    state = binder.state
    gpus = float(sum(item.gpus for item in items))
    cpu_per_gpu = max(sum(item.cpu for item in items) / gpus, 1.0)
    mem_per_gpu = max(sum(item.mem for item in items) / gpus, 1.0)
    items = sorted(items, key=lambda it: (-it.gpus, -it.cpu / it.gpus, -it.mem / it.gpus))
    for item in items:
        free = (state.gpu_left[members] == MILLI).sum(axis=1)
        cpu, mem = state.cpu_left[members], state.mem_left[members]
        ok = (free >= item.gpus) & (cpu >= item.cpu) & (mem >= item.mem)
        if not ok.any():
            for i in item.pods:
                pool[int(of[i])].append(i)
            continue
        rest = free - item.gpus
        slack = np.minimum(
            (cpu - item.cpu - cpu_per_gpu * rest) / cpu_per_gpu,
            (mem - item.mem - mem_per_gpu * rest) / mem_per_gpu,
        )
        node = int(members[np.flatnonzero(ok)[np.argmax(slack[ok])]])
        whole = tuple(int(j) for j in np.flatnonzero(state.gpu_left[node] == MILLI)[: item.gpus])
        for i in item.pods:
            binder.bind(i, node, whole)


def _best_fit(binder: _Binder, i: int) -> None:
    """Place pod ``i`` on the fullest GPU (or the node of fewest free GPUs) that holds it."""
    state, pods = binder.state, binder.pods
    num, milli = int(pods.num_gpu[i]), int(pods.gpu_milli[i])
    nodes = state.feasible(int(pods.cpu[i]), int(pods.mem[i]), num, milli, int(pods.spec[i]))
    if not len(nodes):
        return
    left = state.gpu_left[nodes]
    if milli < MILLI:
        fill = np.where(left >= milli, left, MILLI + 1)
        flat = int(np.argmin(fill))
        binder.bind(i, int(nodes[flat // fill.shape[1]]), (flat % fill.shape[1],))
        return
    node = int(nodes[int(np.argmin((left == MILLI).sum(axis=1)))])
    binder.bind(i, node, tuple(int(j) for j in np.flatnonzero(state.gpu_left[node] == MILLI)[:num]))


def verify(nodes: NodeTable, pods: PodTable, placement: Offline) -> int:
    """Re-check ``placement`` from scratch (no :class:`ClusterState`): every node's CPU and
    memory, every GPU's milli, distinct whole GPUs, GPU counts and models. Returns the
    allocated milli; raises ``ValueError`` on the first violation."""
    cpu = np.zeros(len(nodes), dtype=np.int64)
    mem = np.zeros(len(nodes), dtype=np.int64)
    gpu = np.zeros((len(nodes), max(int(nodes.gpus.max()), 1)), dtype=np.int64)
    allocated = 0
    for i in np.flatnonzero(placement.node >= 0).tolist():
        n, gs = int(placement.node[i]), placement.gpus[i]
        num, milli, spec = int(pods.num_gpu[i]), int(pods.gpu_milli[i]), int(pods.spec[i])
        if len(gs) != num or len(set(gs)) != num or any(not 0 <= g < nodes.gpus[n] for g in gs):
            raise ValueError(f"pod {i} holds GPUs {gs} of node {n}, asking {num}")
        if num and spec and not (nodes.model[n] >= 0 and (spec >> int(nodes.model[n])) & 1):
            raise ValueError(f"pod {i} is on node {n}, whose GPU model it does not accept")
        cpu[n] += int(pods.cpu[i])
        mem[n] += int(pods.mem[i])
        for g in gs:
            gpu[n, g] += milli
        allocated += num * milli
    over = np.flatnonzero((cpu > nodes.cpu) | (mem > nodes.mem))
    if len(over):
        raise ValueError(f"node {int(over[0])} holds pods asking more CPU or memory than it has")
    if (gpu > MILLI).any():
        raise ValueError(f"a GPU of node {int(np.argwhere(gpu > MILLI)[0][0])} holds > {MILLI}")
    if allocated != placement.allocated_milli:
        said = placement.allocated_milli
        raise ValueError(f"the pods hold {allocated} milli, the placement says {said}")
    return allocated
