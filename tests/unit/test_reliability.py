"""Reliability in-process: the real state machines and store under injected faults.

Each case runs in one thread on a fake clock (``tests/fake_cluster.py``), so it is
deterministic and takes milliseconds; ``tests/integration/test_reliability.py`` keeps
the cases that need real processes (SIGKILL, a TCP partition, a process group killed).
Intervals keep Kubernetes' ratio: heartbeat 0.2 s, lost after 1.5 s.
"""

from __future__ import annotations

import pytest

from anypu.protos import messages as m
from tests.builders import failed
from tests.fake_cluster import (
    CrashingAgent,
    FakeCluster,
    PartitionedAgent,
    ResultLosingAgent,
)


@pytest.fixture
def cluster(fake_cluster: FakeCluster) -> FakeCluster:
    return fake_cluster


def test_a_job_runs_once_and_its_caller_is_woken(cluster: FakeCluster) -> None:
    agent = cluster.add_agent("a1")
    cluster.submit("job-1")
    assert list(agent.running) == [("job-1", 1)]
    agent.finish("job-1")
    assert cluster.job("job-1").state == "succeeded"
    assert cluster.notified == ["job-1"]
    assert cluster.transitions("job-1") == ["pending", "placed", "running", "succeeded"]


def test_a_long_job_is_announced_and_heartbeats_keep_its_node_ready(cluster: FakeCluster) -> None:
    agent = cluster.add_agent("a1")
    cluster.submit("job-1")
    cluster.advance(10.0)  # many lost_after periods: heartbeats keep it alive
    assert cluster.node_state("a1") == "ready"
    assert cluster.job("job-1").state == "running"
    agent.finish("job-1")
    assert cluster.transitions("job-1") == ["pending", "placed", "running", "succeeded"]


def test_scheduler_crash_with_jobs_in_flight_loses_none_and_runs_none_twice(
    cluster: FakeCluster,
) -> None:
    agents = [cluster.add_agent(name) for name in ("a1", "a2")]
    jobs = [cluster.submit(f"job-{i}") for i in range(20)]
    cluster.commit()  # a submit is acknowledged once durable
    for agent in agents:
        for job_id, _ in list(agent.running)[:3]:
            agent.finish(job_id)  # results the crashed scheduler never committed
    assert len(cluster.store.load_unfinished_jobs()) == 20  # none of those results is durable
    cluster.crash_scheduler()
    cluster.advance(1.0)
    for _ in range(20):
        for agent in agents:
            agent.finish_all()
        cluster.advance(0.2)
    for job_id in jobs:
        assert cluster.job(job_id).state == "succeeded", job_id
        transitions = cluster.transitions(job_id)
        assert transitions.count("succeeded") == 1, (job_id, transitions)
    # The results the crash lost were re-sent, not re-run: each job ran exactly once.
    assert sorted(job for agent in agents for job, _ in agent.launched) == sorted(jobs)


def test_a_result_lost_with_its_stream_is_resent_on_the_rejoin(cluster: FakeCluster) -> None:
    agent = cluster.add_agent("a1", kind=ResultLosingAgent)
    cluster.submit("job-1")
    agent.finish("job-1")
    assert isinstance(agent, ResultLosingAgent) and agent.lost  # the fault happened
    assert cluster.job("job-1").state == "succeeded"
    assert cluster.job("job-1").attempt == 1
    assert cluster.transitions("job-1").count("succeeded") == 1


def test_a_short_partition_changes_nothing(cluster: FakeCluster) -> None:
    far = cluster.add_agent("far", kind=PartitionedAgent)
    assert isinstance(far, PartitionedAgent)
    cluster.submit("job-1")
    far.cut = True
    cluster.advance(1.0)  # inside the 1.5 s grace
    assert cluster.now - cluster.scheduler.nodes["far"].last_heartbeat >= 0.9  # it was cut
    far.cut = False
    cluster.advance(0.5)
    assert cluster.node_state("far") == "ready"
    far.finish("job-1")
    assert cluster.job("job-1").attempt == 1 and cluster.job("job-1").state == "succeeded"


def test_a_long_partition_moves_the_job_and_the_late_result_is_discarded(
    cluster: FakeCluster,
) -> None:
    far = cluster.add_agent("far", kind=PartitionedAgent)
    assert isinstance(far, PartitionedAgent)
    cluster.submit("job-1")
    near = cluster.add_agent("near")
    far.cut = True
    cluster.advance(2.0)
    assert cluster.node_state("far") == "lost"
    assert list(near.running) == [("job-1", 2)]
    far.finish("job-1", outputs=b"late")  # behind the cut: never arrives
    far.cut = False
    cluster.advance(0.5)  # far's stream is dropped; it re-joins, fenced, and resends
    late = [
        msg
        for name, msg in cluster.received
        if name == "far" and isinstance(msg, m.JobResult) and msg.outputs == b"late"
    ]
    assert [(r.job_id, r.attempt) for r in late] == [("job-1", 1)]  # it arrived, and ...
    assert cluster.scheduler.jobs["job-1"].state != "succeeded"  # ... was discarded
    near.finish("job-1", outputs=b"right")
    job = cluster.scheduler.jobs["job-1"]
    assert (job.state, job.attempt, job.outputs) == ("succeeded", 2, b"right")
    assert job.placement is not None and job.placement.node_id == "near"
    cluster.advance(0.5)
    assert cluster.node_state("far") == "ready"
    assert cluster.transitions("job-1").count("succeeded") == 1


def test_a_job_that_kills_its_worker_three_times_is_poison(cluster: FakeCluster) -> None:
    cluster.add_agent("a1", kind=CrashingAgent)
    cluster.submit("job-1")
    cluster.advance(1.0)
    info = cluster.job("job-1")
    assert info.state == "failed"
    assert info.outcome.code is m.FailureCode.POISON
    assert info.attempt == cluster.config.poison_after


def test_a_model_error_is_not_retried(cluster: FakeCluster) -> None:
    agent = cluster.add_agent("a1")
    cluster.submit("job-1")
    agent.finish("job-1", failed(m.FailureCode.MODEL_RAISED, "bad shape"))
    info = cluster.job("job-1")
    assert (info.state, info.attempt) == ("failed", 1)
    assert info.outcome.code is m.FailureCode.MODEL_RAISED


def test_a_cancelled_job_leaves_its_slice(cluster: FakeCluster) -> None:
    agent = cluster.add_agent("a1")
    cluster.submit("job-1")
    assert list(agent.running) == [("job-1", 1)]
    cluster.cancel("job-1")
    assert agent.running == {}
    assert cluster.job("job-1").state == "cancelled"
