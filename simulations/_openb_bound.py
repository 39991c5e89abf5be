"""A certified upper bound on the GPU milli any placement can allocate in an openb replay.

Why: issue 3 asks for ≤ 3.5 % unallocated GPU at 100 % arrival. In the protocol
(:mod:`anypu.simulations._openb_protocol`) pods never leave, so after arrival ``i`` the
allocation of *any* policy (online, batched, with moves, or offline) is at most the most GPU
milli that a placement of pods ``0..i`` all at once can hold. We bound that by a linear
program, and certify each bound by weak duality, so no solver tolerance enters it.

Maths. Pods are grouped into *types* ``t`` (``n_t`` of them arrived) with ``k_t`` GPUs of
``m_t`` milli each (``w_t = k_t m_t``); ``m_t < 1000`` (so ``k_t = 1``) is a sharing pod of
size ``m_t``, else it takes ``k_t`` whole GPUs. Nodes are grouped into *groups* ``g`` of
``G_g`` GPUs, ``C_g`` milli-cores and ``M_g`` MiB. A *pattern* ``p`` is what one GPU holds: a
multiset of sharing sizes, ``a_sp`` of size ``s``, with ``Σ_s a_sp s ≤ 1000``::

    max  Σ_tg w_t x_tg
    s.t. Σ_g x_tg ≤ n_t                                       (α_t)   each type
         Σ_{t of size s} x_tg ≤ Σ_p a_sp y_gp                 (u_gs)  slots of size s on g
         Σ_{t whole} k_t x_tg + Σ_p y_gp ≤ G_g                (v_g)   GPUs of g
         Σ_t cpu_t x_tg ≤ C_g,  Σ_t mem_t x_tg ≤ M_g          (c_g, μ_g)  ("node" only)
         x, y ≥ 0,  x_tg only where type t fits a node of g.

Relaxation ``gpu`` has one group (every GPU) and no CPU or memory rows: the pure GPU
configuration LP. Relaxation ``node`` has a group per node shape (GPU model, cores, memory,
GPUs per node), keeps each group's CPU and memory, and lets a type use a group only if one
node of it could hold one such pod alone (GPU count, cores, memory, ``gpu_spec``).

Why valid: any real placement of a subset of the pods gives a feasible point (``x_tg`` =
pods of ``t`` placed on ``g``'s nodes, ``y_gp`` = ``g``'s GPUs holding exactly ``p``; a GPU
holds ≤ 1000 milli, a whole-GPU pod needs GPUs that hold nothing else, a node's pods fit
its cores and memory, so do their sums over a group) with objective = allocated milli.
Dropping integrality, node boundaries within a group and, for ``gpu``, CPU/memory/model
only enlarges the set. CPU-only pods are left out: leaving a pod unplaced frees resources.

Column generation prices ``y_gp`` with a bounded knapsack over sizes (values ``u_gs``, DP
on milli 0..1000; ``a_sp`` ≤ the pods of size ``s`` that fit ``g``). Certificate: take the
solver's ``u, c, μ`` (rounded to multiples of ``1/SCALE`` milli, clipped at 0), set
``v_g`` = max(solver's ``v_g``, best pattern value under ``u_g``) and
``α_t = max(0, max_g [w_t − (u_{g,m_t} if sharing else k_t v_g) − cpu_t c_g − mem_t μ_g])``:
every dual row then holds, so by weak duality
``Σ_t n_t α_t + Σ_g (G_g v_g + C_g c_g + M_g μ_g)`` bounds the allocation, computed in exact
integers whatever the solver's accuracy. The same duals stay feasible for a shorter prefix
(only ``n_t`` shrinks), which bounds every arrival of the protocol's 100 % window at once.

The other side, a real placement that comes close to the bound, is
:mod:`anypu.simulations._openb_offline`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ortools.linear_solver import pywraplp

from anypu.errors import AnypuError, ConfigError
from anypu.placement.gpushare import MILLI, NodeTable, PodTable
from anypu.simulations._openb_protocol import inflate

__all__ = [
    "RELAXATIONS",
    "BoundModel",
    "Certificate",
    "SeedBound",
    "allocation_bound",
    "arrivals_within",
    "bound_seed",
    "window_arrivals",
]

RELAXATIONS = ("gpu", "node")
SCALE = 1 << 24  # certificate duals are integers in units of milli / SCALE
_EPS = 1e-9  # reduced cost below which a pattern is not worth a column
_MAX_ROUNDS = 500
_CORE, _GIB = 1000, 1024  # the LP holds cores and GiB: GLOP is happier with O(1) numbers


@dataclass(frozen=True)
class _Groups:
    """Node groups the relaxation keeps apart; per group totals and the per-node shape."""

    gpus: np.ndarray  # total GPUs
    cpu: np.ndarray  # total milli-cores
    mem: np.ndarray  # total MiB
    node_gpus: np.ndarray  # one node's GPUs, cores, memory, model (-1: any, for "gpu")
    node_cpu: np.ndarray
    node_mem: np.ndarray
    model: np.ndarray
    of_node: np.ndarray  # group of each node (-1: no GPU)

    def __len__(self) -> int:
        return len(self.gpus)


def _groups(nodes: NodeTable, relaxation: str) -> _Groups:
    has_gpu = nodes.gpus > 0
    if relaxation == "gpu":
        big = np.array([np.iinfo(np.int64).max])
        total = np.array([int(nodes.gpus.sum())])
        widest = np.array([int(nodes.gpus.max())])
        of_node = np.where(has_gpu, 0, -1)
        return _Groups(total, big, big, widest, big, big, np.array([-1]), of_node)
    keys = np.stack([nodes.model, nodes.cpu, nodes.mem, nodes.gpus], axis=1)[has_gpu]
    shapes, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    count = np.bincount(inverse, minlength=len(shapes))
    of_node = np.full(len(nodes), -1, dtype=np.int64)
    of_node[has_gpu] = inverse
    return _Groups(
        gpus=shapes[:, 3] * count,
        cpu=shapes[:, 1] * count,
        mem=shapes[:, 2] * count,
        node_gpus=shapes[:, 3],
        node_cpu=shapes[:, 1],
        node_mem=shapes[:, 2],
        model=shapes[:, 0],
        of_node=of_node,
    )


@dataclass(frozen=True)
class _Types:
    """GPU pods grouped by what the relaxation tells apart; ``of[i]`` = type of pod ``i``
    (-1 for a CPU-only pod)."""

    num: np.ndarray
    milli: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    spec: np.ndarray
    of: np.ndarray

    def __len__(self) -> int:
        return len(self.num)

    @property
    def weight(self) -> np.ndarray:
        return self.num * self.milli

    @property
    def shared(self) -> np.ndarray:
        return self.milli < MILLI

    def counts(self, upto: int) -> np.ndarray:
        """Pods of each type among the first ``upto`` pods."""
        of = self.of[:upto]
        return np.bincount(of[of >= 0], minlength=len(self))


def _types(pods: PodTable, relaxation: str) -> _Types:
    gpu = pods.num_gpu > 0
    zero = np.zeros(len(pods), dtype=np.int64)
    cols = [pods.num_gpu, pods.gpu_milli]
    cols += [pods.cpu, pods.mem, pods.spec] if relaxation == "node" else [zero, zero, zero]
    keys = np.stack(cols, axis=1)
    if not gpu.any():
        empty = np.zeros(0, dtype=np.int64)
        return _Types(empty, empty, empty, empty, empty, np.full(len(pods), -1))
    shapes, inverse = np.unique(keys[gpu], axis=0, return_inverse=True)
    of = np.full(len(pods), -1, dtype=np.int64)
    of[gpu] = inverse.reshape(-1)
    return _Types(shapes[:, 0], shapes[:, 1], shapes[:, 2], shapes[:, 3], shapes[:, 4], of)


def _fits(types: _Types, groups: _Groups) -> np.ndarray:
    """``fits[t, g]``: one node of group ``g`` could hold one pod of type ``t`` alone."""
    ok = types.num[:, None] <= groups.node_gpus[None, :]
    ok &= types.cpu[:, None] <= groups.node_cpu[None, :]
    ok &= types.mem[:, None] <= groups.node_mem[None, :]
    model = groups.model[None, :]
    allowed = ((types.spec[:, None] >> np.maximum(model, 0)) & 1) == 1
    return ok & ((types.spec[:, None] == 0) | (model < 0) | ((model >= 0) & allowed))


def _knapsack(
    sizes: Sequence[int], bounds: Sequence[int], values: Sequence[float | int], exact: bool
) -> tuple[float | int, tuple[int, ...]]:
    """Best ``Σ a_s value_s`` over ``a_s ≤ bound_s`` with ``Σ a_s s ≤ 1000``, and its
    ``a``. Bounded copies are split in powers of two, so each item is taken once."""
    dtype = object if exact else np.float64  # object: Python ints, exact at any size
    items: list[tuple[int, int, int]] = []  # (size index, copies, milli)
    for k, (s, b, val) in enumerate(zip(sizes, bounds, values, strict=True)):
        if val <= 0 or b <= 0:
            continue
        left, chunk = b, 1
        while left > 0:
            take = min(chunk, left)
            items.append((k, take, take * s))
            left, chunk = left - take, chunk * 2
    dp = np.zeros(MILLI + 1, dtype=dtype)
    took = np.zeros((len(items), MILLI + 1), dtype=bool)
    for j, (k, copies, milli) in enumerate(items):
        if milli > MILLI:
            continue
        cand = dp[:-milli] + values[k] * copies if milli else dp
        better = cand > dp[milli:]
        took[j, milli:] = better
        dp[milli:] = np.where(better, cand, dp[milli:])
    best_c = int(np.argmax(dp))
    a = [0] * len(sizes)
    c = best_c
    for j in range(len(items) - 1, -1, -1):
        if took[j, c]:
            k, copies, milli = items[j]
            a[k] += copies
            c -= milli
    return dp[best_c], tuple(a)


@dataclass(frozen=True)
class _Duals:
    """The solver's duals per row family, in the LP's units (GPUs, cores, GiB)."""

    slot: list[list[float]]
    gpu: list[float]
    cpu: list[float]
    mem: list[float]


@dataclass(frozen=True)
class Certificate:
    """Integer duals: the bound on a prefix with type counts ``n`` is
    ``(n · alpha + const) // SCALE`` milli."""

    alpha: tuple[int, ...]
    const: int

    def bound(self, counts: np.ndarray) -> int:
        total = sum(int(n) * a for n, a in zip(counts.tolist(), self.alpha, strict=True) if n)
        return (total + self.const) // SCALE


class BoundModel:
    """The LP of one relaxation for the pods of one list; :meth:`solve` bounds the first
    ``upto`` of them. Patterns found for one prefix are kept for the next solve."""

    def __init__(
        self, nodes: NodeTable, pods: PodTable, relaxation: str = "node", headroom: float = 0.0
    ) -> None:
        """``headroom`` > 0 withholds that share of each group's CPU and memory: the
        optimum then is no longer a bound, but leaves room to round it into a placement."""
        if relaxation not in RELAXATIONS:
            raise ConfigError(f"unknown relaxation {relaxation!r}: choose from {RELAXATIONS}")
        self.relaxation = relaxation
        self.headroom = headroom
        self.groups = _groups(nodes, relaxation)
        self.types = _types(pods, relaxation)
        self.fits = _fits(self.types, self.groups)
        self.sizes = sorted({int(m) for m in self.types.milli[self.types.shared]})
        self._size_index = {s: k for k, s in enumerate(self.sizes)}
        # A pattern never holds more pods of a size than fit the group at all, so it is
        # bounded by the whole list's count: valid for every prefix of it.
        counts = self.types.counts(len(pods))
        self.pattern_bounds = np.zeros((len(self.groups), len(self.sizes)), dtype=np.int64)
        for t in np.flatnonzero(self.types.shared):
            k = self._size_index[int(self.types.milli[t])]
            self.pattern_bounds[self.fits[t], k] += counts[t]
        caps = np.array([MILLI // s for s in self.sizes], dtype=np.int64)
        self.pattern_bounds = np.minimum(self.pattern_bounds, caps[None, :])
        self.patterns = 0
        self.rounds = 0
        self.solution: list[float] = []  # the last LP's variable values (x, then y)
        self._build()

    def _build(self) -> None:
        solver = pywraplp.Solver.CreateSolver("GLOP")
        if solver is None:  # pragma: no cover - GLOP ships with every OR-Tools wheel
            raise ConfigError("OR-Tools lacks the GLOP LP solver")
        inf = solver.infinity()
        types, groups = self.types, self.groups
        node = self.relaxation == "node"
        self._count_rows = [solver.Constraint(-inf, 0.0) for _ in range(len(types))]
        self._gpu_rows = [solver.Constraint(-inf, float(g)) for g in groups.gpus]
        self._slot_rows = [
            [solver.Constraint(-inf, 0.0) for _ in self.sizes] for _ in range(len(groups))
        ]
        keep = 1.0 - self.headroom
        cpu_caps = [c / _CORE * keep for c in groups.cpu.tolist()] if node else []
        mem_caps = [m / _GIB * keep for m in groups.mem.tolist()] if node else []
        self._cpu_rows = [solver.Constraint(-inf, c) for c in cpu_caps]
        self._mem_rows = [solver.Constraint(-inf, m) for m in mem_caps]
        objective = solver.Objective()
        objective.SetMaximization()
        for t, g in zip(*np.nonzero(self.fits), strict=True):
            x = solver.NumVar(0.0, inf, "")
            objective.SetCoefficient(x, float(types.weight[t]) / MILLI)
            self._count_rows[t].SetCoefficient(x, 1.0)
            if types.shared[t]:
                self._slot_rows[g][self._size_index[int(types.milli[t])]].SetCoefficient(x, 1.0)
            else:
                self._gpu_rows[g].SetCoefficient(x, float(types.num[t]))
            if node:
                self._cpu_rows[g].SetCoefficient(x, float(types.cpu[t]) / _CORE)
                self._mem_rows[g].SetCoefficient(x, float(types.mem[t]) / _GIB)
        self._solver = solver
        self._seen: set[tuple[int, tuple[int, ...]]] = set()
        self.pattern_list: list[tuple[int, tuple[int, ...]]] = []  # y's columns, in order
        for g in range(len(groups)):  # start from one full-of-one-size pattern per size
            for k in range(len(self.sizes)):
                if self.pattern_bounds[g, k]:
                    a = [0] * len(self.sizes)
                    a[k] = int(self.pattern_bounds[g, k])
                    self._add_pattern(g, tuple(a))

    def _add_pattern(self, g: int, a: tuple[int, ...]) -> bool:
        if (g, a) in self._seen:
            return False
        self._seen.add((g, a))
        self.pattern_list.append((g, a))
        y = self._solver.NumVar(0.0, self._solver.infinity(), "")
        self._gpu_rows[g].SetCoefficient(y, 1.0)
        for k, n in enumerate(a):
            if n:
                self._slot_rows[g][k].SetCoefficient(y, -float(n))
        self.patterns += 1
        return True

    def solve(self, upto: int) -> tuple[float, Certificate]:
        """LP optimum (milli, as the solver reports it) and a certificate for the first
        ``upto`` pods of the list."""
        counts = self.types.counts(upto)
        for row, n in zip(self._count_rows, counts.tolist(), strict=True):
            row.SetUb(float(n))
        while True:
            status = self._solver.Solve()
            if status != pywraplp.Solver.OPTIMAL:
                raise AnypuError(f"GLOP did not reach an LP optimum (status {status})")
            self.rounds += 1
            # Read everything before adding a column: OR-Tools drops the solution on a change.
            lp = self._solver.Objective().Value() * MILLI
            duals = _Duals(
                slot=[[r.dual_value() for r in rows] for rows in self._slot_rows],
                gpu=[r.dual_value() for r in self._gpu_rows],
                cpu=[r.dual_value() for r in self._cpu_rows],
                mem=[r.dual_value() for r in self._mem_rows],
            )
            self.solution = [v.solution_value() for v in self._solver.variables()]
            added = 0
            for g in range(len(self.groups)):
                values = [max(0.0, u) for u in duals.slot[g]]
                best, a = _knapsack(self.sizes, self.pattern_bounds[g].tolist(), values, False)
                if best > duals.gpu[g] + _EPS:
                    added += self._add_pattern(g, a)
            if not added or self.rounds >= _MAX_ROUNDS:
                return lp, self._certificate(duals)

    def last_plan(self) -> tuple[np.ndarray, list[tuple[int, tuple[int, ...], float]]]:
        """The last LP's solution: ``x[t, g]`` and the patterns ``(g, a, y)`` in use."""
        fits = np.nonzero(self.fits)
        x = np.zeros(self.fits.shape)
        x[fits] = self.solution[: len(fits[0])]
        ys = self.solution[len(fits[0]) :]
        used = [
            (g, a, y)
            for (g, a), y in zip(self.pattern_list[: len(ys)], ys, strict=True)
            if y > _EPS
        ]
        return x, used

    def _certificate(self, duals: _Duals) -> Certificate:
        types, groups, node = self.types, self.groups, self.relaxation == "node"

        def scaled(value: float, per: float) -> int:
            return max(0, round(value * per))

        u = [[scaled(d, MILLI * SCALE) for d in row] for row in duals.slot]
        v = []
        for g, d in enumerate(duals.gpu):
            best, _ = _knapsack(self.sizes, self.pattern_bounds[g].tolist(), u[g], True)
            v.append(max(int(best), scaled(d, MILLI * SCALE)))
        # The LP's CPU row is in cores, so its dual is per core: per milli-core it is /1000.
        c = [scaled(d, MILLI * SCALE / _CORE) for d in duals.cpu]
        mu = [scaled(d, MILLI * SCALE / _GIB) for d in duals.mem]
        alpha = []
        for t in range(len(types)):
            need = 0
            for g in np.flatnonzero(self.fits[t]).tolist():
                if types.shared[t]:
                    paid = u[g][self._size_index[int(types.milli[t])]]
                else:
                    paid = int(types.num[t]) * v[g]
                if node:
                    paid += int(types.cpu[t]) * c[g] + int(types.mem[t]) * mu[g]
                need = max(need, int(types.weight[t]) * SCALE - paid)
            alpha.append(need)
        const = sum(int(n) * val for n, val in zip(groups.gpus.tolist(), v, strict=True))
        if node:
            const += sum(int(n) * val for n, val in zip(groups.cpu.tolist(), c, strict=True))
            const += sum(int(n) * val for n, val in zip(groups.mem.tolist(), mu, strict=True))
        return Certificate(tuple(alpha), const)


def allocation_bound(nodes: NodeTable, pods: PodTable, relaxation: str = "node") -> int:
    """Certified upper bound on the GPU milli any placement of ``pods`` (all at once) holds."""
    model = BoundModel(nodes, pods, relaxation)
    _, cert = model.solve(len(pods))
    return min(cert.bound(model.types.counts(len(pods))), int(pods.total_gpu_milli.sum()))


@dataclass(frozen=True)
class SeedBound:
    """One seed's bounds; percentages are of the cluster's GPU milli."""

    seed: int
    relaxation: str
    pods: int  # arrivals whose cumulative GPU request is within capacity
    gpu_pods: int
    arrived_pct: float  # their GPU request
    bound_milli: int  # certified bound on what any placement of them allocates
    lp_milli: float  # the LP optimum as GLOP reports it (≈ bound_milli)
    capacity_milli: int
    window_alloc_pct: float  # bound on the protocol's "alloc @100 %" (its window's mean)
    window: int  # arrivals in that window
    patterns: int
    seconds: float

    @property
    def alloc_pct(self) -> float:
        return self.bound_milli / self.capacity_milli * 100.0

    def as_json(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "relaxation": self.relaxation,
            "pods_arrived": self.pods,
            "gpu_pods_arrived": self.gpu_pods,
            "arrived_pct": round(self.arrived_pct, 4),
            "alloc_bound_pct": round(self.alloc_pct, 4),
            "unalloc_floor_pct": round(100.0 - self.alloc_pct, 4),
            "alloc_100_bound_pct": round(self.window_alloc_pct, 4),
            "unalloc_100_floor_pct": round(100.0 - self.window_alloc_pct, 4),
            "window_arrivals": self.window,
            "bound_milli": self.bound_milli,
            "lp_milli": round(self.lp_milli, 3),
            "capacity_milli": self.capacity_milli,
            "patterns": self.patterns,
            "seconds": round(self.seconds, 2),
        }


def _window(arrived_pct: np.ndarray, level: int = 100) -> np.ndarray:
    """The arrivals :func:`~anypu.simulations._openb_protocol.by_arrival` averages for
    ``level``: those whose arrived % rounds to it, else those within ±1."""
    key = np.round(arrived_pct)
    exact = np.flatnonzero(key == level)
    return exact if len(exact) else np.flatnonzero(np.abs(key - level) <= 1)


def window_arrivals(arrivals: PodTable, capacity_milli: int, level: int = 100) -> np.ndarray:
    """Indices of the arrivals the protocol averages for ``level`` % arrival."""
    return _window(np.cumsum(arrivals.total_gpu_milli) / capacity_milli * 100.0, level)


def arrivals_within(
    nodes: NodeTable, pods: PodTable, seed: int, ratio: float = 1.3
) -> tuple[PodTable, int]:
    """The protocol's arrivals for ``seed`` (shuffled and inflated to ``ratio``) and how
    many of them come before the GPU request first exceeds the cluster's capacity."""
    capacity = nodes.gpu_capacity_milli
    if capacity <= 0:
        raise ConfigError("the node list has no GPUs: nothing to bound")
    arrivals = inflate(pods, capacity, seed, ratio)
    requested = np.cumsum(arrivals.total_gpu_milli)
    return arrivals, int(np.searchsorted(requested, capacity, side="right"))


def bound_seed(
    nodes: NodeTable,
    pods: PodTable,
    seed: int,
    relaxation: str = "node",
    ratio: float = 1.3,
    anchors: int = 4,
) -> SeedBound:
    """Bounds for the arrivals of ``seed`` (inflated exactly as the protocol does).

    Two figures: the bound on the pods whose cumulative request is within capacity, and
    the bound on the protocol's ``alloc @100 %``, the mean allocation over the arrivals
    whose arrived % rounds to 100. Each of those arrivals is bounded by the best of the
    certificates solved at ``anchors`` evenly spread arrivals of the window (each is
    valid for every shorter prefix) and by its own arrived request.
    """
    started = time.perf_counter()
    capacity = nodes.gpu_capacity_milli
    arrivals, within = arrivals_within(nodes, pods, seed, ratio)
    requested = np.cumsum(arrivals.total_gpu_milli)
    window = _window(requested / capacity * 100.0)
    last = int(max(within, window[-1] + 1 if len(window) else 0))
    model = BoundModel(nodes, arrivals.take(np.arange(last)), relaxation)
    types = model.types
    lp, cert = model.solve(within)
    bound = min(cert.bound(types.counts(within)), int(requested[within - 1]) if within else 0)
    window_pct = float("nan")
    if len(window):
        spread = np.linspace(0, len(window) - 1, num=min(anchors, len(window))).round()
        certs = [cert] + [model.solve(int(window[int(j)]) + 1)[1] for j in np.unique(spread)]
        per_arrival = []
        for i in window.tolist():
            counts = types.counts(i + 1)
            best = min(c.bound(counts) for c in certs)
            per_arrival.append(min(best, int(requested[i]), capacity))
        window_pct = float(np.mean(per_arrival)) / capacity * 100.0
    return SeedBound(
        seed=seed,
        relaxation=relaxation,
        pods=within,
        gpu_pods=int((arrivals.num_gpu[:within] > 0).sum()),
        arrived_pct=float(requested[within - 1]) / capacity * 100.0 if within else 0.0,
        bound_milli=bound,
        lp_milli=lp,
        capacity_milli=capacity,
        window_alloc_pct=window_pct,
        window=len(window),
        patterns=model.patterns,
        seconds=time.perf_counter() - started,
    )
