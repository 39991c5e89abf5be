"""Callers' end-to-end call times in buckets (``anypu.comm.CallLog``), and the
scheduler's merge of them into a deployment's callers' p50/p99 and histogram."""

from __future__ import annotations

import pytest

from anypu.comm import CALL_SECONDS_BUCKETS, CallLog, merged, quantile
from anypu.protos import messages as m
from anypu.scheduler import AgentConnected, SchedulerConfig, SchedulerState
from anypu.scheduler._events import DeploymentApplied, DeploymentsCalled
from tests.builders import cpu_device, join, submit_request


def test_a_call_log_counts_by_bucket_and_empties_when_drained():
    log = CallLog()
    for seconds in (0.0005, 0.003, 0.003, 20.0):
        log.add("mlp", seconds)
    log.add("other", 0.2)
    calls, times = log.drain()
    assert calls == (("mlp", 4), ("other", 1))
    mlp = times[0]
    assert len(mlp.buckets) == len(CALL_SECONDS_BUCKETS) + 1
    assert mlp.buckets[0] == 1 and mlp.buckets[2] == 2 and mlp.buckets[-1] == 1
    assert mlp.seconds == pytest.approx(20.0065)
    assert log.drain() == ((), ())
    log.restore(times)  # not delivered: said next time
    assert log.drain()[0] == (("mlp", 4), ("other", 1))


def test_quantiles_interpolate_within_a_bucket():
    assert quantile((), 0.5) == 0.0
    # 100 calls between 10 and 25 ms: the median half way through that bucket.
    buckets = [0] * (len(CALL_SECONDS_BUCKETS) + 1)
    buckets[CALL_SECONDS_BUCKETS.index(0.025)] = 100
    assert quantile(buckets, 0.5) == pytest.approx(0.0175)
    assert quantile(buckets, 0.99) == pytest.approx(0.02485)
    above = [0] * len(CALL_SECONDS_BUCKETS) + [3]
    assert quantile(above, 0.5) == CALL_SECONDS_BUCKETS[-1]
    assert merged((1, 2), (3,)) == (4, 2)


def test_the_scheduler_merges_every_caller_s_times_wherever_they_are():
    state = SchedulerState(SchedulerConfig())
    node = join("a", devices=(cpu_device(),), direct_address="127.0.0.1:7000")
    state.handle(AgentConnected(node, 0.0))
    state.handle(DeploymentApplied("mlp", submit_request(name="MLP"), 1, now=1.0))
    fast, slow = CallLog(), CallLog()
    for _ in range(90):
        fast.add("mlp", 0.004)
    for _ in range(10):
        slow.add("mlp", 0.4)
    for log in (fast, slow):  # no site known (no network): times still count
        calls, times = log.drain()
        state.handle(DeploymentsCalled(m.Traffic(calls, times=times), 2.0))
    info = state.deployment_info("mlp", 2.0)
    assert info is not None
    assert info.caller_calls_per_s == pytest.approx(10.0)  # 100 over the 10 s window
    assert 0.0025 < info.caller_p50_s <= 0.005
    assert 0.25 < info.caller_p99_s <= 0.5
    assert sum(info.caller_buckets) == 100 and info.traffic == ()
    later = state.deployment_info("mlp", 30.0)
    assert later is not None and later.caller_calls_per_s == 0.0
    assert sum(later.caller_buckets) == 100  # the histogram keeps them
