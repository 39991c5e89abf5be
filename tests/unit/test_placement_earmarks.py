"""Earmarks: a job held back for room long enough has a shared device set aside, so the
small jobs behind it cannot take every share it needs (no starvation)."""

from __future__ import annotations

import dataclasses

import pytest

from anypu.devices import Device, with_shares
from anypu.errors import ConfigError
from anypu.placement import (
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NodeView,
    PlacementConfig,
    plan,
)

GIB = 1 << 30
GPU0 = with_shares(Device("gpu0", "gpu", "nvidia", "A100", 40 * GIB, 156.0, "cuda:0"), 4)
GPU1 = dataclasses.replace(GPU0, device_id="gpu1", torch_device="cuda:1")
NO_OVERHEAD = {"gpu": 0, "host": 0}
POLICIES = ["cost", "fgd", "anypu-ss"]


def _config(policy: str = "cost", **fields: object) -> PlacementConfig:
    return PlacementConfig(policy=policy, runtime_overhead=NO_OVERHEAD, **fields)  # type: ignore[arg-type]


def _busy(device: Device, busy: tuple[float, ...], memory: int) -> DeviceView:
    """``device`` with jobs of ``memory`` each on the seats whose busy time is above 0."""
    jobs = sum(1 for b in busy if b > 0)
    milli = jobs * (1000 * memory // device.memory_bytes)
    return DeviceView("n1", device, busy, reserved_memory_bytes=jobs * memory, reserved_milli=milli)


def _snapshot(
    *views: DeviceView, earmarks: dict[str, tuple[str, str]] | None = None
) -> ClusterSnapshot:
    return ClusterSnapshot(
        nodes=(NodeView("n1", "cloud", "", devices=views),), earmarks=earmarks or {}
    )


def _job(job_id: str, memory: int, held_s: float = 0.0, **fields: object) -> JobRequest:
    return JobRequest(job_id, "d" * 64, 1e9, memory, 0, 0, held_s=held_s, **fields)  # type: ignore[arg-type]


BUSY = (10.0, 10.0, 0.0, 0.0)  # two 15 GiB jobs on seats 0 and 1: 10 GiB free


@pytest.mark.parametrize("policy", POLICIES)
def test_small_jobs_pass_a_big_one_until_it_has_waited_long(policy: str) -> None:
    snapshot = _snapshot(_busy(GPU0, BUSY, 15 * GIB))
    jobs = [_job("big", 20 * GIB, held_s=1.0), _job("small", 5 * GIB)]
    result = plan(snapshot, jobs, config=_config(policy))
    assert [p.job_id for p in result.placements] == ["small"]
    assert result.deferred == ("big",) and result.earmarks == {}


@pytest.mark.parametrize("policy", POLICIES)
def test_a_job_waiting_long_sets_a_device_aside_and_small_ones_wait_too(policy: str) -> None:
    snapshot = _snapshot(_busy(GPU0, BUSY, 15 * GIB))
    jobs = [_job("big", 20 * GIB, held_s=6.0), _job("small", 5 * GIB)]
    result = plan(snapshot, jobs, config=_config(policy))
    assert result.placements == ()
    assert sorted(result.deferred) == ["big", "small"]
    assert result.earmarks == {"big": ("n1", "gpu0")}
    assert "set aside" in result.solver


@pytest.mark.parametrize("policy", POLICIES)
def test_the_earmark_goes_where_work_ends_soonest_and_others_go_elsewhere(policy: str) -> None:
    snapshot = _snapshot(_busy(GPU0, (60.0, 60.0, 0.0, 0.0), 15 * GIB), _busy(GPU1, BUSY, 15 * GIB))
    jobs = [_job("big", 20 * GIB, held_s=6.0), _job("small", 5 * GIB)]
    result = plan(snapshot, jobs, config=_config(policy))
    assert result.earmarks == {"big": ("n1", "gpu1")}  # drains in 10 s, not 60 s
    (small,) = result.placements
    assert (small.job_id, small.device_id) == ("small", "gpu0")


def test_an_earmark_stays_where_it_was_made() -> None:
    snapshot = _snapshot(
        _busy(GPU0, (60.0, 60.0, 0.0, 0.0), 15 * GIB),
        _busy(GPU1, BUSY, 15 * GIB),
        earmarks={"big": ("n1", "gpu0")},
    )
    result = plan(snapshot, [_job("big", 20 * GIB, held_s=9.0)], config=_config())
    assert result.earmarks == {"big": ("n1", "gpu0")}


@pytest.mark.parametrize("policy", POLICIES)
def test_a_freed_seat_goes_to_the_job_waiting_long_first(policy: str) -> None:
    snapshot = _snapshot(_busy(GPU0, (5.0, 5.0, 5.0, 0.0), 5 * GIB))  # one seat free
    jobs = [_job("a-small", 1 * GIB), _job("z-big", 15 * GIB, held_s=6.0)]
    result = plan(snapshot, jobs, config=_config(policy))
    assert [p.job_id for p in result.placements] == ["z-big"]
    assert result.deferred == ("a-small",) and result.earmarks == {}


def test_the_earmarked_job_is_placed_once_its_device_has_drained() -> None:
    snapshot = _snapshot(
        _busy(GPU0, (10.0, 0.0, 0.0, 0.0), 15 * GIB), earmarks={"big": ("n1", "gpu0")}
    )
    jobs = [_job("big", 20 * GIB, held_s=8.0), _job("small", 5 * GIB)]
    result = plan(snapshot, jobs, config=_config())
    assert sorted(p.job_id for p in result.placements) == ["big", "small"]
    assert result.earmarks == {} and result.deferred == ()


def test_a_job_no_device_can_take_has_no_earmark() -> None:
    snapshot = _snapshot(_busy(GPU0, BUSY, 15 * GIB), earmarks={"big": ("n1", "gpu0")})
    result = plan(snapshot, [_job("big", 50 * GIB, held_s=8.0)], config=_config())
    assert "big" in result.unschedulable and result.earmarks == {}


def test_earmark_after_s_is_checked() -> None:
    with pytest.raises(ConfigError, match="earmark_after_s must be >= 0"):
        PlacementConfig(earmark_after_s=-1.0)
