"""anypu-repack: moving running sharing pods to make room, on hand-made clusters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anypu.placement.gpushare import (
    ClusterState,
    Request,
    make_policy,
    parse_nodes,
    parse_pods,
    typical_pods,
)
from anypu.simulations import openb
from anypu.simulations._openb_protocol import replay
from anypu.simulations._openb_repack import Repacker, SharingPods, replay_repack


def _nodes(n: int, gpus: int = 1):
    return parse_nodes(
        [{"sn": f"n{i}", "cpu_milli": "16000", "memory_mib": "65536", "gpu": str(gpus),
          "model": "T4"} for i in range(n)]
    )  # fmt: skip


def _setup(n_nodes: int, running: list[tuple[int, int]], max_moves: int = 2):
    """A cluster of 1-GPU nodes holding sharing pods ``(node, milli)``, 1 core each."""
    nodes = _nodes(n_nodes)
    shapes = [{"name": f"p{i}", "cpu_milli": "1000", "memory_mib": "1024", "num_gpu": "1",
               "gpu_milli": str(m)} for i, (_, m) in enumerate(running)]  # fmt: skip
    typ = typical_pods(parse_pods(shapes, nodes.models), popularity=100)
    policy = make_policy("anypu", typ)
    state, pods = ClusterState(nodes), SharingPods(len(running))
    for i, (node, milli) in enumerate(running):
        req = Request(1000, 1024, 1, milli)
        state.bind(node, (0,), req.cpu, req.mem, req.milli)
        pods.add(i, node, 0, req)
    return state, pods, policy, Repacker(policy, max_moves=max_moves)


def test_one_move_is_the_only_way_to_place_the_pod() -> None:
    # n0 holds 300 + 400, n1 holds 700: 300 free on each, so a 600 fits nowhere. Moving
    # the 300 to n1 frees 600 on n0; the 400 and the 700 fit nowhere else.
    state, pods, policy, repacker = _setup(2, [(0, 300), (0, 400), (1, 700)])
    req = Request(1000, 1024, 1, 600)
    rng = np.random.default_rng(0)
    assert policy.choose(state, req, rng) is None
    plan = repacker.plan(state, req, pods, rng)
    assert plan is not None
    assert plan.moves == ((0, 1, 0),) and plan.node == 0 and plan.gpus == (0,)
    repacker.apply(state, req, pods, plan)
    assert state.gpu_left[:, 0].tolist() == [0, 0]
    assert state.allocated_milli == 2000 and state.cpu_left.tolist() == [14000, 14000]
    assert pods.node[:3].tolist() == [1, 0, 1]


def test_no_move_helps_so_the_pod_is_dropped() -> None:
    # 400 and 300 free; the running 600 and 700 fit in neither hole, so nothing can move.
    state, pods, policy, repacker = _setup(2, [(0, 600), (1, 700)])
    rng = np.random.default_rng(0)
    assert repacker.plan(state, Request(1000, 1024, 1, 500), pods, rng) is None
    # The same in a replay: the third pod is dropped and nothing moved.
    nodes = _nodes(2)
    trace = parse_pods(
        [{"name": f"p{i}", "cpu_milli": "1000", "memory_mib": "1024", "num_gpu": "1",
          "gpu_milli": str(m)} for i, m in enumerate([600, 700, 500])],
        nodes.models,
    )  # fmt: skip
    typ = typical_pods(trace, popularity=100)
    result, stats = replay_repack(nodes, trace, make_policy("anypu", typ), 0)
    assert result.placed.tolist() == [True, True, False]
    assert stats.searches == 1 and stats.rescued == 0 and stats.migrations == 0


def test_whole_gpu_pods_never_move() -> None:
    # n0 runs a whole-GPU pod, n1 a 500 sharing pod: a 1-GPU arrival would need the whole
    # pod moved (never) or the 500 moved into a hole (none): dropped.
    state, pods, policy, repacker = _setup(2, [(1, 500)])
    state.bind(0, (0,), 1000, 1024, 1000)
    rng = np.random.default_rng(0)
    assert repacker.plan(state, Request(1000, 1024, 1, 1000), pods, rng) is None


def test_two_moves_only_when_one_is_not_enough() -> None:
    # n0: 300 + 300 + 400 (full); n1 and n2: 700 each (300 free). A 600 needs both 300s
    # off n0, one into each hole; no single move frees 600 there.
    running = [(0, 300), (0, 300), (0, 400), (1, 700), (2, 700)]
    req = Request(1000, 1024, 1, 600)
    rng = np.random.default_rng(0)
    state, pods, _, one = _setup(3, running, max_moves=1)
    assert one.plan(state, req, pods, rng) is None
    state, pods, _, two = _setup(3, running, max_moves=2)
    plan = two.plan(state, req, pods, rng)
    assert plan is not None and plan.node == 0
    assert sorted(p for p, _, _ in plan.moves) == [0, 1]
    assert sorted(node for _, node, _ in plan.moves) == [1, 2]
    two.apply(state, req, pods, plan)
    assert state.gpu_left[:, 0].tolist() == [0, 0, 0] and state.allocated_milli == 3000


def test_repacker_rejects_bad_bounds() -> None:
    _, _, policy, _ = _setup(1, [(0, 500)])
    with pytest.raises(ValueError, match="max_moves"):
        Repacker(policy, max_moves=3)
    with pytest.raises(ValueError, match="max_plans"):
        Repacker(policy, max_plans=0)


def test_replay_matches_online_until_a_move_and_keeps_capacities() -> None:
    # A random trace of CPU-only, sharing and whole-GPU pods onto 4 two-GPU nodes, 2x
    # oversubscribed.
    rng = np.random.default_rng(0)
    nodes = _nodes(4, gpus=2)
    millis = rng.choice([0, 150, 300, 450, 600, 1000, 1000], size=46)
    trace = parse_pods(
        [{"name": f"p{i}", "cpu_milli": "1000", "memory_mib": "1024", "num_gpu": str(int(m > 0)),
          "gpu_milli": str(m)} for i, m in enumerate(millis)],
        nodes.models,
    )  # fmt: skip
    assert (millis == 0).any()
    typ = typical_pods(trace, popularity=100)
    online = replay(nodes, trace, make_policy("anypu", typ), 0, typ)
    result, stats = replay_repack(nodes, trace, make_policy("anypu", typ), 0)
    assert stats.searches > 0 and stats.rescued > 0 and stats.migrations >= stats.rescued
    first = int(np.flatnonzero(result.placed != online.placed)[0])
    assert not online.placed[first] and result.placed[first]  # the first rescue
    assert np.array_equal(result.alloc_pct[:first], online.alloc_pct[:first])
    # Every placed pod's milli is allocated: moves neither lose nor double-count a pod.
    placed_milli = int(millis[result.placed].sum())
    assert result.alloc_pct[-1] == pytest.approx(placed_milli / 8000 * 100)
    assert result.alloc_pct[-1] >= online.alloc_pct[-1]


def test_cli_runs_repack_as_its_own_row(tmp_path, capsys) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\na,32000,65536,2,T4\n")
    pods = tmp_path / "pods.csv"
    pods.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n"
        "p0,1000,1024,1,300,\np1,1000,1024,1,400,\np2,1000,1024,1,700,\np3,1000,1024,1,600,\n"
    )
    assert "anypu-repack" not in openb.parse_policies("all")
    code = openb.main(
        ["--trace", str(pods), "--nodes", str(nodes), "--policies", "anypu-repack",
         "--seeds", "42", "--json", "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["policy"] == "anypu-repack" and row["migrations"] >= 0 and row["placed"] > 0
