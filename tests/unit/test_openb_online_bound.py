"""The online floor: valid for every policy that places what fits, and above the offline
floor where the protocol's "place it if it fits" costs allocation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from anypu.placement.gpushare import (
    MILLI,
    ClusterState,
    NodeTable,
    PodTable,
    make_policy,
    typical_pods,
)
from anypu.simulations._openb_bound import allocation_bound
from anypu.simulations._openb_online_bound import (
    SCALE,
    online_floor,
    waste_certificate,
)
from anypu.simulations._openb_protocol import replay
from tests.unit.test_openb_bound import _nodes, _pods


def _online_optimum(nodes: NodeTable, pods: PodTable) -> int:
    """Most GPU milli any *online* policy holds after the last pod (tiny instances): each
    pod that fits somewhere must be placed, on any node and GPUs it fits."""
    state = ClusterState(nodes)
    best = 0

    def search(i: int) -> None:
        nonlocal best
        if i == len(pods):
            best = max(best, state.allocated_milli)
            return
        cpu, mem = int(pods.cpu[i]), int(pods.mem[i])
        num, milli, spec = int(pods.num_gpu[i]), int(pods.gpu_milli[i]), int(pods.spec[i])
        options = []
        for node in state.feasible(cpu, mem, num, milli, spec).tolist():
            row = state.gpu_left[node]
            if num and milli < MILLI:
                options += [(node, (g,)) for g in np.flatnonzero(row >= milli).tolist()]
            else:
                options.append((node, tuple(np.flatnonzero(row == MILLI)[:num].tolist())))
        if not options:
            search(i + 1)  # fits nowhere: dropped
        for node, gpus in options:
            state.bind(node, gpus, cpu, mem, milli)
            search(i + 1)
            state.release(node, gpus, cpu, mem, milli)

    search(0)
    return best


@pytest.mark.parametrize("spec", ["", "T4"])
def test_the_first_810_must_be_placed_so_190_stays_free(spec: str) -> None:
    # Offline, leaving the 810 out lets both whole-GPU pods in: nothing free. Online the
    # 810 fits when it arrives, so it is placed and one whole-GPU pod finds no GPU. A
    # gpu_spec naming the only model changes nothing.
    nodes = _nodes([("T4", 16, 64, 2)])
    pods = _pods([(810, 1, 4, 1, spec), (1000, 1, 1), (1000, 1, 1)], nodes.models)
    assert allocation_bound(nodes, pods, "node") == 2000
    assert _online_optimum(nodes, pods) == 1810
    floor = online_floor(nodes, pods, last=2)
    assert floor.floor_milli == 190
    assert floor.lam == 1.0


def test_a_pod_needing_more_than_a_full_shape_is_counted_as_dropped() -> None:
    # Two nodes, one GPU each. Two 810s (4 cores) fill both GPUs' big room; the whole-GPU
    # pods need 8 cores, so once no 810 fits they fit nowhere either.
    nodes = _nodes([("T4", 16, 64, 1), ("T4", 16, 64, 1)])
    pods = _pods([(810, 1, 4), (810, 1, 4), (1000, 1, 8), (1000, 1, 8)], nodes.models)
    assert _online_optimum(nodes, pods) == 1620
    floor = online_floor(nodes, pods, last=3)
    assert 0 < floor.floor_milli <= 2000 - 1620


def test_waste_certificate_is_exact_on_810_and_190() -> None:
    # Three 810s forced, one 190 may fill one of their GPUs: 3 · 190 − 190 = 380 free.
    cert = waste_certificate(Counter({810: 3}), Counter({810: 3, 190: 1}))
    assert cert.bound(Counter({810: 3}), Counter({810: 3, 190: 1})) == 380 * SCALE
    # Nothing forced: nothing need be free.
    assert cert.bound(Counter(), Counter({810: 3, 190: 1})) <= 0


def test_floor_never_exceeds_what_the_best_online_policy_leaves() -> None:
    rng = np.random.default_rng(7)
    shapes = [(810, 1, 3), (810, 1, 3), (470, 1, 5), (320, 1, 2), (160, 1, 4), (650, 1, 6),
              (1000, 1, 4), (1000, 1, 9), (1000, 2, 6), (230, 1, 2, 4, "V100")]  # fmt: skip
    clusters = [
        _nodes([("T4", 12, 32, 2), ("V100", 6, 16, 1)]),
        _nodes([("T4", 8, 32, 2), ("T4", 20, 64, 1)]),
    ]
    above_offline = 0
    for trial in range(24):
        nodes = clusters[trial % 2]
        pick = rng.integers(len(shapes), size=int(rng.integers(4, 8)))
        pods = _pods([shapes[k] for k in pick], nodes.models)
        capacity = nodes.gpu_capacity_milli
        online_unallocated = capacity - _online_optimum(nodes, pods)
        floor = online_floor(nodes, pods, last=len(pods) - 1, anchors_pct=(50.0, 100.0))
        assert floor.floor_milli <= online_unallocated, (trial, pick.tolist())
        offline_unallocated = capacity - min(allocation_bound(nodes, pods, "node"), capacity)
        above_offline += floor.floor_milli > offline_unallocated
    assert above_offline > 0  # the floor does see what online-ness costs


def test_floor_is_below_every_policy_on_a_small_replay() -> None:
    nodes = _nodes([("T4", 24, 96, 4)] * 3 + [("V100", 12, 48, 2)] * 2)
    rng = np.random.default_rng(3)
    rows = [(810, 1, 3), (470, 1, 8), (1000, 1, 11), (320, 1, 4), (1000, 2, 16), (160, 1, 4)]
    pods = _pods([rows[k] for k in rng.integers(len(rows), size=40)], nodes.models)
    floor = online_floor(nodes, pods, last=len(pods) - 1)
    typical = typical_pods(pods)
    for name in ("random", "bestfit", "fgd", "anypu"):
        result = replay(nodes, pods, make_policy(name, typical), 1, typical, track_frag=False)
        left = nodes.gpu_capacity_milli * (1 - result.alloc_pct[-1] / 100.0)
        assert floor.floor_milli <= round(left), name
