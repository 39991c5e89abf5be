"""The agent's state machine, driven by events and a fake clock (no I/O)."""

from __future__ import annotations

import dataclasses

from anypu.agents._state import (
    AgentIdentity,
    AgentState,
    AgentStateConfig,
    AnswerCall,
    CallArrived,
    CancelAtWorker,
    Fetch,
    Fetched,
    GrantAtWorker,
    LeasedRunDone,
    LeasedRunsUnsent,
    RevokeAtWorker,
    RunCall,
    RunningJob,
    SchedulerSaid,
    StreamBroke,
    Submit,
    Tick,
    WorkerAnswered,
)
from anypu.protos import messages as m
from tests.builders import cpu_device, done, failed, gpu_device, messages_sent

DIGEST = "d" * 64
LAUNCH = m.Launch("job-1", 1, DIGEST, "cpu0", 0, inputs=b"in")


def agent(**config: object) -> AgentState:
    identity = AgentIdentity("edge-1", "edge", (cpu_device(slices=2),), token="t")
    return AgentState(identity, AgentStateConfig(**config))  # type: ignore[arg-type]


def joined(**config: object) -> AgentState:
    state = agent(**config)
    state.handle(SchedulerSaid(m.JoinAck("n1", 1.0, 5.0, 3, 2), 0.0, "join"))
    return state


sent = messages_sent


def said(message: m.SchedulerMessage, now: float = 1.0, cached: bool = False) -> SchedulerSaid:
    return SchedulerSaid(message, now, "sid", cached)


def lease(lease_id: str = "L1", slice_index: int = 1) -> m.Lease:
    return m.Lease(lease_id, "n1", "cpu0", slice_index, DIGEST)


def test_join_says_who_the_agent_is_and_what_it_still_runs() -> None:
    state = agent()
    join = state.join_message([("job-7", 2)], warm=(DIGEST,))
    assert (join.name, join.tier, join.token) == ("edge-1", "edge", "t")
    assert join.running == (("job-7", 2),)
    assert join.warm_digests == (DIGEST,)
    ack = state.handle(said(m.JoinAck("n1", 0.5, 5.0, 4, 2)))
    assert ack == []
    assert (state.node_id, state.epoch, state.connected) == ("n1", 4, True)


def test_a_cached_launch_is_submitted_and_an_uncached_one_fetched_first() -> None:
    state = joined()
    assert state.handle(said(LAUNCH, cached=True)) == [Submit(LAUNCH, b"in", "sid")]
    assert state.handle(said(LAUNCH, cached=False)) == [Fetch(LAUNCH, "sid")]
    by_blob = m.Launch("job-2", 1, DIGEST, "cpu0", 0, inputs_digest="b" * 64)
    assert state.handle(said(by_blob, cached=True)) == [Fetch(by_blob, "sid")]
    fetched = state.handle(Fetched(by_blob, b"blob", "", 2.0, "sid"))
    assert fetched == [Submit(by_blob, b"blob", "sid")]


def test_a_failed_fetch_or_a_missing_slice_is_a_typed_failure_sent_up() -> None:
    state = joined()
    out = state.handle(Fetched(LAUNCH, b"", "connection reset", 2.0, "sid"))
    (result,) = sent(out, m.JobResult)
    assert result.outcome.code is m.FailureCode.ARTIFACT_UNAVAILABLE
    assert "connection reset" in result.outcome.message
    assert (result.node_id, result.device_id) == ("n1", "cpu0")
    nowhere = m.Launch("job-3", 1, DIGEST, "gpu9", 0)
    (result,) = sent(state.handle(said(nowhere)), m.JobResult)
    assert result.outcome.code is m.FailureCode.NO_SUCH_SLICE
    assert "edge-1 has no slice gpu9/0" in result.outcome.message


def test_results_are_kept_while_disconnected_and_resent_on_the_next_join() -> None:
    state = joined()
    assert sent(state.handle(WorkerAnswered(done("job-1"), 1.0, "a")), m.JobResult)
    state.handle(StreamBroke("gone", 2.0, "b"))
    assert state.handle(WorkerAnswered(done("job-2"), 3.0, "c")) == []  # not connected
    join = state.join_message([], warm=())
    assert set(join.running) == {("job-1", 1), ("job-2", 1)}
    resent = sent(state.handle(said(m.JoinAck("n1", 1.0, 5.0, 4, 2), 4.0)), m.JobResult)
    assert [r.job_id for r in resent] == ["job-1", "job-2"]
    assert all(r.node_id == "n1" for r in resent)


def test_the_resend_window_is_bounded_by_age_count_and_bytes() -> None:
    state = joined(resend_window_s=10.0, resend_max=3, resend_max_bytes=10)
    for i in range(5):
        state.handle(WorkerAnswered(done(f"job-{i}", outputs=b"xx"), float(i), "s"))
    assert [job for job, _ in state.join_message([], ()).running] == ["job-2", "job-3", "job-4"]
    state.handle(WorkerAnswered(done("big", outputs=b"x" * 9), 5.0, "s"))
    assert [job for job, _ in state.join_message([], ()).running] == ["big"]
    state.handle(WorkerAnswered(done("late"), 100.0, "s"))
    assert [job for job, _ in state.join_message([], ()).running] == ["late"]


def test_cancel_goes_to_the_worker() -> None:
    state = joined()
    assert state.handle(said(m.Cancel("job-1", 2))) == [CancelAtWorker("job-1", 2, "sid")]


def test_a_call_under_a_granted_lease_runs_and_is_recorded_for_the_report() -> None:
    state = joined()
    assert state.handle(said(m.LeaseGranted(lease()))) == [GrantAtWorker(lease(), "sid")]
    assert state.lease_settled("L1")
    (run,) = state.handle(CallArrived("L1", "job-9", 5.0, "call"))
    assert run == RunCall("job-9", lease(), "call")
    (answer,) = state.handle(WorkerAnswered(done("job-9"), 5.5, "ans"))
    assert isinstance(answer, AnswerCall) and answer.result is not None
    assert answer.result.node_id == "n1"
    (report,) = sent(state.handle(Tick(6.0, "t")), m.LeasedRuns)
    assert report.runs == (m.LeasedRun("L1", "job-9", 5.0, 5.5, done("job-9").outcome),)


def test_a_call_under_an_unknown_or_ended_lease_is_refused() -> None:
    state = joined()
    assert not state.lease_settled("L1")
    assert state.handle(CallArrived("L1", "j", 1.0, "c")) == [AnswerCall("j", None, "c")]
    state.handle(said(m.LeaseGranted(lease())))
    assert state.handle(said(m.LeaseRevoked("L1", "idle"))) == [RevokeAtWorker(lease(), "sid")]
    assert state.lease_settled("L1")  # ended: a caller need not wait for a grant
    assert state.handle(CallArrived("L1", "j", 1.0, "c")) == [AnswerCall("j", None, "c")]
    assert state.handle(said(m.LeaseRevoked("L1", "again"))) == []


def test_a_rejoin_ends_the_previous_streams_leases() -> None:
    state = joined()
    state.handle(said(m.LeaseGranted(lease("L1"))))
    state.handle(said(m.LeaseGranted(lease("L2", 0))))
    out = state.handle(said(m.JoinAck("n1", 1.0, 5.0, 9, 2)))
    assert out == [RevokeAtWorker(lease("L1"), "sid"), RevokeAtWorker(lease("L2", 0), "sid")]
    assert state.leases == {}
    assert state.lease_settled("L1") and state.lease_settled("L2")


def test_ended_leases_are_remembered_within_a_bound() -> None:
    state = joined(ended_leases_kept=2)
    for name in ("A", "B", "C"):
        state.handle(said(m.LeaseRevoked(name, "x")))
    assert [state.lease_settled(n) for n in "ABC"] == [False, True, True]


def test_leased_runs_go_in_batches_and_unsent_ones_are_kept() -> None:
    state = joined(leased_runs_batch=2, leased_runs_kept=4)
    runs = [m.LeasedRun("L1", f"j{i}", 0.0, 1.0, m.NO_FAILURE) for i in range(5)]
    for run in runs:
        state.handle(LeasedRunDone(run, "w"))
    assert state.unreported_leased_runs() == 4  # the oldest beyond the bound is dropped
    batches = sent(state.handle(Tick(1.0, "t")), m.LeasedRuns)
    assert [len(b.runs) for b in batches] == [2, 2]
    state.handle(LeasedRunsUnsent(batches[1].runs, "t"))
    (again,) = sent(state.handle(Tick(1.1, "t")), m.LeasedRuns)
    assert again.runs == tuple(runs[3:])


def test_only_jobs_still_running_after_a_while_are_announced_once() -> None:
    state = joined(announce_after_s=0.05)
    short = Tick(1.02, "t", running=(RunningJob("job-1", 1, 1.0),))
    assert sent(state.handle(short), m.JobStarted) == []
    long = Tick(1.1, "t", running=(RunningJob("job-1", 1, 1.0),))
    assert sent(state.handle(long), m.JobStarted) == [m.JobStarted("job-1", 1)]
    assert sent(state.handle(long), m.JobStarted) == []


def test_direct_calls_are_never_announced() -> None:
    state = joined()
    state.handle(said(m.LeaseGranted(lease())))
    state.handle(CallArrived("L1", "job-9", 1.0, "c"))
    tick = Tick(5.0, "t", running=(RunningJob("job-9", 1, 1.0),))
    assert sent(state.handle(tick), m.JobStarted) == []


def test_heartbeats_follow_the_acknowledged_interval_and_count_busy_slices() -> None:
    state = joined()
    tick = Tick(10.0, "t", busy=frozenset({("cpu0", 1)}), warm=(DIGEST,))
    (beat,) = sent(state.handle(tick), m.Heartbeat)
    assert beat.running_jobs == 1 and beat.warm_digests == (DIGEST,)
    (usage,) = beat.usage
    assert (usage.busy_slices, usage.utilisation) == (1, 0.5)
    assert usage.free_memory_bytes == cpu_device(slices=2).slice_memory_bytes
    assert sent(state.handle(Tick(10.5, "t")), m.Heartbeat) == []
    assert len(sent(state.handle(Tick(11.0, "t")), m.Heartbeat)) == 1


def test_nothing_is_sent_before_the_join_is_acknowledged() -> None:
    state = agent()
    assert state.handle(Tick(10.0, "t", running=(RunningJob("j", 1, 0.0),))) == []
    assert state.handle(WorkerAnswered(done("j"), 10.0, "a")) == []


def test_a_failed_answer_keeps_its_typed_outcome() -> None:
    state = joined()
    result = m.JobResult("job-1", 1, failed(m.FailureCode.WORKER_DIED, "killed"))
    (up,) = sent(state.handle(WorkerAnswered(result, 1.0, "a")), m.JobResult)
    assert up.outcome.code is m.FailureCode.WORKER_DIED and up.outcome.retryable


def test_a_direct_call_seen_running_after_it_answered_is_still_not_announced() -> None:
    # The shell reads its slices before the tick is handled: the call may be done by then.
    state = joined()
    tick = Tick(5.0, "t", running=(RunningJob("job-9", 1, 1.0, direct=True),))
    assert sent(state.handle(tick), m.JobStarted) == []


def test_a_stale_tick_after_the_result_does_not_announce_the_job_again() -> None:
    state = joined()
    running = (RunningJob("job-1", 1, 1.0),)
    assert len(sent(state.handle(Tick(2.0, "t", running=running)), m.JobStarted)) == 1
    state.handle(WorkerAnswered(done("job-1"), 2.1, "a"))
    assert sent(state.handle(Tick(2.2, "t", running=running)), m.JobStarted) == []


def test_a_heartbeat_carries_the_probes_readings_and_each_job_s_memory():
    from anypu.devices import Reading
    from anypu.protos import messages as pm

    real = cpu_device("cpu0")
    fake = dataclasses.replace(gpu_device("gpu0"), simulated=True)
    state = AgentState(AgentIdentity("n1", "edge", (real, fake)))
    state.handle(SchedulerSaid(m.JoinAck("n1", 1.0, 5.0, 1, 2), 0.0, "join"))
    readings = {
        "cpu0": Reading(utilisation=0.42, memory_used_bytes=5 << 30),
        "gpu0": Reading(utilisation=0.99, memory_used_bytes=1),  # simulated: never read
    }
    jobs = (pm.JobUsage("job-1", 1, "cpu0", 300 << 20),)
    tick = Tick(10.0, "tick", busy=frozenset({("gpu0", 0)}), readings=readings, job_memory=jobs)
    (beat,) = messages_sent(state.handle(tick), m.Heartbeat)
    cpu, gpu = beat.usage
    assert cpu.measured and cpu.utilisation == 0.42 and cpu.memory_used_bytes == 5 << 30
    assert not gpu.measured and gpu.utilisation == 1.0 and gpu.memory_used_bytes == 0
    assert beat.jobs == jobs


def test_a_job_s_memory_is_its_process_on_the_device_else_its_resident_set():
    import os

    from anypu.agents._agent import job_memory
    from anypu.devices import Reading

    gpu = dataclasses.replace(gpu_device("gpu0"), simulated=False, torch_device="cuda:0")
    assert job_memory(gpu, 77, Reading(process_memory={77: 123})) == 123
    assert job_memory(gpu, 77, Reading(process_memory={})) is None  # the GPU does not say
    rss = job_memory(cpu_device("cpu0"), os.getpid(), None)
    assert rss is not None and rss > 10 << 20  # this test process: tens of MB at least


def test_a_backend_saying_it_lacks_an_operator_is_told_from_a_model_raising():
    from anypu.agents._runner import missing_operator

    dispatcher = NotImplementedError(
        "Could not run 'aten::_fft_r2c' with arguments from the 'PrivateUse1' backend."
    )
    assert missing_operator(dispatcher) == "aten::_fft_r2c"
    dtype = RuntimeError("\"addmm_impl_cpu_\" not implemented for 'Half'")
    assert missing_operator(dtype) == "addmm_impl_cpu_"
    mps = NotImplementedError(
        "The operator 'aten::unique_consecutive' is not currently implemented for the MPS device."
    )
    assert missing_operator(mps) == "aten::unique_consecutive"
    assert missing_operator(NotImplementedError("my model has no backward yet")) is None
    assert (
        missing_operator(ValueError("Could not run 'aten::x' with arguments from the 'X' backend"))
        is None
    )
