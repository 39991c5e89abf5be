"""GPU fragmentation as the FGD paper defines it (Weng et al., USENIX ATC'23, Sec. 3).

For a node and a *typical* pod, the node's free GPU milli that the pod could not use is
fragmented: all of it when the pod cannot be placed on the node at all (too little CPU,
too few GPUs with enough free milli, a GPU model it does not accept, or a pod that asks
for no GPU), otherwise the free milli of the GPUs whose free share is below the pod's
per-GPU request. A node's fragmentation is the frequency-weighted sum over the typical
pods; the cluster's is the sum over nodes.

The typical pods are the workload's distinct request shapes ``(cpu, gpu milli, number of
GPUs, allowed models)``, most popular first, taken until they cover 95 % of the pods and
renormalised (the published artifact's defaults).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from anypu.placement.gpushare._cluster import ClusterState, PodTable

__all__ = ["FragCache", "TypicalPods", "fragmentation", "typical_pods"]


@dataclass(frozen=True)
class TypicalPods:
    """Typical GPU pod shapes and their frequencies; CPU-only shapes are folded into
    ``cpu_only_share`` because from their point of view every free GPU milli is fragmented."""

    cpu: NDArray[np.int64]  # per typical GPU pod
    milli: NDArray[np.int64]  # per-GPU request
    num: NDArray[np.int64]  # number of GPUs
    spec: NDArray[np.int64]  # model bit mask, 0 = any
    freq: NDArray[np.float64]  # sums with cpu_only_share to 1
    cpu_only_share: float
    levels: NDArray[np.int64]  # distinct milli values, ascending
    level_of: NDArray[np.intp]  # index into levels for each typical pod
    # What the workload's GPU pods ask per GPU milli on average (all pods, not just the
    # typical ones); 0 when unknown, which switches resource stranding off.
    cpu_per_milli: float = 0.0
    mem_per_milli: float = 0.0

    def __len__(self) -> int:
        return len(self.cpu)


def typical_pods(pods: PodTable, popularity: float = 95.0) -> TypicalPods:
    """Most popular request shapes covering ``popularity`` % of ``pods``, renormalised."""
    shapes = Counter(
        zip(
            pods.cpu.tolist(),
            pods.gpu_milli.tolist(),
            pods.num_gpu.tolist(),
            pods.spec.tolist(),
            strict=True,
        )
    )
    # Most popular first; among equals the larger shape first (the artifact sorts the
    # reversed (count, cpu, milli, num, model) order), so the cut-off is deterministic.
    ranked = sorted(shapes.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    total = float(len(pods))
    needed = popularity * total / 100.0
    kept: list[tuple[tuple[int, int, int, int], int]] = []
    covered = 0.0
    for shape, count in ranked:
        if covered >= needed:
            break
        kept.append((shape, count))
        covered += count
    cpu_only = sum(c for (s, c) in kept if s[1] == 0 or s[2] == 0) / covered
    gpu = [(s, c / covered) for (s, c) in kept if s[1] > 0 and s[2] > 0]
    cpu = np.asarray([s[0] for s, _ in gpu], dtype=np.int64)
    milli = np.asarray([s[1] for s, _ in gpu], dtype=np.int64)
    levels = np.unique(milli) if len(milli) else np.zeros(0, dtype=np.int64)
    gpu_pods = pods.num_gpu > 0
    gpu_milli = float(pods.total_gpu_milli[gpu_pods].sum())
    return TypicalPods(
        cpu=cpu,
        milli=milli,
        num=np.asarray([s[2] for s, _ in gpu], dtype=np.int64),
        spec=np.asarray([s[3] for s, _ in gpu], dtype=np.int64),
        freq=np.asarray([f for _, f in gpu], dtype=np.float64),
        cpu_only_share=float(cpu_only),
        levels=levels,
        level_of=np.searchsorted(levels, milli),
        cpu_per_milli=float(pods.cpu[gpu_pods].sum()) / gpu_milli if gpu_milli else 0.0,
        mem_per_milli=float(pods.mem[gpu_pods].sum()) / gpu_milli if gpu_milli else 0.0,
    )


def fragmentation(
    cpu_left: np.ndarray, gpu_left: np.ndarray, model: np.ndarray, typical: TypicalPods
) -> NDArray[np.float64]:
    """Expected fragmented GPU milli of each of ``K`` node states.

    ``cpu_left`` is ``(K,)``, ``gpu_left`` ``(K, G)`` and ``model`` ``(K,)`` (GPU model
    index, -1 for none). Work is ``K × (levels × G + typical)`` — per distinct milli level,
    not per typical pod, since many typical pods share a per-GPU request.
    """
    gpu_left = np.asarray(gpu_left)
    total: NDArray[np.float64] = gpu_left.sum(axis=1).astype(np.float64)
    if len(typical) == 0:
        return total * typical.cpu_only_share
    fits = gpu_left[:, None, :] >= typical.levels[None, :, None]  # K × L × G
    count = fits.sum(axis=2)  # GPUs that can take a request of each level
    below = total[:, None] - (gpu_left[:, None, :] * fits).sum(axis=2)  # milli of the others
    lv = typical.level_of
    access = (typical.spec[None, :] == 0) | (
        (model[:, None] >= 0)
        & (((typical.spec[None, :] >> np.maximum(model, 0)[:, None]) & 1) == 1)
    )
    placeable = (
        access
        & (count[:, lv] >= typical.num[None, :])
        & (cpu_left[:, None] >= typical.cpu[None, :])
    )
    frag_each: NDArray[np.float64] = np.where(placeable, below[:, lv], total[:, None])
    return frag_each @ typical.freq + total * typical.cpu_only_share


class FragCache:
    """Per-node fragmentation of a live :class:`ClusterState`, refreshed lazily.

    Placement changes one node at a time, so only nodes whose ``version`` moved since the
    last read are recomputed; reading the cluster total after every arrival stays cheap.
    """

    def __init__(self, typical: TypicalPods) -> None:
        self.typical = typical
        self._frag: NDArray[np.float64] | None = None
        self._seen: NDArray[np.int64] | None = None
        self._nodes: object = None

    def node_frag(self, state: ClusterState) -> NDArray[np.float64]:
        # Versions are unique per process, so any state over the same node table (the live
        # one or a trial copy) can reuse what is cached; a different table cannot.
        if self._frag is None or self._nodes is not state.nodes:
            self._frag = fragmentation(
                state.cpu_left, state.gpu_left, state.nodes.model, self.typical
            )
            self._seen = state.version.copy()
            self._nodes = state.nodes
            return self._frag
        assert self._seen is not None
        stale = np.flatnonzero(self._seen != state.version)
        if len(stale):
            self._frag[stale] = fragmentation(
                state.cpu_left[stale], state.gpu_left[stale], state.nodes.model[stale], self.typical
            )
            self._seen[stale] = state.version[stale]
        return self._frag

    def total(self, state: ClusterState) -> float:
        return float(self.node_frag(state).sum())
