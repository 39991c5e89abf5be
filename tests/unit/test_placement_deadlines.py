"""Deadlines: a job goes only where it is predicted to finish in time; where nowhere is,
it fails at once with the best prediction, unless it asked for best effort."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anypu.devices import Device, with_shares
from anypu.placement import (
    ClusterSnapshot,
    DeadlineFilter,
    DeviceView,
    JobRequest,
    NodeView,
    PlacementConfig,
    PlanContext,
    build_network,
    completion_seconds,
    plan,
)

GIB = 1 << 30
DIGEST = "d" * 64
# home -15 ms- edge-1 -30 ms- cloud: 30 ms there and back to the edge, 90 ms to the cloud.
NETWORK = build_network(
    {
        "sites": ["home", "edge-1", "cloud"],
        "links": [
            {"a": "home", "b": "edge-1", "latency_ms": 15, "bandwidth_mbps": 1000},
            {"a": "edge-1", "b": "cloud", "latency_ms": 30, "bandwidth_mbps": 10000},
        ],
    }
)
# A job of 1 GFLOP: 53 ms on the edge's CPU, 5 ms on the cloud's GPU (launch overhead 0).
EDGE_CPU = Device("cpu0", "cpu", "intel", "Xeon", 16 * GIB, 1e9 / 0.053 / 0.5 / 1e12, "cpu")
CLOUD_GPU = Device("gpu0", "gpu", "nvidia", "A100", 40 * GIB, 1e9 / 0.005 / 0.35 / 1e12, "cuda:0")
CONFIG = PlacementConfig(launch_overhead_s=0.0, use_cpsat=False)


def _snapshot(
    edge_busy: float = 0.0, cloud: Device = CLOUD_GPU, cloud_site: str = "cloud"
) -> ClusterSnapshot:
    warm = frozenset({DIGEST})
    edge = NodeView(
        "edge-1",
        "edge",
        "edge-1",
        devices=(DeviceView("edge-1", EDGE_CPU, (edge_busy,)),),
        warm_digests=warm,
    )
    views = tuple(DeviceView("cloud-1", cloud, (0.0,) * cloud.slices) for _ in range(1))
    cloud_node = NodeView("cloud-1", "cloud", cloud_site, devices=views, warm_digests=warm)
    return ClusterSnapshot(nodes=(edge, cloud_node), network=NETWORK)


def _job(job_id: str = "j", deadline_ms: float | None = None, **fields: object) -> JobRequest:
    deadline = None if deadline_ms is None else deadline_ms / 1000
    return JobRequest(  # type: ignore[arg-type]
        job_id, DIGEST, 1e9, GIB, 0, 0, origin="home", deadline_s=deadline, **fields
    )


def test_completion_is_network_compute_and_queue_per_device() -> None:
    ctx = PlanContext(_snapshot(edge_busy=0.010), CONFIG)
    edge, cloud = completion_seconds(_job(), ctx)
    assert edge == pytest.approx(0.030 + 0.053 + 0.010)
    assert cloud == pytest.approx(0.090 + 0.005)


def test_without_a_deadline_or_with_room_the_fastest_wins() -> None:
    for deadline in (None, 200.0, 84.0):
        (p,) = plan(_snapshot(), [_job(deadline_ms=deadline)], config=CONFIG).placements
        assert p.node_id == "edge-1"  # 83 ms against 95 ms


def test_a_deadline_only_the_cloud_meets_goes_there_though_the_edge_is_nearer() -> None:
    # Busy 20 ms, the edge finishes in 103 ms; the cloud in 95 ms.
    (p,) = plan(_snapshot(edge_busy=0.020), [_job(deadline_ms=100)], config=CONFIG).placements
    assert p.node_id == "cloud-1" and p.predicted_seconds <= 0.100


def test_no_device_in_time_fails_fast_with_the_best_and_why() -> None:
    result = plan(_snapshot(), [_job(deadline_ms=50)], config=CONFIG)
    assert result.placements == () and result.deferred == () and result.unschedulable == {}
    miss = result.deadline_unreachable["j"]
    assert (miss.node_id, miss.device_id, miss.tier) == ("edge-1", "cpu0", "edge")
    assert miss.predicted_seconds == pytest.approx(0.083)
    assert miss.describe() == (
        "best is edge-1/cpu0 (edge) at 83 ms: 30 ms network from home, 53 ms compute"
    )
    assert "cannot meet their deadline" in result.solver


def test_best_effort_places_where_it_finishes_first_even_if_late() -> None:
    result = plan(_snapshot(), [_job(deadline_ms=50, best_effort=True)], config=CONFIG)
    (p,) = result.placements
    assert p.node_id == "edge-1" and result.deadline_unreachable == {}


def test_a_deadline_already_past_is_unreachable() -> None:
    result = plan(_snapshot(), [_job(deadline_ms=-5)], config=CONFIG)
    assert "j" in result.deadline_unreachable


@pytest.mark.parametrize("use_cpsat", [False, True])
def test_jobs_of_one_round_that_queue_past_the_deadline_are_planned_again(
    use_cpsat: bool,
) -> None:
    # One slice each: a on the edge (83 ms) and b on the cloud (95 ms) are in time; c
    # behind either is late (136 ms, 100 ms + 90 ms) and nowhere else is there room.
    config = dataclasses.replace(CONFIG, use_cpsat=use_cpsat)
    jobs = [_job(n, deadline_ms=99) for n in ("a", "b", "c")]
    result = plan(_snapshot(), jobs, config=config)
    assert sorted(p.node_id for p in result.placements) == ["cloud-1", "edge-1"]
    assert all(p.predicted_seconds <= 0.099 for p in result.placements)
    (late,) = result.deadline_unreachable.values()
    assert late.terms["queue"] > 0  # it was the jobs before it that made it late


@pytest.mark.parametrize("policy", ["fgd", "anypu-ss", "bestfit"])
def test_gpu_sharing_policies_choose_only_among_devices_in_time(policy: str) -> None:
    # Two shared GPUs: one at the edge (near), one in the cloud (far). Packing policies
    # weigh fragmentation, not distance; the deadline rules the far one out.
    gpu = with_shares(CLOUD_GPU, 4)
    near = NodeView("edge-g", "edge", "edge-1", devices=(DeviceView("edge-g", gpu, (0.0,) * 4),))
    far = NodeView("cloud-g", "cloud", "cloud", devices=(DeviceView("cloud-g", gpu, (0.0,) * 4),))
    snapshot = ClusterSnapshot(nodes=(far, near), network=NETWORK)
    config = PlacementConfig(policy=policy, launch_overhead_s=0.0, load_overhead_s=0.0)
    jobs = [_job(f"j{i}", deadline_ms=60) for i in range(3)]
    result = plan(snapshot, jobs, config=config)
    assert {p.node_id for p in result.placements} == {"edge-g"}
    assert len(result.placements) == 3


def test_the_filter_says_why_per_device_and_agrees_with_its_mask() -> None:
    ctx = PlanContext(_snapshot(edge_busy=0.020), CONFIG)
    job = _job(deadline_ms=100)
    f = DeadlineFilter()
    mask = f.mask(job, ctx)
    reasons = [f.check(job, n, dv, ctx) for n in ctx.table.nodes for dv in n.devices]
    assert list(mask) == [r is None for r in reasons] == [False, True]
    assert reasons[0] == "predicted to take 103 ms, over the 100 ms its deadline leaves"
    assert np.all(f.mask(_job(), ctx))  # no deadline: every device
