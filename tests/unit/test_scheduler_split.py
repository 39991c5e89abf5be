"""A job split across two devices in the scheduler's state machine (no I/O): its head
runs first where the split put it, the tail on the head's outputs; a failed head runs
the job whole; a cancelled job cancels its head; the split survives the state store."""

from __future__ import annotations

from anypu.devices import Device
from anypu.placement import PlacementConfig, build_network
from anypu.protos import messages as m
from anypu.scheduler._state import (
    AgentConnected,
    AgentSaid,
    CancelRequested,
    JobSubmitted,
    SchedulerConfig,
    SchedulerState,
    Send,
)
from anypu.scheduler._store import StateStore
from tests.builders import done, failed, join, submit_request

GIB = 1 << 30
MB = 1_000_000
WHOLE, HEAD, TAIL = "w" * 64, "h" * 64, "t" * 64
# A phone beside its site's scheduler (inputs go up to the scheduler and the agent
# fetches them), which reaches the cloud over an 8 Mb/s uplink (1 MB/s), 20 ms away.
NETWORK = build_network(
    {
        "sites": ["scheduler", "phone", "cloud"],
        "links": [
            {"a": "phone", "b": "scheduler", "latency_ms": 1, "bandwidth_mbps": 1000},
            {"a": "scheduler", "b": "cloud", "latency_ms": 20, "bandwidth_mbps": 8},
        ],
    }
)
PHONE_CPU = Device("cpu0", "cpu", "arm", "A78", 8 * GIB, 0.004, "cpu")
CLOUD_GPU = Device("gpu0", "gpu", "nvidia", "A100", 40 * GIB, 156.0, "cuda:0")


def _stage(digest: str, gflops: float, inputs: int, outputs: int) -> m.SubmitRequest:
    return m.SubmitRequest(
        artifact_digest=digest,
        flops=gflops * 1e9,
        memory_bytes=64 << 20,
        input_bytes=inputs,
        output_bytes=outputs,
        param_bytes=10_000,
    )


def _request(**changes: object) -> m.SubmitRequest:
    # 6 MB in, 4 kB out; the head (0.002 GFLOP) leaves 24 kB for the tail (2 GFLOP).
    cut = m.SplitOption(
        "after conv2 (24 kB)",
        24_000,
        _stage(HEAD, 0.002, 6 * MB, 24_000),
        _stage(TAIL, 2.0, 24_000, 4_000),
    )
    fields = {
        "artifact_digest": WHOLE,
        "flops": 2.002e9,
        "input_bytes": 6 * MB,
        "output_bytes": 4_000,
        "param_bytes": 10_000,
        "origin": "phone",
        "name": "Net",
        "deadline_ms": 2_000.0,
        "splits": (cut,),
        **changes,
    }
    return submit_request(**fields)


def _state() -> SchedulerState:
    config = SchedulerConfig(
        lost_after_s=60.0,
        retry_backoff_s=0.0,
        placement=PlacementConfig(launch_overhead_s=0.0, use_cpsat=False),
    )
    state = SchedulerState(config, network=NETWORK)
    state.handle(AgentConnected(join("phone-1", "device", (PHONE_CPU,), site="phone"), now=0.0))
    state.handle(AgentConnected(join("cloud-1", "cloud", (CLOUD_GPU,), site="cloud"), now=0.0))
    return state


def _launches(actions: list[object]) -> list[tuple[str, m.Launch]]:
    return [
        (a.node_id, a.message)
        for a in actions
        if isinstance(a, Send) and isinstance(a.message, m.Launch)
    ]


def test_the_head_runs_on_the_phone_then_the_tail_on_the_cloud_on_its_outputs() -> None:
    state = _state()
    ((node, launch),) = _launches(state.handle(JobSubmitted("j1", _request(), now=1.0)))
    assert (node, launch.job_id, launch.artifact_digest) == ("phone-1", "j1.head", HEAD)
    job = state.jobs["j1"]
    assert job.state == "pending" and job.split_stage == "head"
    assert "head on phone-1/cpu0, tail on cloud-1/gpu0" in job.info().split
    assert "waiting for its head (j1.head)" in job.pending_reasons["all nodes"]
    assert state.decisions["split"] == 1

    actions = state.handle(AgentSaid("phone-1", 1, done("j1.head", outputs=b"act"), now=1.1))
    ((node, launch),) = _launches(actions)
    assert (node, launch.job_id, launch.artifact_digest) == ("cloud-1", "j1", TAIL)
    assert job.request.inputs == b"act" and job.request.origin == "phone"
    state.handle(AgentSaid("cloud-1", 1, done("j1", outputs=b"y"), now=1.2))
    assert job.state == "succeeded" and job.outputs == b"y"
    assert job.info().head_job_id == "j1.head" and job.info().deadline_met is True


def test_a_job_a_split_does_not_help_runs_whole() -> None:
    state = _state()
    # Inputs of 6 kB cross the uplink in 6 ms: sending them to the cloud is best.
    actions = state.handle(JobSubmitted("j1", _request(input_bytes=6_000), now=1.0))
    ((node, launch),) = _launches(actions)
    assert (node, launch.job_id, launch.artifact_digest) == ("cloud-1", "j1", WHOLE)
    assert state.jobs["j1"].split_stage == "whole" and "j1.head" not in state.jobs


def test_a_failed_head_runs_the_job_whole() -> None:
    state = _state()
    state.handle(JobSubmitted("j1", _request(max_retries=0), now=1.0))
    result = m.JobResult("j1.head", 1, failed(m.FailureCode.MODEL_RAISED, "gone"))
    ((node, launch),) = _launches(state.handle(AgentSaid("phone-1", 1, result, now=1.1)))
    assert (launch.job_id, launch.artifact_digest) == ("j1", WHOLE)
    assert state.jobs["j1"].split_stage == "whole" and state.jobs["j1"].split == ""
    assert state.decisions["split_fell_back"] == 1


def test_cancelling_a_split_job_cancels_its_head() -> None:
    state = _state()
    state.handle(JobSubmitted("j1", _request(), now=1.0))
    actions = state.handle(CancelRequested("j1", now=1.05))
    cancels = [a.message for a in actions if isinstance(a, Send)]
    assert [c.job_id for c in cancels] == ["j1.head"]
    assert state.jobs["j1"].state == state.jobs["j1.head"].state == "cancelled"


def test_a_split_job_and_its_cuts_survive_the_state_store(tmp_path) -> None:
    state = _state()
    state.handle(JobSubmitted("j1", _request(), now=1.0))
    store = StateStore(tmp_path)
    store.save_job(state.jobs["j1"], "pending", "split", 1.0)
    store.save_job(state.jobs["j1.head"], "pending", "", 1.0)
    restored = {j.job_id: j for j in store.load_unfinished_jobs()}
    store.close()
    job = restored["j1"]
    assert job.request.splits == state.jobs["j1"].request.splits
    assert (job.split_stage, job.head_job_id) == ("head", "j1.head")
    assert restored["j1.head"].feeds == "j1"
