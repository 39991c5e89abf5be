"""The Sum-of-Squares (SS) rule for online bin packing, with GPUs as the bins.

Csirik, Johnson, Kenyon, Orlin, Shor and Weber, "On the Sum-of-Squares algorithm for bin
packing", JACM 53(1), 2006: with integer item sizes and bins of size ``B``, let ``N(h)`` be
the number of partially filled bins with gap (free space) ``h``, ``0 < h < B``; put each
item where ``Σ_h N(h)²`` grows least. Its expected waste is ``O(√n)`` for any distribution
that can be packed perfectly and ``O(log n)`` where the optimum's waste is bounded, without
knowing the distribution. Here a bin is a GPU of ``MILLI`` and an item a sharing pod.

openb's sharing pods are far from perfectly packable (a lone 810-milli pod leaves 190 that
only the rare pods of ≤ 190 can use), and SS is not optimal for such distributions; the
paper's SS* is near-optimal for every discrete distribution by solving a linear program
over it. :func:`waste_plan` and the ``reserved`` milli of :class:`GapCounts` are our own
take on that idea: the configuration LP of the typical sharing pods says which gaps an
optimal packing leaves (190 beside an 810, 60 beside two 470s, ...) and how often; after
each sharing pod the policy books imaginary "waste" items of those sizes at those rates and
reserves each on the partially filled GPU where SS puts it, so the distribution SS sees
packs perfectly. A reservation only changes the gaps SS counts; a real pod may still take
the milli, which then stops being reserved.

:class:`GapCounts` keeps ``N(h)`` of a live :class:`ClusterState`. A placement changes one
node, so only that node's (at most ``MAX_GPUS``) GPUs are re-counted; which nodes changed is
read from ``ClusterState.version``, as the fragmentation caches do, so binds and releases
made outside the policy (moves, a trial copy) are counted too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from anypu.placement.gpushare._cluster import MILLI, ClusterState

__all__ = ["GapCounts", "GapRule", "waste_plan"]


class GapRule:
    """Which gaps the sum counts, and which gaps it treats as one.

    ``sizes`` empty: every gap ``smallest..MILLI-1`` on its own (``smallest`` = 1: plain
    SS). Otherwise a gap ``h`` counts as its *effective* gap, the largest sum of ``sizes``
    (repeats allowed) that fits in ``h``: GPUs with 190 and 170 free are the same bin to a
    workload whose smallest sharing request is 160, and a GPU with less free than every
    size is closed (its gap is waste whatever comes next, so how many such GPUs there are
    is no reason to place a pod elsewhere). This is SS restricted to the gaps the
    distribution can fill.
    """

    def __init__(self, sizes: Sequence[int] = (), smallest: int = 1) -> None:
        self.effective = _effective_gaps(tuple(int(s) for s in sizes), smallest)

    def terms(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per raw gap ``h``, the change of ``Σ_e N(e)²`` when one GPU leaves gap ``h`` and
        when one enters it, given :class:`GapCounts`' per-gap ``counts``: ``1 - 2N(e)`` and
        ``1 + 2N(e)`` for ``e`` the effective gap of ``h``, 0 where ``e`` is not counted
        (closed, or ``h = MILLI``: an empty GPU is no partial bin)."""
        merged = np.bincount(self.effective, weights=counts, minlength=MILLI + 1)
        n = merged.astype(np.int64)[self.effective]
        counted = self.effective > 0
        leave = np.where(counted, 1 - 2 * n, 0)
        leave[MILLI] = 0
        return leave, np.where(counted, 1 + 2 * n, 0)

    def change(
        self, terms: tuple[np.ndarray, np.ndarray], before: np.ndarray, after: np.ndarray
    ) -> np.ndarray:
        """Increase of ``Σ_e N(e)²`` when GPUs move from raw gap ``before`` to ``after``
        (nothing where both are the same effective gap)."""
        leave, enter = terms
        out = leave[before] + enter[after]
        return np.where(self.effective[before] == self.effective[after], 0, out)

    def increase(
        self,
        counts: np.ndarray,
        free: NDArray[np.int64],
        reserved: NDArray[np.int64],
        milli: int,
    ) -> NDArray[np.float64]:
        """The SS increase of a real pod of ``milli`` on each GPU (``free`` and ``reserved``
        milli, any shape, as :meth:`GapCounts.view` gives); ``inf`` where it does not fit.
        The pod may take reserved milli: the reservation shrinks to what is left."""
        terms = self.terms(counts)
        if not reserved.any():
            # The common case: the increase depends on the GPU's free milli alone, so
            # tabulate it over 0..MILLI and look every GPU up once.
            gap = np.arange(milli, MILLI + 1)
            table: NDArray[np.float64] = np.full(MILLI + 1, np.inf)
            table[milli:] = self.change(terms, gap, gap - milli)
            return table[free]
        fits = free >= milli
        before = np.where(fits, free - reserved, 0)
        after = np.maximum(np.where(fits, free - milli, 0) - reserved, 0)
        return np.where(fits, self.change(terms, before, after).astype(np.float64), np.inf)


@functools.lru_cache(maxsize=64)
def _effective_gaps(sizes: tuple[int, ...], smallest: int) -> NDArray[np.int64]:
    """``GapRule.effective`` (read-only, shared): the reachability sweep is a thousand
    Python steps, and the live scheduler builds a rule every round for the same few
    workloads."""
    effective = np.arange(MILLI + 1, dtype=np.int64)
    effective[:smallest] = 0
    if sizes:
        reach = np.zeros(MILLI + 1, dtype=bool)
        reach[0] = True
        for total in range(1, MILLI + 1):
            reach[total] = any(0 < s <= total and reach[total - s] for s in sizes)
        effective = np.maximum.accumulate(np.where(reach, np.arange(MILLI + 1), 0))
    effective.flags.writeable = False
    return effective


class GapCounts:
    """``N(h)``, ``counts[h]``, of the GPUs that hold a pod and have ``h`` milli free and
    unreserved, ``0 < h``; ``reserved[n, g]`` is milli that imaginary waste items hold on
    GPU ``g`` of node ``n`` (only ever on a GPU that holds a real pod)."""

    def __init__(self) -> None:
        self.counts = np.zeros(MILLI + 1, dtype=np.int64)
        self.reserved = np.zeros((0, 0), dtype=np.int64)
        self._free: NDArray[np.int64] | None = None
        self._seen: NDArray[np.int64] | None = None
        self._nodes: object = None

    def _gaps(self, free: NDArray[np.int64], reserved: NDArray[np.int64]) -> NDArray[np.int64]:
        # An empty GPU (MILLI free) is no partial bin; a full one or a slot the node lacks
        # (0 free) has no gap.
        gap = free - reserved
        return gap[(gap > 0) & (free < MILLI)]

    def sync(self, state: ClusterState) -> NDArray[np.int64]:
        """The counts for ``state`` now (the object's own array: read it, never write)."""
        if self._nodes is not state.nodes or self._free is None or self._seen is None:
            # Versions are unique per process, so a state over the same node table (a trial
            # copy, or a fresh state whose untouched nodes are all version 0) is followed by
            # its changed nodes alone; another table starts over.
            self._free = state.gpu_left.copy()
            self._seen = state.version.copy()
            self._nodes = state.nodes
            self.reserved = np.zeros_like(self._free)
            self.counts = np.bincount(self._gaps(self._free, self.reserved), minlength=MILLI + 1)
            return self.counts
        stale = np.flatnonzero(self._seen != state.version)
        if len(stale):
            np.subtract.at(self.counts, self._gaps(self._free[stale], self.reserved[stale]), 1)
            fresh = state.gpu_left[stale]
            # A real pod that took reserved milli ends that much of the reservation; an
            # emptied GPU holds none.
            kept = np.minimum(self.reserved[stale], fresh)
            self.reserved[stale] = np.where(fresh == MILLI, 0, kept)
            np.add.at(self.counts, self._gaps(fresh, self.reserved[stale]), 1)
            self._free[stale] = fresh
            self._seen[stale] = state.version[stale]
        return self.counts

    def reserve(self, rule: GapRule, milli: int) -> bool:
        """Reserve an imaginary item of ``milli`` where SS puts it among the GPUs that hold a
        real pod and have that much unreserved (first such GPU on ties); call after
        :meth:`sync`. ``False`` if none has room (it never opens an empty GPU, which
        whole-GPU pods need)."""
        if self._free is None:
            return False
        gap = self._free - self.reserved
        ok = (gap >= milli) & (self._free < MILLI)
        if not ok.any():
            return False
        where = np.flatnonzero(ok.ravel())
        before = gap.ravel()[where]
        change = rule.change(rule.terms(self.counts), before, before - milli)
        k = int(where[np.argmin(change)])
        node, gpu = divmod(k, self.reserved.shape[1])
        old = int(gap[node, gpu])
        self.counts[old] -= 1
        if old - milli > 0:
            self.counts[old - milli] += 1
        self.reserved[node, gpu] += milli
        return True

    def view(self, nodes: NDArray[np.intp]) -> NDArray[np.int64]:
        """Reserved milli of ``nodes``' GPUs (zeros before the first :meth:`sync`)."""
        if self.reserved.shape[0] == 0:
            return np.zeros((len(nodes), 1), dtype=np.int64)
        return self.reserved[nodes]


def waste_plan(sizes: Sequence[int], freq: Sequence[float]) -> dict[int, float]:
    """Imaginary items per sharing pod that make ``sizes`` (arriving with relative
    frequencies ``freq``) perfectly packable: ``{gap: rate}``.

    Solves the configuration LP (patterns: multisets of sizes within ``MILLI``; cover each
    size's frequency exactly; fewest GPUs) and returns, per leftover gap of the patterns
    it uses, how many such GPUs it opens per pod. Empty if every size is ``MILLI``.
    """
    from ortools.linear_solver import pywraplp

    items = sorted({int(s) for s, f in zip(sizes, freq, strict=True) if 0 < s < MILLI and f})
    if not items:
        return {}
    share = {s: 0.0 for s in items}
    for s, f in zip(sizes, freq, strict=True):
        if s in share:
            share[s] += float(f)
    total = sum(share.values())
    patterns: list[tuple[int, ...]] = []

    def extend(i: int, room: int, counts: tuple[int, ...]) -> None:
        if i == len(items):
            if any(counts):
                patterns.append(counts)
            return
        for k in range(room // items[i] + 1):
            extend(i + 1, room - k * items[i], (*counts, k))

    extend(0, MILLI, ())
    solver = pywraplp.Solver.CreateSolver("GLOP")
    x = [solver.NumVar(0.0, solver.infinity(), f"p{j}") for j in range(len(patterns))]
    for i, s in enumerate(items):
        solver.Add(
            solver.Sum([p[i] * v for p, v in zip(patterns, x, strict=True)]) == share[s] / total
        )
    solver.Minimize(solver.Sum(x))
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return {}
    plan: dict[int, float] = {}
    for p, v in zip(patterns, x, strict=True):
        gap = MILLI - sum(k * s for k, s in zip(p, items, strict=True))
        if gap > 0 and v.solution_value() > 1e-9:
            plan[gap] = plan.get(gap, 0.0) + v.solution_value()
    return plan
