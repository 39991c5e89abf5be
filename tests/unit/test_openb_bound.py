"""The allocation bound and the offline placement, on traces whose optimum is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from anypu.placement.gpushare import (
    MILLI,
    ClusterState,
    NodeTable,
    PodTable,
    make_policy,
    parse_nodes,
    parse_pods,
    typical_pods,
)
from anypu.simulations import openb_bound
from anypu.simulations._openb_bound import (
    BoundModel,
    _Duals,
    _knapsack,
    allocation_bound,
    arrivals_within,
    bound_seed,
    window_arrivals,
)
from anypu.simulations._openb_offline import Offline, offline_placement, verify
from anypu.simulations._openb_online_bound import online_floor
from anypu.simulations._openb_protocol import replay, shuffle_nodes


def _nodes(rows: list[tuple[str, int, int, int]]) -> NodeTable:
    """``(model, cores, GiB, gpus)`` per node."""
    return parse_nodes(
        [{"sn": f"n{i}", "cpu_milli": str(c * 1000), "memory_mib": str(m * 1024),
          "gpu": str(g), "model": model} for i, (model, c, m, g) in enumerate(rows)]
    )  # fmt: skip


def _pods(rows: list[tuple], models: tuple[str, ...]) -> PodTable:
    """``(milli, num, cores[, GiB[, spec]])`` per pod."""
    return parse_pods(
        [{"name": f"p{i}", "cpu_milli": str(r[2] * 1000), "memory_mib": str(
            (r[3] if len(r) > 3 else 1) * 1024), "num_gpu": str(r[1]), "gpu_milli": str(r[0]),
          "gpu_spec": r[4] if len(r) > 4 else ""} for i, r in enumerate(rows)],
        models,
    )  # fmt: skip


def _optimum(nodes: NodeTable, pods: PodTable) -> int:
    """Exact best allocation by exhaustive search (tiny instances only). Free whole GPUs
    of one node are interchangeable, so a whole-GPU pod takes the first free ones."""
    state = ClusterState(nodes)
    best = 0

    def search(i: int) -> None:
        nonlocal best
        best = max(best, state.allocated_milli)
        if i == len(pods):
            return
        cpu, mem = int(pods.cpu[i]), int(pods.mem[i])
        num, milli, spec = int(pods.num_gpu[i]), int(pods.gpu_milli[i]), int(pods.spec[i])
        for node in state.feasible(cpu, mem, num, milli, spec).tolist():
            row = state.gpu_left[node]
            if num and milli < MILLI:
                options = [(g,) for g in np.flatnonzero(row >= milli).tolist()]
            else:
                options = [tuple(np.flatnonzero(row == MILLI)[:num].tolist())]
            for gpus in options:
                state.bind(node, gpus, cpu, mem, milli)
                search(i + 1)
                state.release(node, gpus, cpu, mem, milli)
        search(i + 1)  # or leave it out

    search(0)
    return best


def test_hand_made_two_gpus() -> None:
    # 810 + 190 fill one GPU; the other holds 810 or 600, never both: 1,810 of 2,000.
    # LP: each GPU is worth at most 810 unless it holds the one 190 (dual 2·810 + 190).
    nodes = _nodes([("T4", 16, 64, 2)])
    pods = _pods([(810, 1, 1), (810, 1, 1), (190, 1, 1), (600, 1, 1)], nodes.models)
    for relaxation in ("gpu", "node"):
        assert allocation_bound(nodes, pods, relaxation) == 1810
    assert _optimum(nodes, pods) == 1810
    lp, cert = BoundModel(nodes, pods, "gpu").solve(len(pods))
    assert lp == pytest.approx(1810.0)
    # The certificate of all four pods still bounds the first two (two 810s: 1,620).
    assert cert.bound(np.array([0, 0, 2])) >= 1620


def test_node_relaxation_sees_cpu_the_gpu_one_does_not() -> None:
    # Two whole-GPU pods of 8 cores on a 10-core, 2-GPU node: only one fits. The pure GPU
    # LP says 2,000; per node shape the cores allow 10/8 of a pod: 1,250.
    nodes = _nodes([("T4", 10, 64, 2)])
    pods = _pods([(1000, 1, 8), (1000, 1, 8)], nodes.models)
    assert allocation_bound(nodes, pods, "gpu") == 2000
    assert allocation_bound(nodes, pods, "node") == 1250
    assert _optimum(nodes, pods) == 1000


def test_node_relaxation_keeps_gpu_models_and_node_width() -> None:
    nodes = _nodes([("T4", 16, 64, 1), ("V100", 16, 64, 1), ("V100", 16, 64, 1)])
    t4_only = _pods([(1000, 1, 1, 1, "T4")] * 3, nodes.models)
    assert allocation_bound(nodes, t4_only, "gpu") == 3000
    assert allocation_bound(nodes, t4_only, "node") == 1000
    two_gpu = _pods([(1000, 2, 1)], nodes.models)  # no node has two GPUs
    assert allocation_bound(nodes, two_gpu, "node") == 0
    assert allocation_bound(nodes, two_gpu, "gpu") == 0


def test_knapsack_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        sizes = sorted(set(rng.integers(1, 100, size=4).tolist() * 10))
        bounds = rng.integers(0, 4, size=len(sizes)).tolist()
        values = rng.integers(0, 500, size=len(sizes)).tolist()
        best, a = _knapsack(sizes, bounds, values, exact=True)
        brute = 0
        for combo in np.ndindex(*[b + 1 for b in bounds]):
            if sum(c * s for c, s in zip(combo, sizes, strict=True)) <= MILLI:
                brute = max(brute, sum(c * v for c, v in zip(combo, values, strict=True)))
        assert best == brute
        assert sum(c * v for c, v in zip(a, values, strict=True)) == best
        assert sum(c * s for c, s in zip(a, sizes, strict=True)) <= MILLI
        assert all(c <= b for c, b in zip(a, bounds, strict=True))


def test_bound_and_offline_bracket_the_optimum_on_random_tiny_traces() -> None:
    rng = np.random.default_rng(11)
    nodes = _nodes([("T4", 12, 32, 2), ("V100", 6, 16, 1)])
    shapes = [(810, 1, 3), (470, 1, 5), (320, 1, 2), (160, 1, 4), (650, 1, 6),
              (1000, 1, 4), (1000, 1, 9), (1000, 2, 6), (230, 1, 2, 4, "V100")]  # fmt: skip
    for _ in range(12):
        pick = rng.integers(len(shapes), size=int(rng.integers(3, 7)))
        pods = _pods([shapes[k] for k in pick], nodes.models)
        best = _optimum(nodes, pods)
        assert allocation_bound(nodes, pods, "node") >= best
        assert allocation_bound(nodes, pods, "gpu") >= allocation_bound(nodes, pods, "node")
        placement = offline_placement(nodes, pods, headrooms=(0.0, 0.1))
        assert verify(nodes, pods, placement) <= best


def test_certificate_from_any_duals_is_still_a_bound() -> None:
    # Weak duality needs no optimal duals: random ones, repaired by the certificate, must
    # still bound the exact optimum. This checks the repair (patterns, whole GPUs, CPU).
    rng = np.random.default_rng(17)
    nodes = _nodes([("T4", 12, 32, 2), ("V100", 6, 16, 1)])
    shapes = [(470, 1, 5), (470, 1, 1), (320, 1, 2), (160, 1, 4), (1000, 1, 4), (1000, 2, 6)]
    for _ in range(15):
        pick = rng.integers(len(shapes), size=int(rng.integers(3, 7)))
        pods = _pods([shapes[k] for k in pick], nodes.models)
        best = _optimum(nodes, pods)
        for relaxation in ("gpu", "node"):
            model = BoundModel(nodes, pods, relaxation)
            groups = len(model.groups)
            node = relaxation == "node"
            for _ in range(5):
                duals = _Duals(
                    slot=rng.uniform(-0.2, 1.0, size=(groups, len(model.sizes))).tolist(),
                    gpu=rng.uniform(-0.2, 1.0, size=groups).tolist(),
                    cpu=rng.uniform(0, 0.2, size=groups).tolist() if node else [],
                    mem=rng.uniform(0, 0.05, size=groups).tolist() if node else [],
                )
                cert = model._certificate(duals)
                assert cert.bound(model.types.counts(len(pods))) >= best


def _cluster() -> tuple[NodeTable, PodTable]:
    """A small cluster with openb's node shapes and a mix of openb-like pods."""
    nodes = _nodes([("G2", 96, 384, 8)] * 3 + [("T4", 104, 512, 2)] * 4 + [("P100", 16, 120, 2)])
    rng = np.random.default_rng(3)
    shapes = [(1000, 1, 12, 40), (1000, 1, 8, 30), (810, 1, 3, 6), (470, 1, 10, 38),
              (320, 1, 5, 22), (650, 1, 12, 45), (230, 1, 4, 27), (160, 1, 4, 17),
              (1000, 2, 16, 80), (1000, 8, 80, 330), (0, 0, 6, 8)]  # fmt: skip
    weights = np.array([30, 6, 10, 8, 4, 3, 2, 1, 1, 0.3, 10])
    pick = rng.choice(len(shapes), size=60, p=weights / weights.sum())
    return nodes, _pods([shapes[k] for k in pick], nodes.models)


def test_bound_is_above_what_every_policy_allocates() -> None:
    nodes, pods = _cluster()
    typ = typical_pods(pods)
    for seed in (1, 2):
        arrivals, within = arrivals_within(nodes, pods, seed)
        met = shuffle_nodes(nodes, seed)
        bound = bound_seed(nodes, pods, seed, "node")
        assert bound.pods == within and bound.window > 0
        cap = nodes.gpu_capacity_milli
        online = online_floor(nodes, arrivals, int(window_arrivals(arrivals, cap)[-1]))
        for name in ("fgd", "bestfit", "anypu", "packing", "random"):
            run = replay(met, arrivals, make_policy(name, typ), seed, typ, track_frag=False)
            assert run.alloc_pct[within - 1] * cap / 100 <= bound.bound_milli + 1e-6
            assert run.at(100) <= bound.window_alloc_pct + 1e-9
            assert run.at(100) <= 100.0 - online.floor_pct + 1e-9
        placement = offline_placement(nodes, arrivals.take(np.arange(within)))
        assert verify(nodes, arrivals.take(np.arange(within)), placement) <= bound.bound_milli


def test_certificate_matches_the_lp_and_holds_for_every_prefix() -> None:
    nodes, pods = _cluster()
    model = BoundModel(nodes, pods, "node")
    lp, cert = model.solve(len(pods))
    full = cert.bound(model.types.counts(len(pods)))
    assert math.floor(lp) - 1 <= full <= lp + 1  # exact arithmetic on the solver's duals
    # One certificate bounds every shorter prefix: compare with each prefix's own LP.
    for upto in (10, 25, 40):
        own = allocation_bound(nodes, pods.take(np.arange(upto)), "node")
        assert cert.bound(model.types.counts(upto)) >= own


def test_verify_refuses_an_overfull_gpu_and_a_wrong_model() -> None:
    nodes = _nodes([("T4", 16, 64, 1), ("V100", 16, 64, 1)])
    pods = _pods([(600, 1, 1), (600, 1, 1, 1, "T4")], nodes.models)
    good = Offline(np.array([1, 0]), ((0,), (0,)), 1200, 2, 0.0)
    assert verify(nodes, pods, good) == 1200
    with pytest.raises(ValueError, match="holds >"):
        verify(nodes, pods, Offline(np.array([0, 0]), ((0,), (0,)), 1200, 2, 0.0))
    with pytest.raises(ValueError, match="model"):
        verify(nodes, pods, Offline(np.array([0, 1]), ((0,), (0,)), 1200, 2, 0.0))
    with pytest.raises(ValueError, match="says"):
        verify(nodes, pods, Offline(np.array([1, 0]), ((0,), (0,)), 1300, 2, 0.0))


def _write_trace(tmp_path) -> tuple[str, str]:
    nodes, pods = _cluster()
    node_csv = tmp_path / "nodes.csv"
    node_csv.write_text(
        "sn,cpu_milli,memory_mib,gpu,model\n"
        + "".join(
            f"{n},{c},{m},{g},{nodes.models[k]}\n"
            for n, c, m, g, k in zip(
                nodes.names, nodes.cpu, nodes.mem, nodes.gpus, nodes.model, strict=True
            )
        )
    )
    pod_csv = tmp_path / "pods.csv"
    pod_csv.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
        + "".join(
            f"{n},{c},{m},{k},{g},\n"
            for n, c, m, k, g in zip(
                pods.names, pods.cpu, pods.mem, pods.num_gpu, pods.gpu_milli, strict=True
            )
        )
    )
    return str(node_csv), str(pod_csv)


def test_cli_json_and_table(tmp_path, capsys) -> None:
    node_csv, pod_csv = _write_trace(tmp_path)
    args = ["--trace", pod_csv, "--nodes", node_csv, "--seeds", "1,2"]
    assert openb_bound.main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["seed"] for r in rows] == [1, 2]
    for row in rows:
        assert row["offline"]["unalloc_pct"] >= row["unalloc_floor_pct"] - 1e-9
        assert {b["relaxation"] for b in row["bounds"]} == {"gpu", "node"}
        online = row["unalloc_100_online_floor_pct"]
        assert online >= row["unalloc_100_floor_pct"] and 0 < row["online"]["lambda"] <= 1
    assert openb_bound.main([*args, "--relaxations", "gpu"]) == 0
    out = capsys.readouterr().out
    assert "online@100" in out and "for any online policy" in out
    assert (
        openb_bound.main(
            [*args, "--no-offline", "--no-online", "--relaxations", "gpu", "--target", "100"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "floor gpu" in out and "floor node" not in out and "online" not in out
    assert (
        "≤ 100 % unallocated is not provably unreachable" in out and "offline placements" not in out
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "9-1"], "--seeds"),
        (["--relaxations", "cpu"], "unknown cpu"),
        (["--compare", "nosuch"], "unknown nosuch"),
        (["--trace", "no/such.csv"], "does not exist"),
        (["--ratio", "0"], "--ratio"),
    ],
)
def test_cli_refuses_bad_input(argv, message, capsys) -> None:
    assert openb_bound.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
