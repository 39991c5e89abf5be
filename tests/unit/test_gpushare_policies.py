"""Fragmentation on hand-computed examples and each policy's choice on tiny clusters."""

from __future__ import annotations

import numpy as np
import pytest

from anypu.errors import ConfigError
from anypu.placement.gpushare import (
    POLICIES,
    ClusterState,
    DeltaCache,
    FragCache,
    Request,
    Scarcity,
    fragmentation,
    fragmentation_increase,
    make_policy,
    parse_nodes,
    parse_pods,
    stranded,
    typical_pods,
)
from anypu.placement.gpushare._policies import AnypuSSPolicy
from anypu.placement.gpushare._sumsq import GapCounts, GapRule, waste_plan
from anypu.simulations._openb_protocol import replay


def _nodes(*specs: tuple[int, int, str]):
    rows = [
        {"sn": f"n{i}", "cpu_milli": str(cpu), "memory_mib": "65536", "gpu": str(g), "model": m}
        for i, (cpu, g, m) in enumerate(specs)
    ]
    return parse_nodes(rows)


def _pods(shapes, models=("T4",)):
    rows = [
        {"name": f"p{i}", "cpu_milli": str(c), "memory_mib": "1024", "num_gpu": str(n),
         "gpu_milli": str(m), "gpu_spec": s}
        for i, (c, n, m, s) in enumerate(shapes)
    ]  # fmt: skip
    return parse_pods(rows, models)


def test_fragmentation_matches_hand_computation() -> None:
    # Typical pods: A (2 cores, 600 milli) 50 %, B (20 cores, 100 milli) 25 %, CPU-only 25 %.
    pods = _pods([(2000, 1, 600, ""), (2000, 1, 600, ""), (20000, 1, 100, ""), (1000, 0, 0, "")])
    typ = typical_pods(pods, popularity=100)
    # Node: 10 cores, GPUs with 1000, 500, 200 milli free (1700 in all).
    frag = fragmentation(np.array([10000]), np.array([[1000, 500, 200, 0]]), np.array([0]), typ)
    # A fits (one GPU >= 600): the 500 + 200 it cannot use count, 0.5 * 700 = 350.
    # B lacks CPU: all 1700 count, 0.25 * 1700 = 425. CPU-only pods: 0.25 * 1700 = 425.
    assert frag[0] == pytest.approx(1200.0)


def test_fragmentation_counts_inaccessible_models_whole() -> None:
    pods = _pods([(1000, 1, 500, "V100")], models=("T4", "V100"))
    typ = typical_pods(pods, popularity=100)
    frag = fragmentation(
        np.array([8000, 8000]), np.array([[1000, 1000], [1000, 300]]), np.array([0, 1]), typ
    )
    assert frag.tolist() == [2000.0, 300.0]


def test_typical_pods_keep_most_popular_until_threshold() -> None:
    pods = _pods([(1000, 1, 500, "")] * 6 + [(1000, 1, 1000, "")] * 3 + [(2000, 1, 200, "")])
    typ = typical_pods(pods, popularity=80)
    assert typ.milli.tolist() == [500, 1000]
    assert typ.freq.tolist() == pytest.approx([6 / 9, 3 / 9])


def test_frag_cache_tracks_bound_nodes_only() -> None:
    nodes = _nodes((8000, 2, "T4"), (8000, 2, "T4"))
    typ = typical_pods(_pods([(1000, 1, 1000, "")]), popularity=100)
    state = ClusterState(nodes)
    cache = FragCache(typ)
    assert cache.total(state) == 0.0
    state.bind(0, (0,), 1000, 10, 300)
    # GPU 0 now has 700 free, useless to a whole-GPU typical pod.
    assert cache.node_frag(state).tolist() == [700.0, 0.0]


def _choose(name, state, req, typ, seed=0):
    return make_policy(name, typ).choose(state, req, np.random.default_rng(seed))


@pytest.fixture
def two_nodes():
    nodes = _nodes((8000, 2, "T4"), (8000, 2, "T4"))
    state = ClusterState(nodes)
    state.bind(1, (1,), 1000, 10, 600)  # node 1, GPU 1: 400 milli free
    typ = typical_pods(_pods([(1000, 1, 1000, "")]), popularity=100)
    return state, typ


@pytest.mark.parametrize("name", ["bestfit", "packing", "fgd", "anypu", "anypu-ss"])
def test_share_pod_fills_the_used_gpu(two_nodes, name) -> None:
    state, typ = two_nodes
    choice = _choose(name, state, Request(1000, 10, 1, 300), typ)
    assert (choice.node, choice.gpus) == (1, (1,))


def test_fgd_minimises_fragmentation_increase(two_nodes) -> None:
    state, typ = two_nodes
    req = Request(1000, 10, 1, 300)
    choice = _choose("fgd", state, req, typ)
    options = [(n, g) for n in range(2) for g in range(2) if state.gpu_left[n, g] >= 300]
    totals = {}
    for n, g in options:
        trial = state.copy()
        trial.bind(n, (g,), req.cpu, req.mem, req.milli)
        totals[(n, g)] = FragCache(typ).total(trial)
    assert totals[(choice.node, choice.gpus[0])] == min(totals.values())


def test_clustering_groups_pods_of_one_kind() -> None:
    nodes = _nodes((8000, 2, "T4"), (8000, 2, "T4"), (8000, 2, "T4"))
    state = ClusterState(nodes)
    state.bind(0, (0,), 1000, 10, 1000)  # node 0 holds a whole-GPU pod
    state.bind(2, (0,), 1000, 10, 200)  # node 2 holds a sharing pod
    typ = typical_pods(_pods([(1000, 1, 1000, "")]), popularity=100)
    assert _choose("clustering", state, Request(1000, 10, 1, 300), typ).node == 2
    assert _choose("clustering", state, Request(1000, 10, 1, 1000), typ).node == 0


def test_dotprod_prefers_smallest_alignment() -> None:
    nodes = _nodes((64000, 2, "T4"), (8000, 2, "T4"))
    typ = typical_pods(_pods([(1000, 1, 1000, "")]), popularity=100)
    assert _choose("dotprod", ClusterState(nodes), Request(4000, 10, 1, 1000), typ).node == 1


def _cpu_stranding_case():
    # Node 0 is CPU-poor (16 cores for 2 GPUs), node 1 CPU-rich; GPU pods ask 8 cores each.
    nodes = _nodes((16000, 2, "T4"), (104000, 2, "T4"))
    workload = _pods([(8000, 1, 1000, "")] * 4 + [(8000, 0, 0, "")] * 2)
    return nodes, workload, typical_pods(workload, popularity=100)


def test_anypu_sends_cpu_only_pods_where_cpu_is_in_surplus() -> None:
    nodes, _, typ = _cpu_stranding_case()
    req = Request(8000, 10)
    # Neither node's fragmentation moves (a GPU pod still fits on both), so FGD takes
    # the first node and leaves one of its GPUs without CPU; anypu sees the stranding.
    assert _choose("fgd", ClusterState(nodes), req, typ).node == 0
    assert _choose("anypu", ClusterState(nodes), req, typ).node == 1


def test_anypu_places_every_pod_where_fgd_strands_a_gpu() -> None:
    nodes, workload, typ = _cpu_stranding_case()
    # Two CPU-only pods arrive first, then four whole-GPU pods: exactly enough for all.
    arrivals = workload.take(np.array([4, 5, 0, 1, 2, 3]))
    placed = {
        name: replay(nodes, arrivals, make_policy(name, typ), 0, typ).placed.sum()
        for name in ("fgd", "anypu")
    }
    assert placed == {"fgd": 5, "anypu": 6}


def test_delta_cache_matches_fresh_computation_after_binds() -> None:
    nodes = _nodes((32000, 4, "T4"), (16000, 2, "T4"), (64000, 8, "T4"))
    typ = typical_pods(
        _pods([(2000, 1, 500, ""), (4000, 1, 1000, ""), (1000, 2, 1000, ""), (1000, 0, 0, "")]),
        popularity=100,
    )
    state = ClusterState(nodes)
    cache = DeltaCache(typ)
    shapes = [(2000, 1, 500), (4000, 1, 1000), (1000, 2, 1000), (1000, 0, 0)]
    rng = np.random.default_rng(3)
    rows = np.arange(len(nodes))
    for _ in range(12):
        for shape in shapes:
            fresh = fragmentation_increase(state, rows, FragCache(typ).node_frag(state), shape, typ)
            np.testing.assert_array_equal(cache.increase(state, shape), fresh)
        cpu, num, milli = shapes[rng.integers(len(shapes))]
        choice = make_policy("fgd", typ).choose(state, Request(cpu, 10, num, milli), rng)
        if choice is not None:
            state.bind(choice.node, choice.gpus, cpu, 10, milli)


def test_stranded_counts_gpu_milli_beyond_cpu_and_memory() -> None:
    # 2000 free milli; CPU feeds 1000 of it (10 per milli), memory 1500 (2 per milli).
    out = stranded(np.array([2000.0]), np.array([10000.0]), np.array([3000.0]), 10.0, 2.0)
    assert out.tolist() == [1000.0]
    assert stranded(np.array([2000.0]), np.array([0.0]), np.array([0.0]), 0.0, 0.0).tolist() == [
        0.0
    ]


def test_random_spreads_and_respects_feasibility() -> None:
    nodes = _nodes((8000, 1, "T4"), (8000, 1, "T4"), (500, 1, "T4"))
    typ = typical_pods(_pods([(1000, 1, 1000, "")]), popularity=100)
    state = ClusterState(nodes)
    picked = {_choose("random", state, Request(1000, 10, 1, 500), typ, s).node for s in range(30)}
    assert picked == {0, 1}


def test_gpu_spec_and_capacity_filters() -> None:
    nodes = _nodes((8000, 2, "T4"), (8000, 2, "V100"))
    pods = _pods([(1000, 1, 1000, "V100")], models=nodes.models)
    typ = typical_pods(pods, popularity=100)
    state = ClusterState(nodes)
    spec = int(pods.spec[0])
    for cls in POLICIES:
        assert _choose(cls.name, state, Request(1000, 10, 1, 1000, spec), typ).node == 1
    assert _choose("fgd", state, Request(1000, 10, 3, 1000), typ) is None
    assert _choose("bestfit", state, Request(9000, 10, 1, 100), typ) is None


def test_unknown_policy_and_bad_rows_are_config_errors() -> None:
    typ = typical_pods(_pods([(1000, 1, 1000, "")]), popularity=100)
    with pytest.raises(ConfigError, match="choose one of"):
        make_policy("nope", typ)
    with pytest.raises(ConfigError, match="gpu_milli must be 1000"):
        _pods([(1000, 2, 500, "")])
    with pytest.raises(ConfigError, match="cpu_milli"):
        parse_nodes([{"sn": "a", "cpu_milli": "", "memory_mib": "1", "gpu": "1", "model": "T4"}])


def test_scarcity_is_demand_of_restricted_pods_over_their_supply() -> None:
    models = ("G2", "T4")
    # Half of the GPU demand accepts only T4.
    typ = typical_pods(_pods([(1000, 1, 1000, "T4"), (1000, 1, 1000, "")], models), 100)
    scarcity = Scarcity(typ, len(models))
    # 4,000 milli free, T4-only pods will want half of it = all 2,000 free T4 milli.
    assert scarcity(np.array([2000.0, 2000.0])).tolist() == [0.0, 1.0]
    # Plenty of T4 left: they will want 0.5 * 10,000 of its 8,000.
    assert scarcity(np.array([2000.0, 8000.0])).tolist() == pytest.approx([0.0, 0.625])
    assert not Scarcity(typical_pods(_pods([(1000, 1, 1000, "")]), 100), 2)


def test_anypu_keeps_scarce_models_for_pods_that_need_them() -> None:
    # T4-only pods are 60 % of the GPU demand; the G2 node is CPU-poor.
    nodes = _nodes((104000, 2, "T4"), (12000, 2, "G2"))
    pods = _pods([(1000, 1, 500, "T4")] * 3 + [(12000, 1, 1000, "")], nodes.models)
    typ = typical_pods(pods, popularity=100)  # 6 CPU milli per GPU milli
    state, req = ClusterState(nodes), Request(12000, 10, 1, 1000)
    cost = make_policy("anypu", typ).cost(state, req, np.arange(2))
    # G2: FGD's -750 (T4-only pods cannot use G2) + 250 (no CPU left for the 1-GPU typical
    # pod) + 1,000 milli stranded without CPU. T4: no fragmentation or stranding, but all
    # free T4 milli will be wanted by T4-only pods, so the pod costs its full 1,000 there.
    assert cost.tolist() == pytest.approx([1000.0, 500.0])
    assert _choose("anypu", state, req, typ).node == 1


def test_caches_stay_right_across_diverging_copies() -> None:
    nodes = _nodes((32000, 2, "T4"), (32000, 2, "T4"))
    typ = typical_pods(_pods([(2000, 1, 500, ""), (2000, 1, 1000, "")]), popularity=100)
    state = ClusterState(nodes)
    cache, frag = DeltaCache(typ), FragCache(typ)
    shape, rows = (2000, 1, 500), np.arange(2)
    cache.increase(state, shape)
    trial = state.copy()
    trial.bind(0, (0,), 2000, 10, 500)  # the copy and the original now differ on node 0 ...
    state.bind(0, (1,), 2000, 10, 1000)  # ... in different ways, one bind each
    for s in (trial, state, trial):
        fresh = fragmentation_increase(s, rows, FragCache(typ).node_frag(s), shape, typ)
        np.testing.assert_array_equal(cache.increase(s, shape), fresh)
        assert frag.total(s) == FragCache(typ).total(s)


@pytest.mark.parametrize("name", ["bestfit", "fgd", "anypu"])
def test_allowed_mask_restricts_the_choice(name) -> None:
    nodes = _nodes((8000, 2, "T4"), (8000, 2, "T4"), (8000, 2, "T4"))
    typ = typical_pods(_pods([(1000, 1, 1000, "")]), popularity=100)
    policy, rng = make_policy(name, typ), np.random.default_rng(0)
    req = Request(1000, 10, 1, 1000)
    assert policy.choose(ClusterState(nodes), req, rng, np.array([False, False, True])).node == 2
    assert policy.choose(ClusterState(nodes), req, rng, np.zeros(3, dtype=bool)) is None


# --- anypu-ss: the Sum-of-Squares rule ---------------------------------------------------


def _sharing_state():
    """Four 2-GPU nodes. GPUs partially filled: gap 300 (node 0), two of 100 (node 1), 500
    (node 2); node 3 is empty. So N(100) = 2, N(300) = 1, N(500) = 1."""
    nodes = _nodes((64000, 2, "T4"), (64000, 2, "T4"), (64000, 2, "T4"), (64000, 2, "T4"))
    state = ClusterState(nodes)
    state.bind(0, (0,), 1000, 10, 700)
    state.bind(1, (0,), 1000, 10, 900)
    state.bind(1, (1,), 1000, 10, 900)
    state.bind(2, (0,), 1000, 10, 500)
    return state


def test_ss_increase_and_choice_match_hand_counts() -> None:
    state = _sharing_state()
    typ = typical_pods(_pods([(1000, 1, 200, ""), (1000, 1, 1000, "")]), popularity=100)
    counts = GapCounts().sync(state)
    assert {h: int(counts[h]) for h in np.flatnonzero(counts)} == {100: 2, 300: 1, 500: 1}
    # A 200-milli pod: 300 → 100 costs (1 - 2·1) + (1 + 2·2) = 4; 500 → 300 costs
    # (1 - 2·1) + (1 + 2·1) = 2; an empty GPU → 800 costs 0 + (1 + 0) = 1; node 1 is full.
    inc = GapRule().increase(counts, state.gpu_left, np.zeros_like(state.gpu_left), 200)
    assert inc[:, :2].tolist() == [[4, 1], [np.inf, np.inf], [2, 1], [1, 1]]
    # SS first: an empty GPU. anypu fills the 500 gap: its fragmentation falls by 100 there
    # (half the typical pods are whole-GPU ones, for which partial GPUs are fragmented), by
    # 50 on the 300 gap (the 100 left is useless to a 200 pod) and rises by 400 on an empty
    # GPU; the default weight of 1 adds only 2, 4 and 1 to those.
    ss = AnypuSSPolicy(typ, weight=None, rule="plain")
    choice = ss.choose(state, Request(1000, 10, 1, 200), np.random.default_rng(0))
    assert state.gpu_left[choice.node, choice.gpus[0]] == 1000
    for name in ("anypu", "anypu-ss"):
        choice = _choose(name, state, Request(1000, 10, 1, 200), typ)
        assert (choice.node, choice.gpus) == (2, (0,))


def test_effective_gaps_merge_what_the_sizes_cannot_tell_apart() -> None:
    rule = GapRule([300, 500])  # sums within 1000: 300, 500, 600, 800, 900, 1000
    gaps = [0, 100, 299, 300, 350, 550, 700, 999, 1000]
    assert rule.effective[gaps].tolist() == [0, 0, 0, 300, 300, 500, 600, 900, 1000]
    assert GapRule(smallest=160).effective[[100, 159, 160, 190]].tolist() == [0, 0, 160, 190]
    # Gaps 350 and 310 are one effective gap (300), so N(300) = 2 there; 40 and 10 are
    # closed. A 300 pod on the 350 GPU: (1 - 2·2) + 0 = -3.
    counts = np.zeros(1001, dtype=np.int64)
    counts[[350, 310]] = 1
    free = np.array([350, 1000, 200])
    inc = rule.increase(counts, free, np.zeros_like(free), 300)
    assert inc.tolist() == [-3.0, 1.0, np.inf]  # an empty GPU → 700 (eff. 600): N(600) = 0


def _recount(state: ClusterState, reserved: np.ndarray) -> np.ndarray:
    gap = state.gpu_left - reserved
    return np.bincount(gap[(gap > 0) & (state.gpu_left < 1000)], minlength=1001)


def test_gap_counts_equal_a_recount_after_random_binds_releases_and_copies() -> None:
    nodes = _nodes(*[(64000, g, "T4") for g in (1, 2, 4, 8, 8, 2)])
    state = ClusterState(nodes)
    gaps, rule = GapCounts(), GapRule([160, 470, 810])
    rng = np.random.default_rng(7)
    bound: list[tuple[int, tuple[int, ...], int]] = []
    for step in range(400):
        if step == 200:  # a copy diverges from the state the counts followed
            state = state.copy()
        milli = int(rng.choice([160, 230, 470, 810, 1000]))
        num = int(rng.integers(1, 3)) if milli == 1000 else 1
        if bound and rng.random() < 0.3:
            node, gpus, m = bound.pop(int(rng.integers(len(bound))))
            state.release(node, gpus, 1000, 10, m)
        else:
            fits = np.argwhere(state.gpu_left >= milli)
            if len(fits) < num:
                continue
            node, gpu = fits[rng.integers(len(fits))]
            free = np.flatnonzero(state.gpu_left[node] >= milli)
            gpus = (int(gpu),) if num == 1 else tuple(int(g) for g in free[:num])
            if len(gpus) < num:
                continue
            state.bind(int(node), gpus, 1000, 10, milli)
            bound.append((int(node), gpus, milli))
        counts = gaps.sync(state)
        if rng.random() < 0.3:
            gaps.reserve(rule, int(rng.choice([30, 60, 190])))
        np.testing.assert_array_equal(counts, _recount(state, gaps.reserved))
        assert (gaps.reserved <= state.gpu_left).all()
        assert (gaps.reserved[state.gpu_left == 1000] == 0).all()
    assert gaps.reserved.sum() > 0 and counts.sum() > 0  # the test exercised both


def test_reserve_goes_where_ss_puts_it_and_never_opens_a_gpu() -> None:
    nodes = _nodes((64000, 2, "T4"), (64000, 2, "T4"))
    state = ClusterState(nodes)
    state.bind(0, (0,), 1000, 10, 470)  # gap 530
    state.bind(1, (0,), 1000, 10, 810)  # gap 190
    state.bind(1, (1,), 1000, 10, 810)  # gap 190
    gaps, rule = GapCounts(), GapRule()
    gaps.sync(state)
    # 190 on a 190 gap: 1 - 2·2 = -3; on the 530 gap → 340: (1 - 2) + (1 + 0) = 0.
    assert gaps.reserve(rule, 190)
    assert gaps.reserved[:, :2].tolist() == [[0, 0], [190, 0]]
    assert gaps.counts[190] == 1 and gaps.counts[530] == 1
    assert gaps.reserve(rule, 190) and gaps.reserve(rule, 190)  # the last one: 530 → 340
    assert gaps.reserved[:, :2].tolist() == [[190, 0], [190, 190]]
    assert not gaps.reserve(rule, 400)  # only empty GPUs have room
    # A real 160 pod may take reserved milli; the reservation shrinks to the 30 left.
    state.bind(1, (1,), 1000, 10, 160)
    gaps.sync(state)
    assert gaps.reserved[1, :2].tolist() == [190, 30]


def test_waste_plan_is_the_optimal_packings_leftover() -> None:
    assert waste_plan([600], [1.0]) == pytest.approx({400: 1.0})
    assert waste_plan([500, 1000], [1.0, 5.0]) == {}  # two 500s fill a GPU
    # Three 810s per 160: a quarter of the pods pair (810, 160), leaving 30; half are lone
    # 810s, leaving 190 (rates per sharing pod).
    assert waste_plan([810, 160], [3.0, 1.0]) == pytest.approx({30: 0.25, 190: 0.5})


@pytest.mark.parametrize("plan", [False, True])
def test_anypu_ss_counts_follow_its_own_placements(plan) -> None:
    nodes = _nodes(*[(64000, 2, "T4")] * 6)
    shapes = [(2000, 1, 810, ""), (2000, 1, 470, ""), (2000, 1, 160, ""), (4000, 1, 1000, "")]
    pods = _pods(shapes * 5)
    typ = typical_pods(pods, popularity=100)
    policy, state = AnypuSSPolicy(typ, plan=plan), ClusterState(nodes)
    rng = np.random.default_rng(1)
    for i in rng.permutation(len(pods)):
        req = Request(int(pods.cpu[i]), 10, int(pods.num_gpu[i]), int(pods.gpu_milli[i]))
        choice = policy.choose(state, req, rng)
        if choice is not None:
            state.bind(choice.node, choice.gpus, req.cpu, req.mem, req.milli)
        counts = policy.gaps.sync(state)
        np.testing.assert_array_equal(counts, _recount(state, policy.gaps.reserved))
    assert state.allocated_milli >= 10_000  # 12 GPUs; the 20 pods ask 12,200 milli
    assert (policy.gaps.reserved.sum() > 0) == plan
    with pytest.raises(ValueError, match="gap rule"):
        AnypuSSPolicy(typ, rule="nope")  # type: ignore[arg-type]


def test_anypu_ss_is_one_of_the_online_rows() -> None:
    from anypu.simulations import openb

    # It places one pod at a time from the current state and the typical pods only.
    assert "anypu-ss" in openb.parse_policies("all")
    assert isinstance(
        make_policy("anypu-ss", typical_pods(_pods([(1, 1, 500, "")]))), AnypuSSPolicy
    )


def _sum_of_squares(rule: GapRule, free: np.ndarray, reserved: np.ndarray) -> int:
    gap = free - reserved
    eff = rule.effective[gap[(gap > 0) & (free < 1000)]]
    n = np.bincount(eff[eff > 0], minlength=1001)
    return int((n * n).sum())


@pytest.mark.parametrize("rule", [GapRule(), GapRule([160, 470, 810]), GapRule(smallest=160)])
@pytest.mark.parametrize("reserve", [False, True])
def test_ss_increase_equals_the_sum_recomputed_after_each_move(rule, reserve) -> None:
    rng = np.random.default_rng(5)
    free = rng.choice([0, 30, 60, 190, 350, 530, 700, 840, 1000], size=(40, 8))
    gaps = GapCounts()
    state = ClusterState(_nodes(*[(64000, 8, "T4")] * 40))
    state.gpu_left[:] = free  # a state no bind sequence has to reach: counts start from it
    counts = gaps.sync(state)
    for _ in range(30 if reserve else 0):
        gaps.reserve(rule, int(rng.choice([30, 60, 190])))
    reserved = gaps.reserved
    assert reserved.any() == reserve
    before = _sum_of_squares(rule, free, reserved)
    for milli in (50, 160, 470, 810):  # 50 is no filler: 700 → 650 stays effective gap 640
        inc = rule.increase(counts, free, reserved, milli)
        for n, g in np.ndindex(free.shape):
            if free[n, g] < milli:
                assert inc[n, g] == np.inf
                continue
            f2, r2 = free.copy(), reserved.copy()
            f2[n, g] -= milli
            r2[n, g] = min(r2[n, g], f2[n, g])
            assert inc[n, g] == _sum_of_squares(rule, f2, r2) - before, (n, g, milli)
