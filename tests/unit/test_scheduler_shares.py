"""The scheduler keeps what jobs reserve of shared devices: placements carry it, the
next round's snapshot counts it, the agent is told the cap, nodes list it, and a model
measured using more than its estimate reserves that from then on."""

from __future__ import annotations

import dataclasses

import pytest

from anypu.devices import Device, with_shares
from anypu.errors import ConfigError, InputError
from anypu.placement import PlacementConfig
from anypu.protos import convert
from anypu.protos import messages as m
from anypu.scheduler import (
    AgentConnected,
    AgentSaid,
    JobSubmitted,
    SchedulerConfig,
    SchedulerService,
    SchedulerState,
)
from anypu.scheduler._store import BlobStore
from anypu.scheduler._validation import validate_submit
from anypu.sdk import Client, RunOptions
from anypu.sdk._embedded import InProcessTransport
from tests.builders import DIGEST, GIB, join, submit_request

GPU = with_shares(Device("gpu0", "gpu", "nvidia", "A10", 4 * GIB, 31.0, "cpu", simulated=True), 3)
MIB = 1 << 20
HOST = 64 * MIB  # what a job on host memory (a simulated device) reserves above its estimate


def _state() -> SchedulerState:
    state = SchedulerState(SchedulerConfig(lost_after_s=60.0))
    state.handle(AgentConnected(join("n1", devices=(GPU,)), now=0.0))
    return state


def _launches(actions: list) -> list[m.Launch]:
    return [a.message for a in actions if isinstance(getattr(a, "message", None), m.Launch)]


def test_reservations_are_placed_counted_launched_and_listed() -> None:
    state = _state()
    first = state.handle(JobSubmitted("a", submit_request(memory_bytes=GIB), now=1.0))
    (launch,) = _launches(first)
    assert launch.memory_limit_bytes == GIB + HOST  # the worker caps the job at it
    placement = state.jobs["a"].placement
    assert (placement.memory_bytes, placement.milli) == (GIB + HOST, 266)
    state.handle(JobSubmitted("b", submit_request(memory_bytes=2 * GIB), now=1.1))
    (view,) = state.snapshot(1.2).nodes[0].devices
    assert (view.reserved_memory_bytes, view.reserved_milli) == (3 * GIB + 2 * HOST, 782)
    # A third does not fit beside them: it waits, and is placed once one ends.
    state.handle(JobSubmitted("c", submit_request(memory_bytes=2 * GIB), now=1.3))
    assert state.jobs["c"].state == "pending"
    assert "no room now on the devices it may use" in state.jobs["c"].pending_reasons["all nodes"]
    reserved = state.reservations()["n1"]
    assert [(r.job_id, r.memory_bytes, r.milli) for r in reserved] == [
        ("a", GIB + HOST, 266),
        ("b", 2 * GIB + HOST, 516),
    ]
    actions = state.handle(AgentSaid("n1", 1, m.JobResult("b", 1, outputs=b"x"), now=2.0))
    (launch,) = _launches(actions)
    assert launch.job_id == "c" and state.jobs["c"].state == "placed"
    info = state.nodes["n1"].info(2.0, state.reservations()["n1"])
    assert (
        convert.node_info_from_pb(convert.node_info_to_pb(info)).reservations == info.reservations
    )


def test_a_model_measured_using_more_reserves_that_from_then_on() -> None:
    state = _state()
    state.handle(JobSubmitted("a", submit_request(memory_bytes=256 * MIB), now=1.0))
    usage = m.JobUsage("a", 1, "gpu0", 900 * MIB)
    state.handle(AgentSaid("n1", 1, m.Heartbeat(1.5, jobs=(usage,)), now=1.5))
    state.handle(JobSubmitted("b", submit_request(memory_bytes=256 * MIB), now=2.0))
    assert state.jobs["b"].placement.memory_bytes == 900 * MIB + HOST


def test_a_named_compute_share_is_reserved_and_checked() -> None:
    state = _state()
    state.handle(JobSubmitted("a", submit_request(compute_milli=600), now=1.0))
    assert state.jobs["a"].placement.milli == 600
    blobs = BlobStore.__new__(BlobStore)
    blobs.has = lambda digest: True  # type: ignore[method-assign]
    with pytest.raises(ConfigError, match="compute_milli must be from 0 to 1000"):
        validate_submit(submit_request(artifact_digest=DIGEST, compute_milli=1001), blobs)


@pytest.mark.parametrize("share", [-0.1, 1.5, "half", True])
def test_a_compute_share_out_of_range_says_what_is_accepted(share: object, tmp_path) -> None:
    import torch

    service = SchedulerService(str(tmp_path), token=None)
    client = Client(InProcessTransport(service))
    try:
        with pytest.raises(InputError, match="compute_share must be a number from 0 to 1"):
            client.submit(torch.nn.Linear(4, 2), torch.randn(1, 4), RunOptions(compute_share=share))  # type: ignore[arg-type]
    finally:
        service.close()


def test_reservations_are_exported_per_device_and_job() -> None:
    from anypu.scheduler._metrics import _readings_families

    state = _state()
    state.handle(JobSubmitted("a", submit_request(memory_bytes=GIB), now=1.0))
    node = state.nodes["n1"].info(1.0, state.reservations()["n1"])
    samples = {
        (family.name, tuple(sorted(s.labels.items()))): s.value
        for family in _readings_families([node])
        for s in family.samples
    }
    device = (("device", "gpu0"), ("node", "n1"))
    assert samples["anypu_device_reserved_memory_bytes", device] == GIB + HOST
    assert samples["anypu_device_reserved_milli", device] == 266
    job = (("device", "gpu0"), ("job", "a"), ("node", "n1"))
    assert samples["anypu_job_reserved_memory_bytes", job] == GIB + HOST


def test_memory_no_job_accounts_for_is_not_there_to_reserve() -> None:
    # An idle seat's runtime and warm models hold 2 GiB; a job reserved 1 GiB and has
    # allocated nothing yet: 4 - 1 - 2 leaves 1 GiB, so a 1.5 GiB job waits.
    state = _state()
    state.handle(JobSubmitted("a", submit_request(memory_bytes=GIB - HOST), now=1.0))
    usage = m.DeviceUsage("gpu0", memory_used_bytes=2 * GIB + 100 * MIB, measured=True)
    job = m.JobUsage("a", 1, "gpu0", 100 * MIB)
    state.handle(AgentSaid("n1", 1, m.Heartbeat(1.5, usage=(usage,), jobs=(job,)), now=1.5))
    (view,) = state.snapshot(1.6).nodes[0].devices
    assert view.unexplained_memory_bytes == 2 * GIB
    state.handle(JobSubmitted("b", submit_request(memory_bytes=1536 * MIB), now=2.0))
    assert state.jobs["b"].state == "pending"
    state.handle(JobSubmitted("c", submit_request(memory_bytes=512 * MIB), now=2.1))
    assert state.jobs["c"].state == "placed"


def test_a_job_over_the_share_its_estimate_sized_is_placed_again_once_larger() -> None:
    state = _state()
    state.handle(JobSubmitted("a", submit_request(memory_bytes=256 * MIB), now=1.0))
    over = m.Outcome.failed(m.FailureCode.MEMORY_EXCEEDED, "used 900 MiB of a 320 MiB share")
    over = m.Outcome(over.code, over.error_type, over.message, memory_used_bytes=900 * MIB)
    state.handle(AgentSaid("n1", 1, m.JobResult("a", 1, over), now=1.5))
    job = state.jobs["a"]
    assert job.state == "placed" and job.attempt == 2 and job.retries == 0
    assert job.placement.memory_bytes == 1350 * MIB + HOST  # 1.5 × what it used
    state.handle(AgentSaid("n1", 1, m.JobResult("a", 2, over), now=2.0))
    assert job.state == "failed" and job.outcome.code is m.FailureCode.MEMORY_EXCEEDED


def test_only_a_seat_s_own_job_memory_is_learnt() -> None:
    sliced = Device("gpu0", "gpu", "nvidia", "A10", 4 * GIB, 31.0, "cpu", simulated=True)
    state = SchedulerState(SchedulerConfig(lost_after_s=60.0))
    state.handle(AgentConnected(join("n1", devices=(sliced,)), now=0.0))
    state.handle(JobSubmitted("a", submit_request(memory_bytes=256 * MIB), now=1.0))
    usage = m.JobUsage("a", 1, "gpu0", 3 * GIB)  # a whole worker: runtime, warm models
    state.handle(AgentSaid("n1", 1, m.Heartbeat(1.5, jobs=(usage,)), now=1.5))
    assert state.learned.memory_peak == {}


def test_a_job_predicted_to_take_no_time_still_holds_its_seat() -> None:
    state = _state()
    state.handle(JobSubmitted("a", submit_request(memory_bytes=256 * MIB), now=1.0))
    placement = state.jobs["a"].placement
    state.jobs["a"].placement = dataclasses.replace(placement, predicted_seconds=0.0)
    (view,) = state.snapshot(1.1).nodes[0].devices
    assert view.slice_busy_seconds[placement.slice_index] > 0


def test_a_job_held_long_has_its_device_set_aside_until_it_fits() -> None:
    config = SchedulerConfig(lost_after_s=60.0, placement=PlacementConfig(earmark_after_s=1.0))
    state = SchedulerState(config)
    state.handle(AgentConnected(join("n1", devices=(GPU,)), now=0.0))
    for job_id in ("a", "b"):
        state.handle(JobSubmitted(job_id, submit_request(memory_bytes=GIB), now=1.0))
    state.handle(JobSubmitted("big", submit_request(memory_bytes=5 * GIB // 2), now=1.2))
    assert state.jobs["big"].state == "pending"
    # Not yet waiting long: a small job passes it.
    state.handle(JobSubmitted("c", submit_request(memory_bytes=GIB), now=2.0))
    assert state.jobs["c"].state == "placed"
    # When a ends, big has waited over a second: gpu0 is set aside, and d waits behind it.
    state.handle(AgentSaid("n1", 1, m.JobResult("a", 1, outputs=b"x"), now=2.5))
    assert state.jobs["big"].state == "pending"
    assert state.earmarks == {"big": ("n1", "gpu0")}
    assert "n1/gpu0 is set aside for it" in state.jobs["big"].pending_reasons["all nodes"]
    state.handle(JobSubmitted("d", submit_request(memory_bytes=GIB), now=2.6))
    assert state.jobs["d"].state == "pending"  # it would fit, but in big's room
    actions = state.handle(AgentSaid("n1", 1, m.JobResult("b", 1, outputs=b"x"), now=3.0))
    assert [launch.job_id for launch in _launches(actions)] == ["big"]
    assert state.earmarks == {} and state.jobs["big"].held_since is None
    assert state.jobs["d"].state == "pending"
