"""The scheduler's state machine, driven by events and a fake clock (no I/O)."""

from __future__ import annotations

import time

import pytest

from anypu import PROTOCOL_VERSION
from anypu.devices import Device
from anypu.protos import messages as m
from anypu.scheduler._service import SchedulerService
from anypu.scheduler._state import (
    AgentConnected,
    AgentSaid,
    CancelRequested,
    Drop,
    JobSubmitted,
    Notify,
    PersistJob,
    SchedulerConfig,
    SchedulerState,
    Send,
    Tick,
)
from tests.builders import failed, join, submit_request

request = submit_request


def sends(actions, kind):
    return [a for a in actions if isinstance(a, Send) and isinstance(a.message, kind)]


def state_with(*names: str, **config) -> SchedulerState:
    state = SchedulerState(
        SchedulerConfig(**{"lost_after_s": 5.0, "retry_backoff_s": 0.0, **config})
    )
    for name in names:
        state.handle(AgentConnected(join(name), now=0.0))
    return state


def test_join_is_acknowledged_with_the_heartbeat_contract():
    state = SchedulerState(SchedulerConfig(heartbeat_interval_s=0.5, lost_after_s=2.5))
    actions = state.handle(AgentConnected(join("n1"), now=0.0))
    (ack,) = sends(actions, m.JoinAck)
    assert ack.message == m.JoinAck("n1", 0.5, 2.5, 1, PROTOCOL_VERSION)


def test_a_job_goes_pending_placed_running_succeeded():
    state = state_with("n1")
    actions = state.handle(JobSubmitted("j1", request(), now=1.0))
    (launch,) = sends(actions, m.Launch)
    assert launch.node_id == "n1" and launch.message.attempt == 1
    assert state.jobs["j1"].state == "placed"
    state.handle(AgentSaid("n1", 1, m.JobStarted("j1", 1), now=1.1))
    assert state.jobs["j1"].state == "running"
    actions = state.handle(AgentSaid("n1", 1, m.JobResult("j1", 1, outputs=b"out"), now=1.2))
    assert Notify("j1") in actions
    assert state.jobs["j1"].state == "succeeded" and state.jobs["j1"].outputs == b"out"


def test_a_lost_node_s_job_runs_elsewhere_and_its_late_result_is_discarded():
    state = state_with("n1")
    state.handle(JobSubmitted("j1", request(), now=1.0))
    state.handle(AgentConnected(join("n2"), now=2.0))
    state.handle(AgentSaid("n2", 1, m.Heartbeat(7.0), now=7.0))
    actions = state.handle(Tick(now=7.0))  # n1 silent since t=1 (> 5 s)
    assert state.nodes["n1"].state == "lost"
    (launch,) = sends(actions, m.Launch)
    assert launch.node_id == "n2" and launch.message.attempt == 2
    late = state.handle(AgentSaid("n1", 1, m.JobResult("j1", 1, outputs=b"late"), now=7.1))
    assert late == [Drop("n1", 1, "declared lost; re-join")]  # fenced: must re-join first
    assert state.jobs["j1"].state == "placed" and state.jobs["j1"].attempt == 2
    rejoin = state.handle(AgentConnected(join("n1", running=(("j1", 1),)), now=7.15))
    (cancel,) = sends(rejoin, m.Cancel)
    assert cancel.message == m.Cancel("j1", 1, "superseded")
    state.handle(AgentSaid("n2", 1, m.JobResult("j1", 2, outputs=b"good"), now=7.2))
    assert state.jobs["j1"].outputs == b"good"


def test_healthy_nodes_are_not_declared_lost():
    state = state_with("n1")
    for t in range(1, 30):
        state.handle(AgentSaid("n1", 1, m.Heartbeat(float(t)), now=float(t)))
        state.handle(Tick(now=t + 0.5))
    assert state.nodes["n1"].state == "ready"


def test_messages_from_a_replaced_connection_are_fenced_off():
    state = state_with("n1")
    state.handle(JobSubmitted("j1", request(), now=1.0))
    state.handle(AgentConnected(join("n1", running=(("j1", 1),)), now=2.0))  # epoch 2
    assert state.handle(AgentSaid("n1", 1, m.JobResult("j1", 1, outputs=b"old"), now=2.1)) == []
    state.handle(AgentSaid("n1", 2, m.JobResult("j1", 1, outputs=b"new"), now=2.2))
    assert state.jobs["j1"].outputs == b"new"


def test_rejoining_without_a_job_puts_it_back_in_the_queue():
    state = state_with("n1")
    state.handle(JobSubmitted("j1", request(), now=1.0))
    state.handle(AgentSaid("n1", 1, m.JobStarted("j1", 1), now=1.1))
    actions = state.handle(AgentConnected(join("n1"), now=2.0))
    (launch,) = sends(actions, m.Launch)
    assert launch.message.attempt == 2


def test_a_model_error_is_not_retried_but_a_node_failure_is():
    state = state_with("n1")
    state.handle(JobSubmitted("j1", request(), now=1.0))
    state.handle(AgentSaid("n1", 1, m.JobResult("j1", 1, failed(error_type="IndexError")), now=1.1))
    assert state.jobs["j1"].state == "failed"
    assert state.jobs["j1"].outcome.error_type == "IndexError"

    state.handle(JobSubmitted("j2", request(max_retries=1), now=2.0))
    state.handle(
        AgentSaid("n1", 1, m.JobResult("j2", 1, failed(m.FailureCode.WORKER_DIED)), now=2.1)
    )
    assert state.jobs["j2"].state == "placed" and state.jobs["j2"].attempt == 2
    state.handle(
        AgentSaid("n1", 1, m.JobResult("j2", 2, failed(m.FailureCode.WORKER_DIED)), now=2.2)
    )
    assert state.jobs["j2"].state == "failed"
    assert state.jobs["j2"].outcome.code is m.FailureCode.WORKER_DIED
    assert state.jobs["j2"].attempt == 2


AGENT_CODES = [
    m.FailureCode.MODEL_RAISED,
    m.FailureCode.ARTIFACT_REFUSED,
    m.FailureCode.OUT_OF_MEMORY,
    m.FailureCode.JOB_TIMEOUT,
    m.FailureCode.LOAD_FAILED,
    m.FailureCode.INPUTS_UNREADABLE,
    m.FailureCode.WORKER_DIED,
    m.FailureCode.NO_SUCH_SLICE,
    m.FailureCode.ARTIFACT_UNAVAILABLE,
]


@pytest.mark.parametrize("code", AGENT_CODES, ids=lambda c: c.value)
def test_a_node_s_failure_is_placed_again_and_the_submitter_s_ends_the_job(code):
    assert code.user_error != code.retryable  # every code an agent sends is one or the other
    state = state_with("n1", "n2")
    state.handle(JobSubmitted("j1", request(max_retries=2), now=1.0))
    node = state.jobs["j1"].placement.node_id
    state.handle(AgentSaid(node, 1, m.JobResult("j1", 1, failed(code)), now=1.1))
    job = state.jobs["j1"]
    if code.retryable:
        assert job.state == "placed" and job.attempt == 2 and job.outcome.ok
        assert job.lost_nodes == ([node] if code.crashed else [])
    else:
        assert job.state == "failed" and job.outcome.code is code and job.outcome.user_error


def test_cancel_a_running_job_tells_its_node():
    state = state_with("n1")
    state.handle(JobSubmitted("j1", request(), now=1.0))
    actions = state.handle(CancelRequested("j1", now=1.5))
    (cancel,) = sends(actions, m.Cancel)
    assert cancel.message.job_id == "j1"
    assert state.jobs["j1"].state == "cancelled"


def test_unschedulable_jobs_wait_then_fail_with_every_node_s_reason():
    state = state_with("n1", unschedulable_timeout_s=3.0)
    state.handle(JobSubmitted("j1", request(memory_bytes=64 << 30), now=1.0))
    job = state.jobs["j1"]
    assert job.state == "pending" and "n1" in job.pending_reasons
    state.handle(Tick(now=2.0))
    assert job.state == "pending"
    state.handle(AgentSaid("n1", 1, m.Heartbeat(4.5), now=4.5))
    actions = state.handle(Tick(now=4.5))
    assert Notify("j1") in actions
    assert job.state == "failed" and job.outcome.code is m.FailureCode.UNSCHEDULABLE
    assert "n1:" in job.outcome.message


def test_with_no_agents_the_error_says_how_to_start_one():
    state = state_with(unschedulable_timeout_s=0.0)
    state.handle(JobSubmitted("j1", request(), now=1.0))
    assert "anypu agent" in state.jobs["j1"].outcome.message


def test_queueing_spreads_a_burst_over_nodes():
    state = state_with("n1", "n2")
    for i in range(4):
        state.handle(JobSubmitted(f"j{i}", request(flops=1e12), now=1.0))
    nodes = {state.jobs[f"j{i}"].placement.node_id for i in range(4)}
    assert nodes == {"n1", "n2"}


def test_the_service_survives_a_restart_with_every_transition_persisted(tmp_path):
    service = SchedulerService(tmp_path, token="t")
    digest = service.blobs.put(b"artifact")
    info = service.submit(request(artifact_digest=digest, inputs=b"in"))
    service.close()
    again = SchedulerService(tmp_path, token="t")
    try:
        job = again.state.jobs[info.job_id]
        assert job.state == "pending" and job.request.inputs == b"in"
        assert again.store.integrity_check() == "ok"
        assert [s for _, s, _, _ in again.store.transitions(info.job_id)] == ["pending"]
    finally:
        again.close()


def test_a_short_job_s_result_also_records_that_it_ran():
    state = state_with("n1")
    state.handle(JobSubmitted("j1", request(), now=1.0))
    actions = state.handle(AgentSaid("n1", 1, m.JobResult("j1", 1, outputs=b"out"), now=1.01))
    steps = [a.transition for a in actions if isinstance(a, PersistJob)]
    assert steps == ["running", "succeeded"]


def test_a_job_whose_nodes_keep_dying_is_poison():
    state = state_with("n1", "n2", "n3", "n4")
    state.handle(JobSubmitted("j1", request(max_retries=10), now=0.0))
    now = 0.0
    for _ in range(3):
        job = state.jobs["j1"]
        victim = job.placement.node_id
        state.handle(AgentSaid(victim, 1, m.JobStarted("j1", job.attempt), now=now))
        now += 6.0
        for name, node in state.nodes.items():  # everyone else stays alive
            if name != victim and node.state == "ready":
                state.handle(AgentSaid(name, node.epoch, m.Heartbeat(now), now=now))
        state.handle(Tick(now=now))
        now += 1.0
        state.handle(Tick(now=now))
    job = state.jobs["j1"]
    assert job.state == "failed" and job.outcome.code is m.FailureCode.POISON
    assert len(job.lost_nodes) == 3


def test_a_refusal_is_retried_with_backoff_and_frees_its_slice():
    state = state_with("n1", retry_backoff_s=0.5)
    state.handle(JobSubmitted("j1", request(flops=1e12), now=1.0))
    busy = state.snapshot(1.0).nodes[0].devices[0].slice_busy_seconds[0]
    assert busy > 0
    refusal = m.JobResult("j1", 1, failed(m.FailureCode.ARTIFACT_UNAVAILABLE))
    state.handle(AgentSaid("n1", 1, refusal, now=1.1))
    job = state.jobs["j1"]
    assert job.state == "pending" and job.not_before > 1.1 and job.lost_nodes == []
    assert state.snapshot(1.1).nodes[0].devices[0].slice_busy_seconds[0] == 0.0
    state.handle(Tick(now=job.not_before + 0.01))
    assert job.state == "placed" and job.attempt == 2


def test_a_job_waits_for_a_known_node_that_is_down_instead_of_failing():
    state = state_with("n1", unschedulable_timeout_s=0.0)
    state.handle(Tick(now=7.0))  # n1 silent since t=0: lost
    assert state.nodes["n1"].state == "lost"
    state.handle(JobSubmitted("j1", request(), now=7.1))
    assert state.jobs["j1"].state == "pending" and "n1" in state.jobs["j1"].pending_reasons
    state.handle(AgentConnected(join("n1"), now=8.0))
    assert state.jobs["j1"].state == "placed"
    state.handle(JobSubmitted("j2", request(memory_bytes=1 << 40), now=8.1))
    assert state.jobs["j2"].state == "failed"  # no node could ever hold 1 TiB


def test_a_node_failing_distinct_jobs_for_reasons_not_theirs_is_quarantined():
    state = state_with("liar", "honest")
    for i in range(3):
        state.handle(JobSubmitted(f"j{i}", request(nodes=("liar",), max_retries=0), now=1.0))
        failure = m.JobResult(f"j{i}", 1, failed(m.FailureCode.ARTIFACT_UNAVAILABLE))
        state.handle(AgentSaid("liar", 1, failure, now=1.1))
    state.handle(JobSubmitted("pinned", request(nodes=("liar",)), now=2.0))
    pinned = state.jobs["pinned"]
    assert pinned.state == "pending"
    assert "quarantined" in pinned.pending_reasons["liar"]
    state.handle(JobSubmitted("free", request(), now=2.0))
    assert state.jobs["free"].placement.node_id == "honest"


def test_submit_rejects_oversized_text_fields_with_a_clear_message(tmp_path):
    import pytest

    from anypu.errors import ConfigError

    service = SchedulerService(tmp_path)
    try:
        digest = service.blobs.put(b"artifact")
        with pytest.raises(ConfigError, match="name is longer than 200"):
            service.submit(request(artifact_digest=digest, name="x" * 10_000))
        with pytest.raises(ConfigError, match="nodes: at most 256"):
            service.submit(request(artifact_digest=digest, nodes=("n",) * 1000))
        assert service.submit(request(artifact_digest=digest, name="ok")).state in (
            "pending",
            "failed",
        )
    finally:
        service.close()


def test_the_placement_history_survives_a_restart(tmp_path):
    """The workload GPU-sharing policies plan for is rebuilt from the placed jobs."""
    gpu = Device("gpu0", "gpu", "nvidia", "A100", 40 << 30, 156.0, "cpu", slices=4)
    service = SchedulerService(tmp_path, token="t")
    joined = m.Join(PROTOCOL_VERSION, "", "n1", "cloud", devices=(gpu,))
    service._handle(AgentConnected(joined, 1.0))
    digest = service.blobs.put(b"artifact")
    for _ in range(3):
        service.submit(request(artifact_digest=digest, device_kinds=("gpu",)))
    before = list(service.state.workload)
    service.flush()
    service.close()
    assert len(before) == 3 and before[0].gpus == 1 and before[0].gpu_milli == 250
    again = SchedulerService(tmp_path, token="t")
    try:
        assert list(again.state.workload) == before
    finally:
        again.close()


def test_every_action_carries_the_stimulus_of_the_event_that_caused_it():
    state = state_with("n1")
    actions = state.handle(JobSubmitted("job-1", request(), now=1.0))
    assert actions and {a.stimulus_id for a in actions} == {"submit-job-1"}
    (launch,) = sends(actions, m.Launch)
    result = m.JobResult("job-1", launch.message.attempt, m.NO_FAILURE, b"out")
    actions = state.handle(AgentSaid("n1", 1, result, now=2.0))
    assert {a.stimulus_id for a in actions} == {"result-job-1-1"}
    mine = state.handle(CancelRequested("job-1", now=3.0, stimulus_id="http-42"))
    assert all(a.stimulus_id == "http-42" for a in mine)


def test_an_agent_that_leaves_moves_its_jobs_at_once_and_is_listed_as_left():
    state = state_with("n1", "n2")
    actions = state.handle(JobSubmitted("j1", request(), now=1.0))
    (launch,) = sends(actions, m.Launch)
    leaving = launch.node_id
    actions = state.handle(AgentSaid(leaving, 1, m.Leave("stopped"), now=1.1))
    (again,) = sends(actions, m.Launch)  # no grace period: placed elsewhere now
    assert again.node_id != leaving and again.message.attempt == 2
    assert state.nodes[leaving].info(1.2).state == "left"
    state.handle(Tick(now=100.0))
    assert state.nodes[leaving].state == "left"  # never "lost": it said goodbye
    state.handle(AgentConnected(join(leaving), now=101.0))
    assert state.nodes[leaving].state == "ready"


def test_a_removed_node_is_forgotten_and_its_jobs_placed_elsewhere():
    from anypu.scheduler import ForgetNode, NodeRemoved

    state = state_with("n1", "n2")
    (launch,) = sends(state.handle(JobSubmitted("j1", request(), now=1.0)), m.Launch)
    gone = launch.node_id
    actions = state.handle(NodeRemoved(gone, now=2.0))
    assert ForgetNode(gone) in actions and gone not in state.nodes
    (again,) = sends(actions, m.Launch)
    assert again.node_id != gone
    assert all(a.stimulus_id == f"remove-{gone}" for a in actions)


def test_a_burst_is_placed_in_one_round_by_cp_sat_each_job_keeping_its_stimulus():
    from anypu.scheduler import JobsSubmitted

    state = state_with("n1", "n2")
    burst = tuple(JobSubmitted(f"j{i}", request(flops=1e12 * (i + 1)), now=1.0) for i in range(6))
    actions = state.handle(JobsSubmitted(burst, now=1.0))
    solvers = {state.jobs[f"j{i}"].placement.solver for i in range(6)}
    assert len(solvers) == 1 and "cp-sat" in solvers.pop()  # one round, never "single"
    assert {state.jobs[f"j{i}"].placement.node_id for i in range(6)} == {"n1", "n2"}
    for action in actions:
        if isinstance(action, PersistJob):
            assert action.stimulus_id == f"submit-{action.job.job_id}"
    launches = sends(actions, m.Launch)
    assert len(launches) == 6
    assert all(s.stimulus_id == f"submit-{s.message.job_id}" for s in launches)


def test_submissions_arriving_during_a_round_are_placed_together(tmp_path):
    import threading

    service = SchedulerService(tmp_path, token="t")
    try:
        for name in ("n1", "n2"):
            service._handle(AgentConnected(join(name), 1.0))
        digest = service.blobs.put(b"artifact")
        started = threading.Barrier(9)

        def submit() -> None:
            started.wait()
            service.submit(request(artifact_digest=digest, flops=1e12, wait=True))

        with service._lock:  # a round in progress: everyone arriving now waits for it
            threads = [threading.Thread(target=submit) for _ in range(8)]
            for thread in threads:
                thread.start()
            started.wait()
            deadline = time.monotonic() + 10
            while len(service._arrivals) < 8 and time.monotonic() < deadline:
                time.sleep(0.01)
        for thread in threads:
            thread.join(10)
        solvers = {j.placement.solver for j in service.state.jobs.values()}
        assert len(solvers) == 1 and "cp-sat" in solvers.pop()
    finally:
        service.close()


def test_a_backend_lacking_an_operator_is_a_placement_failure_and_the_job_moves_on():
    npu = Device("npu0", "npu", "huawei", "Ascend910B3", 64 << 30, 313.0, "npu:0")
    cpu = Device("cpu0", "cpu", "intel", "Xeon", 64 << 30, 0.5, "cpu")
    state = SchedulerState(SchedulerConfig(retry_backoff_s=0.0))
    state.handle(AgentConnected(join("ascend-1", devices=(npu,)), now=0.0))
    state.handle(AgentConnected(join("cpu-1", devices=(cpu,)), now=0.0))
    state.handle(JobSubmitted("j1", request(flops=1e12), now=1.0))
    job = state.jobs["j1"]
    assert job.placement.node_id == "ascend-1"  # the fast device first
    lacking = failed(
        m.FailureCode.OPERATOR_UNSUPPORTED,
        "ascend-1/npu0 (npu:0) lacks an operator the model needs: aten::_fft_r2c",
    )
    actions = state.handle(AgentSaid("ascend-1", 1, m.JobResult("j1", 1, lacking), now=1.1))
    assert job.state == "placed" and job.placement.node_id == "cpu-1"  # retried elsewhere
    steps = [(a.transition, a.detail) for a in actions if isinstance(a, PersistJob)]
    assert any(t == "pending" and "aten::_fft_r2c" in d for t, d in steps)  # the reason
    assert state.nodes["ascend-1"].state == "ready"  # the backend's gap: no quarantine
    # The same model is never sent to that backend again; others still are.
    state.handle(JobSubmitted("j2", request(flops=1e12), now=2.0))
    assert state.jobs["j2"].placement.node_id == "cpu-1"
    state.handle(JobSubmitted("j3", request(flops=1e12, artifact_digest="e" * 64), now=2.0))
    assert state.jobs["j3"].placement.node_id == "ascend-1"
    # With only that backend left, the job says why it cannot go there.
    state.handle(JobSubmitted("j4", request(flops=1e12, nodes=("ascend-1",)), now=3.0))
    reason = (
        state.jobs["j4"].pending_reasons.get("ascend-1", "") or state.jobs["j4"].outcome.message
    )
    assert "lacks an operator the model needs" in reason and "found on ascend-1" in reason
