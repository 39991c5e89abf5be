"""Fragmentation increase per (pod shape, node), cached across decisions; resource stranding.

A decision places one pod on one node, so between two pods of the same shape only the
nodes bound in between change. :class:`DeltaCache` keeps, per request shape ``(cpu, number
of GPUs, per-GPU milli)``, the fragmentation increase of placing it on every node and
recomputes only the nodes whose ``ClusterState.version`` moved since that shape was last
asked for. The increase does not depend on the pod's memory or GPU-model constraint
(those only filter), so the shapes of a whole openb trace fit in ~90 entries.

:func:`stranded` and :class:`Scarcity` are the rest of ``anypu``'s objective: free GPU
milli that future GPU pods could not use because the node has run out of CPU or memory
for them, and GPUs of a model that pods restricted to that model will be short of.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from anypu.placement.gpushare._cluster import MAX_GPUS, MILLI, ClusterState
from anypu.placement.gpushare._frag import FragCache, TypicalPods, fragmentation

__all__ = ["DeltaCache", "Scarcity", "fragmentation_increase", "stranded"]

Shape = tuple[int, int, int]


def _denoise(delta: NDArray[np.float64]) -> NDArray[np.float64]:
    """Round away float summation noise so that equal fragmentation changes compare equal."""
    return np.round(delta, 6)


def fragmentation_increase(
    state: ClusterState,
    rows: np.ndarray,
    before: np.ndarray,
    shape: Shape,
    typical: TypicalPods,
) -> NDArray[np.float64]:
    """Fragmentation increase of placing ``shape`` on each node in ``rows``.

    A whole-GPU or CPU-only shape gives ``(len(rows),)``: it takes the first completely
    free GPUs, as the binding will. A shared shape gives ``(len(rows), MAX_GPUS)``, one
    column per GPU it could share, ``inf`` where that GPU lacks the milli. Values for
    nodes that cannot hold the pod at all are meaningless; callers filter first.
    """
    cpu, num, milli = shape
    model = state.nodes.model[rows]
    cpu_after = state.cpu_left[rows] - cpu
    left = state.gpu_left[rows]
    if num == 1 and 0 < milli < MILLI:
        k = len(rows)
        after_rows = np.repeat(left[:, None, :], MAX_GPUS, axis=1)  # node × choice × gpu
        diag = np.arange(MAX_GPUS)
        after_rows[:, diag, diag] -= milli
        sel = np.flatnonzero((left >= milli).ravel())
        after = fragmentation(
            np.repeat(cpu_after, MAX_GPUS)[sel],
            after_rows.reshape(k * MAX_GPUS, MAX_GPUS)[sel],
            np.repeat(model, MAX_GPUS)[sel],
            typical,
        )
        out = np.full(k * MAX_GPUS, np.inf)
        out[sel] = after - np.repeat(before, MAX_GPUS)[sel]
        return _denoise(out.reshape(k, MAX_GPUS))
    new_left = left.copy()
    if num:
        free = new_left == MILLI
        new_left[free & (np.cumsum(free, axis=1) <= num)] = 0
    return _denoise(fragmentation(cpu_after, new_left, model, typical) - before)


class DeltaCache:
    """Per-shape fragmentation increases of one live :class:`ClusterState`."""

    def __init__(self, typical: TypicalPods) -> None:
        self.typical = typical
        self.frag = FragCache(typical)
        self._nodes: object = None
        self._shapes: dict[Shape, tuple[NDArray[np.float64], NDArray[np.int64]]] = {}

    def increase(self, state: ClusterState, shape: Shape) -> NDArray[np.float64]:
        """Increase for every node (see :func:`fragmentation_increase`). The cache's own
        array: index it, never write to it."""
        if state.nodes is not self._nodes:
            # Another node table: nothing cached applies. (States over the same table, a
            # trial copy included, share the cache: their node versions never collide.)
            self._shapes.clear()
            self._nodes = state.nodes
        entry = self._shapes.get(shape)
        if entry is None:
            rows = np.arange(len(state.nodes))
            values = fragmentation_increase(
                state, rows, self.frag.node_frag(state), shape, self.typical
            )
            self._shapes[shape] = (values, state.version.copy())
        else:
            values, seen = entry
            rows = np.flatnonzero(seen != state.version)
            if len(rows):
                before = self.frag.node_frag(state)[rows]
                values[rows] = fragmentation_increase(state, rows, before, shape, self.typical)
                seen[rows] = state.version[rows]
        return values


def stranded(
    gpu_free: NDArray[np.float64],
    cpu_left: NDArray[np.float64],
    mem_left: NDArray[np.float64],
    cpu_per_milli: float,
    mem_per_milli: float,
) -> NDArray[np.float64]:
    """Free GPU milli beyond what the node's CPU or memory can feed.

    ``cpu_per_milli`` / ``mem_per_milli`` are what the workload's GPU pods ask per GPU
    milli on average; a node with less CPU (or memory) than that per free GPU milli will
    leave the excess idle however well its GPUs are packed. FGD's measure misses this: a
    CPU-only pod changes a node's fragmentation only once a typical pod stops fitting.
    """
    out = np.zeros(np.shape(gpu_free))
    if cpu_per_milli > 0:
        out = np.maximum(out, gpu_free - cpu_left / cpu_per_milli)
    if mem_per_milli > 0:
        out = np.maximum(out, gpu_free - mem_left / mem_per_milli)
    return out


class Scarcity:
    """How much GPU-model-constrained pods will miss a GPU of each model.

    For each typical pod restricted to a set of models, its expected future demand is its
    share of the workload's GPU demand times the cluster's free GPU milli (the cluster
    keeps filling with the same mix); its pressure is that demand over the free milli of
    the models it accepts, capped at 1. A model's scarcity is the sum of the pressures of
    the constrained pods that accept it: the expected milli lost to them per milli an
    unconstrained pod takes there. FGD sees a weak form of this (GPUs a typical pod cannot
    reach count as fragmented), which is blind to how oversubscribed a model is.
    """

    def __init__(self, typical: TypicalPods, n_models: int) -> None:
        restricted = typical.spec > 0
        demand = typical.freq * typical.num * typical.milli
        total = float(demand.sum())
        self.share = demand[restricted] / total if total else np.zeros(0)
        bits = typical.spec[restricted][:, None] >> np.arange(n_models)[None, :]
        self.accepts = (bits & 1).astype(np.float64)  # typical pod × model
        self.n_models = n_models

    def __bool__(self) -> bool:
        return bool(len(self.share))

    def __call__(self, free_by_model: np.ndarray) -> NDArray[np.float64]:
        """Scarcity of each model, given the free GPU milli of each model now."""
        if not len(self.share):
            return np.zeros(self.n_models)
        supply = self.accepts @ free_by_model
        demand = self.share * float(free_by_model.sum())
        pressure: NDArray[np.float64] = np.minimum(1.0, demand / np.maximum(supply, 1.0))
        return pressure @ self.accepts
