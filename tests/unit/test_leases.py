"""Leases in the scheduler's state machine: granted, used, recorded and revoked (no I/O)."""

from __future__ import annotations

import json

from anypu.protos import messages as m
from anypu.scheduler._records import JobRecord
from anypu.scheduler._state import (
    AgentConnected,
    AgentDisconnected,
    AgentSaid,
    JobSubmitted,
    Notify,
    PersistJob,
    SchedulerConfig,
    SchedulerState,
    Send,
    Tick,
)
from anypu.scheduler._store import _job_json, _job_to_row
from tests import builders
from tests.builders import done, failed, messages_sent, ran, submit_request


def join(name: str, direct: bool = True) -> m.Join:
    return builders.join(name, direct_runs=direct)


def request(**changes) -> m.SubmitRequest:
    return submit_request(**{"lease": True, "name": "MLP", **changes})


sent = messages_sent


def state_with(*nodes: m.Join, **config) -> SchedulerState:
    state = SchedulerState(SchedulerConfig(**{"lease_idle_s": 2.0, **config}))
    for node in nodes:
        state.handle(AgentConnected(node, now=0.0))
    return state


def run_job(state: SchedulerState, job_id: str, now: float, **changes) -> list:
    """Submit a job and report its success; the actions of the result."""
    (launch,) = sent(state.handle(JobSubmitted(job_id, request(**changes), now)), m.Launch)
    node = state.jobs[job_id].placement.node_id
    result = done(job_id, launch.attempt, run_seconds=0.01)
    return state.handle(AgentSaid(node, state.nodes[node].epoch, result, now + 0.01))


def test_a_succeeded_job_that_asked_for_a_lease_leaves_its_slice_leased():
    state = state_with(join("n1"))
    actions = run_job(state, "j1", 1.0)
    (granted,) = sent(actions, m.LeaseGranted)
    lease = granted.lease
    assert (lease.node_id, lease.device_id, lease.slice_index) == ("n1", "cpu0", 0)
    assert lease.artifact_digest == "a" * 64 and state.jobs["j1"].lease_id == lease.lease_id
    # The agent hears of the lease before the caller is woken to ask for it.
    kinds = [type(a.message if isinstance(a, Send) else a) for a in actions]
    assert kinds.index(m.LeaseGranted) < kinds.index(Notify)


def test_no_lease_unless_asked_for_and_the_agent_takes_direct_calls():
    assert not sent(run_job(state_with(join("n1")), "j1", 1.0, lease=False), m.LeaseGranted)
    assert not sent(run_job(state_with(join("n1", direct=False)), "j1", 1.0), m.LeaseGranted)
    assert not sent(run_job(state_with(join("n1"), lease_idle_s=0.0), "j1", 1.0), m.LeaseGranted)


def test_a_failed_job_grants_no_lease():
    state = state_with(join("n1"))
    (launch,) = sent(state.handle(JobSubmitted("j1", request(), 1.0)), m.Launch)
    refused = m.JobResult("j1", 1, failed())
    assert not sent(state.handle(AgentSaid("n1", 1, refused, 1.1)), m.LeaseGranted)


def test_runs_under_a_lease_are_recorded_as_jobs_placed_by_lease():
    state = state_with(join("n1"))
    (granted,) = sent(run_job(state, "j1", 1.0), m.LeaseGranted)
    lid = granted.lease.lease_id
    runs = (
        m.LeasedRun(lid, "job-a", 2.0, 2.001, ran(run_seconds=0.001)),
        m.LeasedRun(lid, "job-b", 2.1, 2.2, failed(traceback="tb")),
    )
    actions = state.handle(AgentSaid("n1", 1, m.LeasedRuns(runs), now=2.5))
    a, b = state.jobs["job-a"], state.jobs["job-b"]
    assert a.state == "succeeded" and a.placement.solver == "lease" and a.lease_id == lid
    assert a.placement.node_id == "n1" and a.request.name == "MLP" and not a.request.inputs
    assert abs(a.info().latency_seconds - 0.001) < 1e-9
    assert b.state == "failed" and (b.outcome.error_type, b.outcome.message) == (
        "ValueError",
        "bad",
    )
    assert b.outcome.user_error and b.outcome.traceback == "tb"
    persisted = [(p.job.job_id, p.transition) for p in actions if isinstance(p, PersistJob)]
    assert persisted == [("job-a", "succeeded"), ("job-b", "failed")]
    assert state.decisions["leased"] == 2
    # A run reported twice (after a re-join) is recorded once.
    again = state.handle(AgentSaid("n1", 1, m.LeasedRuns(runs[:1]), now=2.6))
    assert not [p for p in again if isinstance(p, PersistJob)]


def test_runs_under_a_lease_never_granted_or_granted_elsewhere_are_ignored():
    state = state_with(join("n1"), join("n2"))
    (granted,) = sent(run_job(state, "j1", 1.0), m.LeaseGranted)
    other = "n2" if granted.lease.node_id == "n1" else "n1"
    forged = m.LeasedRuns((m.LeasedRun("lease-nope", "job-x", 2.0, 2.1),))
    stolen = m.LeasedRuns((m.LeasedRun(granted.lease.lease_id, "job-y", 2.0, 2.1),))
    assert state.handle(AgentSaid(granted.lease.node_id, 1, forged, 2.2)) == []
    assert state.handle(AgentSaid(other, 1, stolen, 2.2)) == []
    assert "job-x" not in state.jobs and "job-y" not in state.jobs


def test_a_waiting_job_revokes_every_lease_and_is_placed_with_the_slice_free():
    state = state_with(join("n1"))
    (granted,) = sent(run_job(state, "j1", 1.0), m.LeaseGranted)
    actions = state.handle(JobSubmitted("j2", request(lease=False), now=2.0))
    assert sent(actions, m.LeaseRevoked) == [
        m.LeaseRevoked(granted.lease.lease_id, "other jobs are waiting")
    ]
    assert sent(actions, m.Launch) and not state.leases.active
    # Its calls reported late still count: the lease is retired, not forgotten.
    late = m.LeasedRuns((m.LeasedRun(granted.lease.lease_id, "job-late", 1.5, 1.6),))
    state.handle(AgentSaid("n1", 1, late, now=2.1))
    assert state.jobs["job-late"].state == "succeeded"


def test_no_lease_on_a_slice_other_jobs_are_queued_on():
    state = state_with(join("n1"))
    run_job(state, "j1", 1.0)
    (l2,) = sent(state.handle(JobSubmitted("j2", request(), 2.0)), m.Launch)
    (l3,) = sent(state.handle(JobSubmitted("j3", request(), 2.0)), m.Launch)  # same slice
    assert not state.leases.active  # j1's went when j2 arrived
    r2 = done("j2", l2.attempt)
    assert not sent(state.handle(AgentSaid("n1", 1, r2, 2.1)), m.LeaseGranted)  # j3 waits
    r3 = done("j3", l3.attempt)
    assert sent(state.handle(AgentSaid("n1", 1, r3, 2.2)), m.LeaseGranted)
    assert len(state.leases.active) == 1


def test_an_idle_lease_is_revoked_and_a_used_one_is_kept():
    state = state_with(join("n1"), lease_idle_s=2.0)
    (granted,) = sent(run_job(state, "j1", 1.0), m.LeaseGranted)
    lid = granted.lease.lease_id
    state.handle(AgentSaid("n1", 1, m.LeasedRuns((m.LeasedRun(lid, "r1", 2.5, 2.6),)), 2.9))
    assert not sent(state.handle(Tick(now=4.5)), m.LeaseRevoked)  # used at 2.9
    assert sent(state.handle(Tick(now=5.0)), m.LeaseRevoked) == [m.LeaseRevoked(lid, "idle")]


def test_a_joining_node_revokes_leases_and_a_leaving_one_loses_its_own():
    state = state_with(join("n1"))
    (granted,) = sent(run_job(state, "j1", 1.0), m.LeaseGranted)
    actions = state.handle(AgentConnected(join("n2"), now=2.0))
    assert sent(actions, m.LeaseRevoked) == [m.LeaseRevoked(granted.lease.lease_id, "n2 joined")]
    run_job(state, "j2", 3.0)
    (held,) = state.leases.active.values()
    state.handle(AgentDisconnected(held.lease.node_id, 1, now=4.0))
    assert not state.leases.active


def test_a_lease_s_record_serialises_like_any_job_and_its_request_once():
    request_ = request(inputs=b"")
    placement = m.PlacementInfo("n1", "cpu0", 0, 0.01, {"compute": 0.01}, "lease")
    jobs = [
        JobRecord(job_id=f"r{i}", request=request_, state="succeeded", placement=placement)
        for i in range(2)
    ]
    for job in jobs + [JobRecord(job_id="p", request=request(inputs=b"in"))]:
        assert json.loads(_job_json(job)) == json.loads(json.dumps(_job_to_row(job)))
