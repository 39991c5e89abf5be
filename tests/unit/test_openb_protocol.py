"""The openb replay protocol on hand-made traces whose outcome is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anypu.errors import ConfigError
from anypu.placement.gpushare import (
    BatchPlacer,
    ClusterState,
    Request,
    make_policy,
    parse_nodes,
    parse_pods,
    typical_pods,
)
from anypu.simulations import openb
from anypu.simulations._openb_protocol import (
    by_arrival,
    inflate,
    node_order,
    replay,
    replay_batch,
    shuffle_nodes,
)


def _table(n_nodes=2, gpus=2, cpu=16000):
    return parse_nodes(
        [{"sn": f"n{i}", "cpu_milli": str(cpu), "memory_mib": "65536", "gpu": str(gpus),
          "model": "T4"} for i in range(n_nodes)]
    )  # fmt: skip


def _pods(shapes):
    return parse_pods(
        [{"name": f"p{i}", "cpu_milli": str(c), "memory_mib": "1024", "num_gpu": str(n),
          "gpu_milli": str(m)} for i, (c, n, m) in enumerate(shapes)],
        ("T4",),
    )  # fmt: skip


def test_inflation_stops_at_first_pod_whose_per_gpu_share_overflows() -> None:
    # 10 GPUs of capacity, 4 one-GPU pods arrive first: draws go on while the next pod's
    # per-GPU milli still fits under 13,000.
    pods = _pods([(1000, 1, 1000)] * 4)
    out = inflate(pods, 10_000, seed=1, ratio=1.3)
    assert len(out) == 13 and int(out.total_gpu_milli.sum()) == 13_000


def test_inflation_checks_per_gpu_but_adds_total() -> None:
    pods = _pods([(1000, 2, 1000)] * 2)  # 4,000 milli
    out = inflate(pods, 10_000, seed=1, ratio=1.3)
    # 4000 → 6000 → 8000 → 10000 → 12000 → 14000 (12000 + 1000 per-GPU still ≤ 13000).
    assert len(out) == 7 and int(out.total_gpu_milli.sum()) == 14_000


def test_inflation_is_seeded_and_keeps_the_original_pods_first() -> None:
    pods = _pods([(1000, 1, 100 * (i + 1)) for i in range(5)])
    a, b = inflate(pods, 10_000, 7), inflate(pods, 10_000, 7)
    assert a.names == b.names and sorted(a.names[:5]) == sorted(pods.names)
    assert inflate(pods, 10_000, 8).names != a.names


def test_a_list_over_the_target_loses_drawn_pods_until_within_it() -> None:
    # 20,000 milli of GPU pods and 5 CPU-only pods against a 13,000 target: the artifact
    # tunes *down*, removing drawn pods (CPU-only ones free nothing) until within it.
    pods = _pods([(1000, 1, 1000)] * 20 + [(1000, 0, 0)] * 5)
    out = inflate(pods, 10_000, seed=3, ratio=1.3)
    assert int(out.total_gpu_milli.sum()) == 13_000
    assert len(set(out.names)) == len(out.names)  # nothing drawn twice, nothing appended
    # The survivors keep the seed's shuffled order.
    shuffled = [pods.names[i] for i in np.random.default_rng(3).permutation(len(pods))]
    assert [n for n in shuffled if n in set(out.names)] == list(out.names)


def test_node_order_is_a_fresh_permutation_per_seed() -> None:
    a, b = node_order(50, 42), node_order(50, 42)
    assert sorted(a.tolist()) == list(range(50)) and a.tolist() == b.tolist()
    assert node_order(50, 43).tolist() != a.tolist()
    nodes = parse_nodes(
        [{"sn": f"n{i}", "cpu_milli": str(1000 * (i + 1)), "memory_mib": "4096",
          "gpu": str(1 + i % 2), "model": "T4" if i % 2 else "V100"} for i in range(6)]
    )  # fmt: skip
    moved = shuffle_nodes(nodes, 7)
    order = node_order(6, 7)
    assert moved.names == tuple(nodes.names[i] for i in order)
    for column in ("cpu", "mem", "gpus", "model"):  # every column follows its node
        assert getattr(moved, column).tolist() == getattr(nodes, column)[order].tolist()
    assert moved.models == nodes.models


def test_ties_go_to_the_first_node_of_the_seeds_order() -> None:
    # Eight identical idle nodes: every node ties for the first pod. In table order it
    # always lands on n0; met in each seed's order it lands where that order starts, so
    # across seeds the whole cluster is used (as the artifact's seeded node names do).
    nodes = _table(n_nodes=8)
    typ = typical_pods(_pods([(1000, 1, 1000)]))
    req = Request(1000, 1024, 1, 1000)
    for name in ("fgd", "packing", "clustering", "bestfit", "dotprod"):
        policy = make_policy(name, typ)
        assert policy.choose(ClusterState(nodes), req, np.random.default_rng(0)).node == 0
        first = set()
        for seed in range(40):
            met = shuffle_nodes(nodes, seed)
            choice = policy.choose(ClusterState(met), req, np.random.default_rng(seed))
            assert choice.node == 0  # the first node met ...
            first.add(met.names[choice.node])  # ... is a different node per seed
        assert len(first) == 8


def test_replay_places_until_full_and_drops_the_rest() -> None:
    nodes = _table()
    pods = _pods([(1000, 1, 1000)] * 4 + [(1000, 1, 500), (1000, 0, 0)])
    typ = typical_pods(pods)
    r = replay(nodes, pods, make_policy("bestfit", typ), 0, typ)
    assert r.placed.tolist() == [True, True, True, True, False, True]
    assert r.arrived_pct.tolist() == [25.0, 50.0, 75.0, 100.0, 112.5, 112.5]
    assert r.alloc_pct.tolist() == [25.0, 50.0, 75.0, 100.0, 100.0, 100.0]
    assert r.frag_pct[-1] == 0.0


def test_replay_counts_fragmented_share_gpus() -> None:
    nodes = _table(n_nodes=1, gpus=1)
    pods = _pods([(1000, 1, 600), (1000, 1, 1000)])
    typ = typical_pods(_pods([(1000, 1, 1000)]))
    r = replay(nodes, pods, make_policy("fgd", typ), 0, typ)
    # The 400 milli left after the sharing pod are useless to the whole-GPU typical pod.
    assert r.placed.tolist() == [True, False]
    assert r.frag_pct.tolist() == [40.0, 40.0]


def test_by_arrival_means_per_rounded_percent_and_fills_gaps() -> None:
    arrived = np.array([0.4, 0.6, 1.4, 3.2])
    values = np.array([1.0, 2.0, 4.0, 8.0])
    out = by_arrival(arrived, values)
    assert out[0] == 1.0 and out[1] == 3.0
    assert out[2] == pytest.approx(np.mean([2.0, 4.0, 8.0]))  # nothing rounds to 2: ±1
    assert out[3] == 8.0 and np.isnan(out[10])


def test_cli_json_on_a_small_trace(tmp_path, capsys) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\na,32000,65536,2,T4\nb,32000,65536,4,T4\n")
    pods = tmp_path / "pods.csv"
    pods.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
        "p0,2000,1024,1,500,\np1,2000,1024,1,1000,\np2,1000,1024,0,0,\np3,4000,1024,2,1000,T4\n"
    )
    code = openb.main(
        ["--trace", str(pods), "--nodes", str(nodes), "--policies", "fgd,anypu",
         "--seeds", "42-43", "--json", "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["policy"], r["seed"]) for r in rows] == [
        ("fgd", 42), ("fgd", 43), ("anypu", 42), ("anypu", 43)
    ]  # fmt: skip
    assert set(rows[0]) == {
        "policy",
        "seed",
        "alloc_100",
        "alloc_130",
        "frag_100",
        "decision_ms_p99",
    }
    assert all(r["alloc_130"] > 90 for r in rows)  # 6 GPUs, whole pods only: packs fully
    assert (tmp_path / "out" / "pods.csv").is_file() and (tmp_path / "out" / "pods.png").is_file()


def test_cli_errors_name_what_to_change(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ANYPU_TRACES", str(tmp_path / "missing"))
    assert openb.main(["--trace", "default"]) == 2
    assert "ANYPU_TRACES" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="42-46"):
        openb.parse_seeds("x")
    assert openb.parse_seeds("42-44,46") == [42, 43, 44, 46]
    with pytest.raises(ConfigError, match="choose 'all'"):
        openb.parse_policies("fgd,bogus")
    # The batch row is never part of "all" (the online rows); it is run only when named.
    assert "anypu-batch" not in openb.parse_policies("all")
    assert openb.parse_policies("all,anypu-batch,fgd")[-1] == "anypu-batch"


def test_batch_window_pairs_pods_that_online_cannot() -> None:
    # One GPU; 600 arrives before two 500s. Online takes the 600 and must drop both 500s;
    # a window of three sees that the two 500s fill the GPU exactly.
    nodes = _table(n_nodes=1, gpus=1)
    pods = _pods([(1000, 1, 600), (1000, 1, 500), (1000, 1, 500)])
    typ = typical_pods(pods, popularity=100)
    online = replay(nodes, pods, make_policy("anypu", typ), 0, typ)
    batch = replay_batch(nodes, pods, BatchPlacer(typ), typ, window=3)
    assert online.placed.tolist() == [True, False, False]
    assert batch.placed.tolist() == [False, True, True]
    # Pending pods count as unallocated until their window is solved.
    assert batch.alloc_pct.tolist() == [0.0, 0.0, 100.0]


def test_batch_respects_every_capacity_and_falls_back_online() -> None:
    nodes = _table(n_nodes=3, gpus=2, cpu=8000)
    pods = _pods([(3000, 1, 700), (3000, 2, 1000), (3000, 1, 300), (3000, 0, 0), (3000, 1, 1000)])
    typ = typical_pods(pods, popularity=100)
    state = ClusterState(nodes)
    reqs = [
        Request(int(c), 1024, int(n), int(m))
        for c, n, m in zip(pods.cpu, pods.num_gpu, pods.gpu_milli, strict=True)
    ] * 3
    choices = BatchPlacer(typ, candidates=3).place(state, reqs)
    assert (state.cpu_left >= 0).all() and (state.gpu_left >= 0).all()
    bound = sum(r.gpu_total for r, c in zip(reqs, choices, strict=True) if c is not None)
    assert bound == state.allocated_milli and bound > 0
    # CPU holds two pods per node; the most GPU is a 2-GPU pod and a CPU-only pod on each.
    assert sum(c is not None for c in choices) == 6 and bound == 6000


def test_one_seed_is_judged_against_the_published_seed_to_seed_spread() -> None:
    from anypu.simulations._openb_report import Reference, RunRow, format_table

    curve = np.full(131, 90.0)
    published = {s: curve + d for s, d in ((42, 0.0), (43, 0.4), (44, -0.4))}  # sd 0.4
    reference = Reference({("default", "06-FGD"): published}, {})

    def table(alloc: float, seeds: list[int]) -> str:
        rows = [RunRow("fgd", s, alloc, alloc, 5.0, 0.1, 0.2, 1.0, tuple(curve)) for s in seeds]
        return format_table(rows, reference, "default", seeds).splitlines()[-1]

    # One seed: its published value has no spread of its own; 2 sd of all seeds' is 0.8.
    assert " ok " in table(90.5, [42]) and "MISS" in table(91.0, [42])
    assert " ok " in table(90.5, [42, 43, 44]) and "MISS" in table(91.0, [42, 43, 44])
