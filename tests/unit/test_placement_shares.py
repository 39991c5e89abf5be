"""Demand-sized shares: jobs reserve memory and compute of a shared device and run there
side by side while their reservations fit; one that fits nowhere now waits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from anypu.devices import Device, with_shares
from anypu.placement import (
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NodeView,
    PlacementConfig,
    plan,
)

GIB = 1 << 30
A100 = with_shares(
    Device("gpu0", "gpu", "nvidia", "A100", 40 * GIB, 156.0, "cuda:0", simulated=True), 8
)
OVERHEAD = 512 << 20  # a CUDA context
HOST = 64 << 20  # the allocator's slack on host memory (a simulated device)


def _snapshot(*devices: DeviceView) -> ClusterSnapshot:
    return ClusterSnapshot(nodes=(NodeView("n1", "cloud", "", devices=devices),))


def _view(
    device: Device = A100, busy: tuple[float, ...] | None = None, **reserved: int
) -> DeviceView:
    busy = busy if busy is not None else (0.0,) * device.slices
    return DeviceView("n1", device, busy, **reserved)


def _job(job_id: str, memory: int, flops: float = 1e9, **fields: object) -> JobRequest:
    return JobRequest(job_id, "d" * 64, flops, memory, 0, 0, **fields)  # type: ignore[arg-type]


POLICIES = ["cost", "fgd", "anypu-ss", "bestfit"]


@pytest.mark.parametrize("policy", POLICIES)
def test_jobs_share_one_device_while_their_reservations_fit(policy: str) -> None:
    jobs = [_job(f"j{i}", 6 * GIB) for i in range(8)]  # 6 GiB each of a 40 GiB device
    result = plan(_snapshot(_view()), jobs, config=PlacementConfig(policy=policy))
    placed = sorted(result.placements, key=lambda p: p.job_id)
    assert len(placed) == 6 and sorted(result.deferred) == ["j6", "j7"]
    assert len({p.slice_index for p in placed}) == 6  # each on its own seat, side by side
    assert all(p.memory_bytes == 6 * GIB + HOST and p.milli == 152 for p in placed)
    assert all(p.terms["queue"] == 0.0 for p in placed)


@pytest.mark.parametrize("policy", POLICIES)
def test_what_is_already_reserved_and_taken_counts(policy: str) -> None:
    busy = (1.0, 1.0) + (0.0,) * 6
    view = _view(busy=busy, reserved_memory_bytes=30 * GIB, reserved_milli=750)
    jobs = [_job("a", 4 * GIB), _job("b", 4 * GIB), _job("c", 4 * GIB)]
    result = plan(_snapshot(view), jobs, config=PlacementConfig(policy=policy))
    assert len(result.placements) == 2 and len(result.deferred) == 1
    assert {p.slice_index for p in result.placements} <= set(range(2, 8))


def test_the_compute_share_follows_the_slo_and_bounds_the_device() -> None:
    # Alone the job takes 1e12 / (156e12 · 0.35) + 2 ms ≈ 20.3 ms; an SLO of 40 ms asks
    # for just over half the device, so one fits at a time though memory would hold many.
    jobs = [_job(f"j{i}", GIB, flops=1e12, slo_seconds=0.04) for i in range(4)]
    result = plan(_snapshot(_view()), jobs, config=PlacementConfig())
    assert [p.milli for p in result.placements] == [508]
    assert len(result.deferred) == 3
    named = plan(_snapshot(_view()), [_job("x", GIB, compute_milli=300)], config=PlacementConfig())
    assert named.placements[0].milli == 300


def test_a_real_device_reserves_its_runtime_overhead_and_a_reading_counts() -> None:
    real = dataclasses.replace(A100, simulated=False)
    result = plan(_snapshot(_view(real)), [_job("a", 4 * GIB)], config=PlacementConfig())
    assert result.placements[0].memory_bytes == 4 * GIB + OVERHEAD
    # Memory in use that no job accounts for (another process) leaves less room.
    crowded = _view(real, unexplained_memory_bytes=37 * GIB)
    result = plan(_snapshot(crowded), [_job("a", 4 * GIB)], config=PlacementConfig())
    assert result.placements == () and result.deferred == ("a",)


def test_a_job_larger_than_the_device_is_unschedulable_not_held() -> None:
    result = plan(_snapshot(_view()), [_job("big", 41 * GIB)], config=PlacementConfig())
    assert result.deferred == ()
    assert (
        "needs 41.1 GiB with its runtime, the device has 40.0 GiB"
        in result.unschedulable["big"]["n1"]
    )


def test_cp_sat_keeps_reservations_within_each_device() -> None:
    other = dataclasses.replace(A100, device_id="gpu1")
    jobs = [_job(f"j{i}", (4 + i % 3) * GIB, flops=1e9 * (1 + i)) for i in range(12)]
    result = plan(_snapshot(_view(), _view(other)), jobs, config=PlacementConfig())
    by_device: dict[str, list[int]] = {}
    for p in result.placements:
        by_device.setdefault(p.device_id, []).append(p.memory_bytes)
    assert all(sum(v) <= 40 * GIB and len(v) <= 8 for v in by_device.values())
    assert len(result.placements) + len(result.deferred) == 12
    seats = [(p.device_id, p.slice_index) for p in result.placements]
    assert len(seats) == len(set(seats))


def test_cp_sat_s_own_solution_respects_each_shared_device_s_capacity() -> None:
    """Straight at the model: every job would rather be on the fast device, which holds
    only four of them; without its capacity constraints CP-SAT would put all six there."""
    from anypu.placement._framework import PlanContext
    from anypu.placement._solver import _classes, _cpsat, _greedy

    fast = dataclasses.replace(A100, tflops=1000.0)
    slow = dataclasses.replace(A100, tflops=10.0)
    snapshot = ClusterSnapshot(
        nodes=(
            NodeView("fast", "cloud", "", devices=(_view_on("fast", fast),)),
            NodeView("slow", "cloud", "", devices=(_view_on("slow", slow),)),
        )
    )
    config = PlacementConfig()
    ctx = PlanContext(snapshot, config)
    jobs = [_job(f"j{i}", 8 * GIB, flops=1e13) for i in range(6)]
    allowed = {j.job_id: np.ones(ctx.table.n_devices, dtype=bool) for j in jobs}
    weights = {j.job_id: 1.0 for j in jobs}
    classes = _classes(ctx, jobs)
    greedy, candidates, held = _greedy(ctx, jobs, allowed, weights, classes)
    assert held == [] and len(candidates) == 6
    status, chosen = _cpsat(ctx, jobs, weights, classes, candidates, greedy)
    assert chosen is not None, status
    on_fast = sum(int(classes.rep_dev[c]) == 0 for c in chosen)
    assert on_fast == 4  # 4 × (8 GiB + 64 MiB) fit 40 GiB; a fifth does not


def _view_on(node: str, device: Device) -> DeviceView:
    return DeviceView(node, device, (0.0,) * device.slices)
