"""Which replica a call goes to (``comm.ReplicaBalancer``, peak EWMA of answer times as
the caller measures them), and the SDK's ``Service`` routing by it."""

from __future__ import annotations

import time
from collections import Counter

from anypu.comm import FAILURE_PENALTY_S, ReplicaBalancer
from anypu.protos import messages as m
from anypu.sdk import Client
from anypu.sdk._services import Service


def _timed(balancer: ReplicaBalancer, key: str, seconds: float, now: float) -> None:
    balancer.started(key, now)
    balancer.finished(key, seconds, now)


def test_the_replica_predicted_first_is_the_one_that_answered_fastest():
    balancer = ReplicaBalancer()
    _timed(balancer, "slow", 0.100, now=0.0)
    _timed(balancer, "fast", 0.010, now=0.0)
    assert balancer.order(["slow", "fast"], ["slow", "fast"], now=0.1) == ["fast", "slow"]
    # One never timed is predicted at the best known, so it is tried and learnt early.
    assert balancer.order(["slow", "new"], ["slow", "new"], now=0.1) == ["new", "slow"]


def test_calls_in_flight_multiply_a_replica_s_predicted_time():
    balancer = ReplicaBalancer()
    _timed(balancer, "a", 0.010, now=0.0)
    _timed(balancer, "b", 0.015, now=0.0)
    balancer.started("a", 0.0)  # one call in flight at a: 2 × 10 ms > 15 ms
    assert balancer.order(["a", "b"], ["a", "b"], now=0.0) == ["b", "a"]
    assert balancer.predicted_s("a", now=0.0) == 0.020


def test_a_slow_answer_counts_at_once_and_recovery_gradually():
    balancer = ReplicaBalancer(decay_s=10.0)
    _timed(balancer, "a", 0.010, now=0.0)
    _timed(balancer, "a", 0.500, now=1.0)  # a peak replaces the average at once
    assert balancer.predicted_s("a", now=1.0) == 0.500
    _timed(balancer, "a", 0.010, now=2.0)  # a fast one moves it only partway back
    assert 0.010 < balancer.predicted_s("a", now=2.0) < 0.500
    # Unread, the average decays toward zero: an avoided replica is tried again.
    assert balancer.predicted_s("a", now=60.0) < 0.010


def test_a_failed_call_counts_as_a_slow_one_and_gone_replicas_are_forgotten():
    balancer = ReplicaBalancer()
    _timed(balancer, "a", 0.010, now=0.0)
    _timed(balancer, "b", 0.010, now=0.0)
    balancer.started("a", 0.0)
    balancer.finished("a", None, 0.0)
    assert balancer.predicted_s("a", now=0.0) == FAILURE_PENALTY_S
    assert balancer.order(["a", "b"], ["a", "b"], now=0.0) == ["b", "a"]
    balancer.forget(["b"])
    assert balancer.predicted_s("a", now=0.0) == 0.010  # unknown again: the best known


def test_a_hung_replica_looks_slower_the_longer_it_hangs():
    balancer = ReplicaBalancer()
    _timed(balancer, "hung", 0.005, now=0.0)
    _timed(balancer, "ok", 0.010, now=0.0)
    balancer.started("hung", 1.0)  # never answers
    for now in (1.0, 30.0, 60.0):
        _timed(balancer, "ok", 0.010, now=now)
    assert balancer.predicted_s("hung", now=60.0) >= 59.0
    assert balancer.order(["hung", "ok"], ["hung", "ok"], now=60.0) == ["ok", "hung"]


class _Replicas:
    """A transport whose two replicas answer in their own time (the fast one nearer)."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.calls: Counter[str] = Counter()

    def deployments(self, traffic: m.Traffic | None = None) -> list[m.DeploymentInfo]:
        replicas = tuple(
            m.Replica(key, "ready", key, "cpu0", "edge", m.Lease(key, key, "cpu0", 0, "d"), 1)
            for key in self.seconds
        )
        return [m.DeploymentInfo("svc", "d", len(replicas), replicas, version=1)]

    def run_leased(self, lease: m.Lease, args: tuple) -> m.JobResult:
        time.sleep(self.seconds[lease.lease_id])
        self.calls[lease.lease_id] += 1
        return m.JobResult("call", 1, value=args[0])


def test_a_service_sends_its_calls_to_the_replica_that_answers_it_first():
    transport = _Replicas({"far": 0.030, "near": 0.002})
    service = Service(Client(transport), "svc")  # type: ignore[arg-type]
    for i in range(40):
        assert service(i) == i
    # Each is tried (one never timed looks as good as the best), then the near one
    # takes the calls; the far one is probed again only as its average decays.
    assert transport.calls["near"] >= 36 and transport.calls["far"] >= 1, transport.calls
