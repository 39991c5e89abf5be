"""A slice a deployment's replica holds is that deployment's alone: no other job starts
or queues there, in the greedy plan or CP-SAT's, under every policy; the deployment's
own warm-ups (its next version) may."""

from __future__ import annotations

import pytest

from anypu.devices import Device
from anypu.placement import (
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NodeView,
    PlacementConfig,
    plan,
)

CPU = Device("cpu", "cpu", "x86", "cpu", 8 << 30, 0.1, "cpu", slices=2)
GPU = Device("gpu0", "gpu", "nvidia", "A100", 40 << 30, 156.0, "cuda:0", simulated=True, slices=2)
POLICIES = ["cost", "fgd", "anypu-ss"]


def _snapshot(device: Device, held: dict[int, str]) -> ClusterSnapshot:
    busy = tuple(0.01 if i in held else 0.0 for i in range(device.slices))
    view = DeviceView("n1", device, busy, replica_slices=held)
    return ClusterSnapshot(nodes=(NodeView("n1", "cloud", "", devices=(view,)),))


def _job(job_id: str, **fields: object) -> JobRequest:
    return JobRequest(job_id, "d" * 64, 1e9, 1 << 20, 0, 0, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("device", [CPU, GPU], ids=["cpu", "gpu"])
def test_other_jobs_never_take_a_replica_s_slice(policy: str, device: Device) -> None:
    jobs = [_job(f"j{i}") for i in range(4)]  # more than one: the CP-SAT path as well
    result = plan(_snapshot(device, {0: "mlp"}), jobs, config=PlacementConfig(policy=policy))
    assert result.placements, result
    assert all(p.slice_index == 1 for p in result.placements)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_slice_held_defers_the_job_instead_of_queueing_it(policy: str) -> None:
    snapshot = _snapshot(CPU, {0: "mlp", 1: "other"})
    result = plan(snapshot, [_job("j")], config=PlacementConfig(policy=policy))
    assert not result.placements and result.deferred == ("j",)
    assert not result.unschedulable  # it fits, once a replica is released


def test_a_deployment_s_own_warm_up_may_use_its_replica_s_slice() -> None:
    snapshot = _snapshot(CPU, {0: "mlp", 1: "other"})
    result = plan(snapshot, [_job("v2", deployment="mlp")], config=PlacementConfig())
    assert [(p.job_id, p.slice_index) for p in result.placements] == [("v2", 0)]
