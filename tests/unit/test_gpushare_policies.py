"""Fragmentation on hand-computed examples and each policy's choice on tiny clusters."""

from __future__ import annotations

import numpy as np
import pytest
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
from anypu.simulations._openb_protocol import replay

from anypu.errors import ConfigError


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


@pytest.mark.parametrize("name", ["bestfit", "packing", "fgd", "anypu"])
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
