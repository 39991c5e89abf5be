"""Online placement policies as scoring plugins: filter → score → pick.

Every policy scores the feasible nodes for one pod (higher is better) and says which
GPU(s) it would use there; the highest score wins and ties go to the first such node in
the node table's order (``random`` alone draws among its ties). The six baselines follow
the FGD paper's artifact (its integer 0–100 scores, so that their ties, and therefore
their results, match); ``anypu`` and ``anypu-ss`` (anypu + Sum-of-Squares) are ours.
Which node is "first" matters: the artifact's scheduler meets the nodes in a seeded random
order, so a trace replay reorders the node table per seed
(``simulations._openb_protocol.shuffle_nodes``) before placing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from anypu.placement.gpushare._cluster import MILLI, ClusterState
from anypu.placement.gpushare._frag import TypicalPods
from anypu.placement.gpushare._gradient import DeltaCache, Scarcity, stranded
from anypu.placement.gpushare._sumsq import GapCounts, GapRule, waste_plan

__all__ = [
    "POLICIES",
    "TRACE_POLICIES",
    "AnypuPolicy",
    "AnypuSSPolicy",
    "BestFitPolicy",
    "Choice",
    "DotProdPolicy",
    "FgdPolicy",
    "GpuClusteringPolicy",
    "GpuPackingPolicy",
    "Policy",
    "RandomPolicy",
    "Request",
    "make_policy",
]

MAX_SPEC_CPU = 128_000  # the artifact's normalisers: the largest node it models
MAX_SPEC_GPU = 8 * MILLI
MAX_SCORE = 100


@dataclass(frozen=True)
class Request:
    """One pod's request. ``spec`` is a GPU-model bit mask (0 = any)."""

    cpu: int
    mem: int
    num: int = 0
    milli: int = 0
    spec: int = 0

    @property
    def shared(self) -> bool:
        return self.num == 1 and 0 < self.milli < MILLI

    @property
    def gpu_total(self) -> int:
        return self.num * self.milli


@dataclass(frozen=True)
class Choice:
    node: int
    gpus: tuple[int, ...]


def best_fit_gpu(row: np.ndarray, milli: int) -> int:
    """The GPU with the least free milli that still fits (first such index)."""
    fit = np.flatnonzero(row >= milli)
    return int(fit[np.argmin(row[fit])])


def whole_gpus(row: np.ndarray, num: int) -> tuple[int, ...]:
    """The first ``num`` completely free GPUs."""
    return tuple(int(g) for g in np.flatnonzero(row == MILLI)[:num])


def _trunc(x: NDArray[np.float64]) -> NDArray[np.int64]:
    """Go's float→int64 conversion (truncation towards zero)."""
    return np.trunc(x).astype(np.int64)


class Policy(ABC):
    """Scores feasible nodes for a pod; :meth:`choose` runs filter → score → pick."""

    name: ClassVar[str]
    # Ties go to the first node in the table's order unless this is set. The artifact's
    # scheduler is deterministic in the same way, over a per-seed random node order (the
    # replay shuffles the table to match); with ties drawn uniformly per pod instead, FGD
    # loses ~5 points on openb (95.2 → 89.7 %): it breaks up the 8-GPU nodes that the
    # rare 8-GPU pods need.
    random_ties: bool = False

    def __init__(self, typical: TypicalPods, *, random_ties: bool | None = None) -> None:
        self.typical = typical
        if random_ties is not None:
            self.random_ties = random_ties

    @abstractmethod
    def score(
        self,
        state: ClusterState,
        req: Request,
        nodes: NDArray[np.intp],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores of ``nodes`` (higher is better) and, for a shared-GPU pod, the GPU each
        node would use (``None``: the default best-fit GPU)."""

    def gpus_on(
        self, state: ClusterState, req: Request, node: int, rng: np.random.Generator
    ) -> tuple[int, ...]:
        row = state.gpu_left[node]
        if req.num == 0:
            return ()
        if req.shared:
            return (best_fit_gpu(row, req.milli),)
        return whole_gpus(row, req.num)

    def choose(
        self,
        state: ClusterState,
        req: Request,
        rng: np.random.Generator,
        allowed: np.ndarray | None = None,
    ) -> Choice | None:
        """The best node (and GPUs) for ``req``, or ``None`` if none fits. ``allowed``, a
        boolean mask over nodes, adds constraints the cluster model does not know (a live
        job's tiers, sites or named nodes)."""
        nodes = state.feasible(req.cpu, req.mem, req.num, req.milli, req.spec)
        if allowed is not None:
            nodes = nodes[allowed[nodes]]
        if len(nodes) == 0:
            return None
        scores, gpu = self.score(state, req, nodes, rng)
        best = np.flatnonzero(scores == scores.max())
        if self.random_ties and len(best) > 1:
            k = int(best[rng.integers(len(best))])
        else:
            k = int(best[0])
        node = int(nodes[k])
        if gpu is not None and req.shared:
            return Choice(node, (int(gpu[k]),))
        return Choice(node, self.gpus_on(state, req, node, rng))


class RandomPolicy(Policy):
    """A uniformly random feasible node, and a random fitting GPU there."""

    name = "random"
    random_ties = True

    def score(
        self,
        state: ClusterState,
        req: Request,
        nodes: NDArray[np.intp],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return np.zeros(len(nodes)), None

    def gpus_on(
        self, state: ClusterState, req: Request, node: int, rng: np.random.Generator
    ) -> tuple[int, ...]:
        if req.shared:
            fit = np.flatnonzero(state.gpu_left[node] >= req.milli)
            return (int(fit[rng.integers(len(fit))]),)
        return super().gpus_on(state, req, node, rng)


class DotProdPolicy(Policy):
    """Tetris-style alignment of the (CPU, GPU) request with the node's free vector,
    normalised by the largest node; the artifact prefers the *smallest* dot product."""

    name = "dotprod"

    def score(
        self,
        state: ClusterState,
        req: Request,
        nodes: NDArray[np.intp],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        cpu = state.cpu_left[nodes] / MAX_SPEC_CPU * (req.cpu / MAX_SPEC_CPU)
        gpu = state.gpu_left[nodes].sum(axis=1) / MAX_SPEC_GPU * (req.gpu_total / MAX_SPEC_GPU)
        return _trunc(MAX_SCORE * (1.0 - (cpu + gpu) / 2.0)), None


class GpuClusteringPolicy(Policy):
    """Put pods of the same GPU kind (shared, 1-GPU, 2-GPU, ...) together; within a tier
    prefer nodes with less free GPU."""

    name = "clustering"

    def score(
        self,
        state: ClusterState,
        req: Request,
        nodes: NDArray[np.intp],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if req.num == 0:
            return np.zeros(len(nodes), dtype=np.int64), None
        tag = 0 if req.shared else req.num
        tags = state.tags[nodes]
        kinds = (tags > 0).sum(axis=1)
        mine = tags[:, tag] > 0
        tier = np.where(mine, np.where(kinds == 1, 3, 2), np.where(kinds == 0, 1, 0))
        left = state.gpu_left[nodes].sum(axis=1)
        quarter = MAX_SCORE // 4
        return quarter * (MAX_SPEC_GPU - left) // MAX_SPEC_GPU + quarter * tier, None


class GpuPackingPolicy(Policy):
    """Prefer, in order: sharing an already used GPU (the fuller the better), whole free
    GPUs on a used node, then an idle node (the fewer GPUs the better)."""

    name = "packing"

    def score(
        self,
        state: ClusterState,
        req: Request,
        nodes: NDArray[np.intp],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if req.num == 0:
            return np.zeros(len(nodes), dtype=np.int64), None
        left = state.gpu_left[nodes]
        free = (left == MILLI).sum(axis=1)
        idle = free == state.nodes.gpus[nodes]
        idle_score = np.maximum(MAX_SCORE // 3 - free, free)
        if req.shared:
            fit = np.where(left >= req.milli, left, MILLI + 1)
            v = fit.min(axis=1)  # best-fit GPU's free milli
            used = np.maximum(MAX_SCORE - (v * 100 // MILLI) // 10, MAX_SCORE // 2)
            busy = np.where(v == MILLI, max(MAX_SCORE // 2 - 1, MAX_SCORE // 3), used)
        else:
            busy = np.full(len(nodes), max(MAX_SCORE // 2 - req.num, MAX_SCORE // 3))
        return np.where(idle, idle_score, busy), None


class BestFitPolicy(Policy):
    """Least weighted leftover (CPU, GPU) after placement, scores min-max normalised."""

    name = "bestfit"

    def score(
        self,
        state: ClusterState,
        req: Request,
        nodes: NDArray[np.intp],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        cpu = (state.cpu_left[nodes] - req.cpu) / MAX_SPEC_CPU * 0.5
        gpu = (state.gpu_left[nodes].sum(axis=1) - req.gpu_total) / MAX_SPEC_GPU * 0.5
        raw = _trunc((1.0 - (cpu + gpu)) * MAX_SCORE)
        lo, hi = raw.min(), raw.max()
        if hi == lo:
            return np.zeros(len(nodes), dtype=np.int64), None
        return (raw - lo) * MAX_SCORE // (hi - lo), None


class _FragDelta(Policy):
    """Shared machinery of fragmentation-gradient policies: the fragmentation increase of
    every candidate (node, GPU) placement, read from a per-shape cache."""

    def __init__(self, typical: TypicalPods, *, random_ties: bool | None = None) -> None:
        super().__init__(typical, random_ties=random_ties)
        self.deltas = DeltaCache(typical)

    def frag_increase(
        self, state: ClusterState, req: Request, nodes: NDArray[np.intp]
    ) -> NDArray[np.float64]:
        """For whole-GPU and CPU-only pods: ``(len(nodes),)`` increases. For a shared pod:
        ``(len(nodes), MAX_GPUS)`` increases per GPU choice (``inf`` where it does not fit)."""
        return self.deltas.increase(state, (req.cpu, req.num, req.milli))[nodes]


class FgdPolicy(_FragDelta):
    """Fragmentation Gradient Descent: the placement that increases the expected
    fragmentation least, scored as the artifact does (``int(100·sigmoid(-Δ/1000))``)."""

    name = "fgd"

    def score(
        self,
        state: ClusterState,
        req: Request,
        nodes: NDArray[np.intp],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        delta = self.frag_increase(state, req, nodes)
        scores = _trunc(MAX_SCORE / (1.0 + np.exp(np.minimum(delta, 1e5) / 1000.0)))
        if req.shared:
            scores = np.where(np.isinf(delta), -1, scores)
            gpu = scores.argmax(axis=1)  # first GPU with the best score
            return scores.max(axis=1), gpu
        return scores, None


class AnypuPolicy(_FragDelta):
    """Ours: FGD's fragmentation increase, exact rather than bucketed into 0–100, plus

    - the increase of GPU milli *stranded* by CPU or memory (:func:`stranded`). On openb
      the GPU nodes run out of CPU before GPU (an 8-GPU G2 node has 12 cores per GPU, a
      whole-GPU pod asks ~11), and FGD, blind to that until a typical pod stops fitting,
      spends G2 cores on CPU-only pods that the CPU-rich T4 nodes could take;
    - for a pod that accepts any GPU model, the milli it takes times the *scarcity* of the
      node's model (:class:`Scarcity`), so that it leaves oversubscribed models to the
      pods that can run nowhere else.

    All three are in expected GPU milli, so they add without weights. Ties go to node order.
    """

    name = "anypu"

    def __init__(self, typical: TypicalPods, *, random_ties: bool | None = None) -> None:
        super().__init__(typical, random_ties=random_ties)
        self._scarcity: Scarcity | None = None

    def _model_cost(
        self, state: ClusterState, req: Request, nodes: NDArray[np.intp]
    ) -> NDArray[np.float64]:
        models = state.nodes.models
        if self._scarcity is None or self._scarcity.n_models != len(models):
            self._scarcity = Scarcity(self.typical, len(models))
        if not self._scarcity or req.spec or not req.num:
            return np.zeros(len(nodes))
        model = state.nodes.model
        has = model >= 0
        free = state.gpu_left[has].sum(axis=1)
        scarcity = self._scarcity(np.bincount(model[has], weights=free, minlength=len(models)))
        per_milli: NDArray[np.float64] = np.where(
            has[nodes], scarcity[np.maximum(model[nodes], 0)], 0.0
        )
        return req.gpu_total * per_milli

    def cost(
        self, state: ClusterState, req: Request, nodes: NDArray[np.intp]
    ) -> NDArray[np.float64]:
        """Fragmentation, stranding and scarcity increase of placing ``req`` on each of
        ``nodes``: ``(len(nodes),)``, or ``(len(nodes), MAX_GPUS)`` per GPU for a shared
        pod (``inf`` where the GPU lacks the milli). Lower is better."""
        typ = self.typical
        delta = self.frag_increase(state, req, nodes)
        free = state.gpu_left[nodes].sum(axis=1).astype(np.float64)
        cpu = state.cpu_left[nodes].astype(np.float64)
        mem = state.mem_left[nodes].astype(np.float64)
        per = (typ.cpu_per_milli, typ.mem_per_milli)
        extra = stranded(free - req.gpu_total, cpu - req.cpu, mem - req.mem, *per) - stranded(
            free, cpu, mem, *per
        )
        extra += self._model_cost(state, req, nodes)
        return delta + (extra[:, None] if req.shared else extra)

    def score(
        self,
        state: ClusterState,
        req: Request,
        nodes: NDArray[np.intp],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        scores = -self.cost(state, req, nodes)
        if req.shared:
            gpu = scores.argmax(axis=1)  # -inf where the GPU lacks the milli
            return scores.max(axis=1), gpu
        return scores, None


GapRuleName = Literal["effective", "smallest", "plain"]


class AnypuSSPolicy(AnypuPolicy):
    """anypu plus the Sum-of-Squares bin-packing rule (:mod:`._sumsq`) for sharing pods.

    A sharing pod's cost on a GPU is anypu's (fragmentation, stranding and scarcity
    increase, in expected milli) plus ``weight`` × the increase of ``Σ_h N(h)²``, where
    ``N(h)`` counts the GPUs partially filled with ``h`` milli free. SS wants every gap
    either filled or shared by few GPUs; anypu still weighs CPU, memory and GPU model, which
    SS cannot see. On openb's default trace (seeds 42–46, paired with anypu) weights 1, 3,
    10 and 100 gained +0.14 to +0.16 points at 100 % arrival, 0.3 only +0.07, and
    ``weight=None`` (SS first, anypu's cost among equals) +0.13.

    ``rule`` (:class:`GapRule`): ``effective`` merges each gap into the largest sum of
    typical sharing sizes it holds and closes gaps no typical pod fits; ``smallest`` only
    closes those (+0.11 with ``weight=None``); ``plain`` counts all 999 gaps, as the paper's
    SS does, and lost 1.5 points to anypu on seed 42, presumably because it also counts the
    many dead 30–130-milli gaps (two 470s, 650 + 320, ...) and places pods to even them out.
    ``plan`` also books the imaginary waste items of :func:`waste_plan` (SS*-like): +0.15
    with ``weight=None`` and ``plain``, +0.03 to +0.10 with ``weight=1`` (seeds 42 and 46),
    so no better than the default. Whole-GPU and CPU-only pods change no partial GPU's gap:
    anypu places them.
    """

    name = "anypu-ss"

    def __init__(
        self,
        typical: TypicalPods,
        *,
        random_ties: bool | None = None,
        weight: float | None = 1.0,
        rule: GapRuleName = "effective",
        plan: bool = False,
    ) -> None:
        super().__init__(typical, random_ties=random_ties)
        shared = (typical.num == 1) & (typical.milli < MILLI)
        sizes = typical.milli[shared].tolist()
        self.waste = waste_plan(sizes, typical.freq[shared].tolist()) if plan else {}
        fillers = sorted({*sizes, *self.waste})  # imaginary items fill gaps too
        if rule == "effective":
            self.rule = GapRule(fillers)
        elif rule == "smallest":
            self.rule = GapRule(smallest=fillers[0] if fillers else 1)
        elif rule == "plain":
            self.rule = GapRule()
        else:
            raise ValueError(f"unknown gap rule {rule!r}: effective, smallest or plain")
        self.weight = weight
        self.gaps = GapCounts()
        self._credit = dict.fromkeys(self.waste, 0.0)

    def _book_waste(self) -> None:
        """One sharing pod's worth of imaginary waste items, each reserved where SS puts it."""
        for gap, rate in self.waste.items():
            self._credit[gap] += rate
            while self._credit[gap] >= 1.0:
                self._credit[gap] -= 1.0
                if not self.gaps.reserve(self.rule, gap):
                    # Nowhere to put it now: drop it rather than let a backlog pile onto
                    # the next GPUs that open.
                    self._credit[gap] = 0.0

    def score(
        self,
        state: ClusterState,
        req: Request,
        nodes: NDArray[np.intp],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if not req.shared:
            return super().score(state, req, nodes, rng)
        cost = self.cost(state, req, nodes)
        counts = self.gaps.sync(state)
        if self.waste:
            self._book_waste()
        ss = self.rule.increase(counts, state.gpu_left[nodes], self.gaps.view(nodes), req.milli)
        if self.weight is None:
            total = np.where(ss == ss.min(), cost, np.inf)
        else:
            total = cost + self.weight * ss
        scores = -total
        gpu = scores.argmax(axis=1)  # -inf where the GPU lacks the milli
        return scores.max(axis=1), gpu


POLICIES: tuple[type[Policy], ...] = (
    RandomPolicy,
    DotProdPolicy,
    GpuClusteringPolicy,
    GpuPackingPolicy,
    BestFitPolicy,
    FgdPolicy,
    AnypuPolicy,
)
# Every online policy a trace replay can run. ``POLICIES`` is what the live scheduler offers
# (``--policy``, whose help text lists them); ``anypu-ss`` is a trace-replay variant so far.
TRACE_POLICIES: tuple[type[Policy], ...] = (*POLICIES, AnypuSSPolicy)


def make_policy(name: str, typical: TypicalPods) -> Policy:
    """The policy registered under ``name``, ready to place pods."""
    for cls in TRACE_POLICIES:
        if cls.name == name:
            return cls(typical)
    known = ", ".join(cls.name for cls in TRACE_POLICIES)
    from anypu.errors import ConfigError

    raise ConfigError(f"unknown placement policy {name!r}; choose one of: {known}")
