"""Deployments in the scheduler's state machine (no I/O): replicas placed and warmed as
jobs, kept as leases held by the deployment, reconciled to the wanted count as nodes come
and go, released on scale-down and delete."""

from __future__ import annotations

from anypu.protos import messages as m
from anypu.scheduler import AgentConnected, AgentSaid, SchedulerConfig, SchedulerState, Tick
from anypu.scheduler._deployments import canary_refusal, rollout_refusal
from anypu.scheduler._events import (
    DeploymentApplied,
    DeploymentDeleted,
    DeploymentRolledOut,
    ForgetDeployment,
    JobSubmitted,
    PersistDeployment,
)
from tests.builders import cpu_device, done, join, messages_sent, submit_request

TEMPLATE = submit_request(name="MLP", inputs=b"example")


def _state(*direct: str, plain: tuple[str, ...] = ()) -> SchedulerState:
    state = SchedulerState(SchedulerConfig(lost_after_s=5.0, retry_backoff_s=0.0))
    for i, name in enumerate(direct):
        address = f"127.0.0.1:{7000 + i}"
        state.handle(
            AgentConnected(join(name, devices=(cpu_device(),), direct_address=address), 0.0)
        )
    for name in plain:
        state.handle(AgentConnected(join(name, devices=(cpu_device(),)), 0.0))
    return state


def _warm_all(state: SchedulerState, actions: list, now: float) -> list:
    """Answer every Launch in ``actions`` with success; the actions that caused."""
    out: list = []
    for send in [a for a in actions if isinstance(getattr(a, "message", None), m.Launch)]:
        launch = send.message
        result = done(launch.job_id, launch.attempt)
        out += state.handle(AgentSaid(send.node_id, send.epoch, result, now))
    return out


def test_a_deployment_places_warms_and_leases_its_replicas() -> None:
    state = _state("a", "b")
    actions = state.handle(DeploymentApplied("mlp", TEMPLATE, 2, now=1.0))
    assert any(isinstance(a, PersistDeployment) and a.replicas == 2 for a in actions)
    launches = messages_sent(actions, m.Launch)
    assert len(launches) == 2 and all(launch.inputs == b"example" for launch in launches)
    info = state.deployment_info("mlp")
    assert info is not None and [r.state for r in info.replicas] == ["warming", "warming"]
    granted = messages_sent(_warm_all(state, actions, 2.0), m.LeaseGranted)
    assert len(granted) == 2
    info = state.deployment_info("mlp")
    assert info is not None and len(info.ready) == 2 and info.message == ""
    assert {r.node_id for r in info.ready} == {"a", "b"}
    assert {r.lease.address for r in info.ready if r.lease} == {"127.0.0.1:7000", "127.0.0.1:7001"}
    assert all(r.replica_id.startswith("mlp.replica-") for r in info.ready)
    # Held by the deployment: idle for an hour, a new node, waiting jobs take none back.
    for name in ("a", "b"):
        state.handle(AgentSaid(name, 1, m.Heartbeat(3599.0), now=3599.0))
    later = state.handle(Tick(3600.0))
    assert not messages_sent(later, m.LeaseRevoked)
    joined = state.handle(AgentConnected(join("c", direct_address="127.0.0.1:7009"), 3600.0))
    assert not messages_sent(joined, m.LeaseRevoked)
    info = state.deployment_info("mlp")
    assert info is not None and len(info.ready) == 2


def test_a_lost_node_s_replica_is_placed_again_elsewhere() -> None:
    state = _state("a", "b")
    actions = state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=1.0))
    _warm_all(state, actions, 1.5)
    info = state.deployment_info("mlp")
    assert info is not None and len(info.ready) == 1
    lost = info.ready[0].node_id
    alive = "b" if lost == "a" else "a"
    state.handle(AgentSaid(alive, 1, m.Heartbeat(8.0), now=8.0))  # only one keeps beating
    actions = state.handle(Tick(9.0))  # the other is silent past lost_after_s
    (launch,) = [a for a in actions if isinstance(getattr(a, "message", None), m.Launch)]
    assert launch.node_id == alive
    _warm_all(state, [launch], 9.5)
    info = state.deployment_info("mlp")
    assert info is not None and [r.node_id for r in info.ready] == [alive]


def test_scaling_down_releases_the_newest_and_delete_releases_all() -> None:
    state = _state("a", "b", "c")
    actions = state.handle(DeploymentApplied("mlp", TEMPLATE, 3, now=1.0))
    _warm_all(state, actions, 2.0)
    down = state.handle(DeploymentApplied("mlp", None, 1, now=3.0))
    assert len(messages_sent(down, m.LeaseRevoked)) == 2
    info = state.deployment_info("mlp")
    assert info is not None and info.replicas_wanted == 1 and len(info.ready) == 1
    gone = state.handle(DeploymentDeleted("mlp", now=4.0))
    assert len(messages_sent(gone, m.LeaseRevoked)) == 1
    assert any(isinstance(a, ForgetDeployment) for a in gone)
    assert state.deployment_info("mlp") is None


def test_without_a_node_taking_direct_calls_it_says_what_to_start() -> None:
    state = _state(plain=("a",))
    actions = state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=1.0))
    assert not messages_sent(actions, m.Launch)
    info = state.deployment_info("mlp")
    assert info is not None and info.replicas == () and "--direct-address" in info.message


def _fail_launch(state: SchedulerState, actions: list, code: m.FailureCode, now: float) -> None:
    (send,) = [a for a in actions if isinstance(getattr(a, "message", None), m.Launch)]
    failure = m.JobResult(
        send.message.job_id, send.message.attempt, m.Outcome.failed(code, "shape mismatch")
    )
    state.handle(AgentSaid(send.node_id, send.epoch, failure, now))


def test_a_model_that_fails_its_example_stops_until_deployed_again() -> None:
    state = _state("a")
    actions = state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=1.0))
    _fail_launch(state, actions, m.FailureCode.MODEL_RAISED, 2.0)
    state.handle(AgentSaid("a", 1, m.Heartbeat(2.4), now=2.4))
    again = state.handle(Tick(2.5))
    info = state.deployment_info("mlp")
    assert info is not None and "shape mismatch" in info.message
    assert "deploy again" in info.message and not messages_sent(again, m.Launch)
    fixed = state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=3.0))
    assert messages_sent(fixed, m.Launch)


def _busy(state: SchedulerState, lease: m.Lease, now: float, seconds: float, calls: int) -> None:
    """The agent reports ``calls`` calls of ``seconds`` each under ``lease``."""
    runs = tuple(
        m.LeasedRun(lease.lease_id, f"call-{now}-{i}", now - seconds, now) for i in range(calls)
    )
    state.handle(AgentSaid(lease.node_id, 1, m.LeasedRuns(runs), now))


def _beat(state: SchedulerState, now: float, *names: str) -> None:
    for name in names:
        state.handle(AgentSaid(name, 1, m.Heartbeat(now), now=now))


def test_replicas_follow_the_calls_in_flight_and_sleep_at_zero_when_idle() -> None:
    state = _state("a", "b", "c")
    actions = state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=1.0, bounds=(0, 3)))
    (granted,) = messages_sent(_warm_all(state, actions, 1.5), m.LeaseGranted)
    lease = granted.lease
    # 20 calls of 0.5 s over the 10 s window: 1 in flight on average, over 0.7 a replica.
    _busy(state, lease, 5.0, 0.5, 20)
    _beat(state, 5.0, "a", "b", "c")
    up = state.handle(Tick(5.1))
    info = state.deployment_info("mlp")
    assert info is not None and info.replicas_wanted == 2
    assert "1 → 2 replica(s): 1.00 calls in flight" in info.events[-1]
    _warm_all(state, up, 5.5)
    # Quiet: down one at a time only after 30 s lower, then to zero 60 s after the last call.
    for now in (20.0, 34.0):
        _beat(state, now, "a", "b", "c")
        state.handle(Tick(now))
    info = state.deployment_info("mlp")
    assert info is not None and info.replicas_wanted == 2  # lower for 14 s only
    for now in (45.0, 50.0, 60.0, 66.0):
        _beat(state, now, "a", "b", "c")
        revoked = messages_sent(state.handle(Tick(now)), m.LeaseRevoked)
        if now == 66.0:
            assert len(revoked) == 1  # no call since 5 s: asleep
    info = state.deployment_info("mlp")
    assert info is not None and info.replicas_wanted == 0 and info.ready == ()
    assert "no call for 60 s" in info.events[-1]  # since the second replica was ready, 5.5
    # A call wakes it: the caller scales it to one; the cold start is an event.
    woken = state.handle(DeploymentApplied("mlp", None, 1, now=70.0, reason="a call woke it"))
    _warm_all(state, woken, 71.25)
    info = state.deployment_info("mlp")
    assert info is not None and len(info.ready) == 1
    assert "0 → 1 replica(s): a call woke it" in info.events[-2]
    assert "cold start: a replica ready 1.25 s after a call woke it" in info.events[-1]


def test_a_replica_s_slice_counts_as_taken_so_the_next_one_goes_to_a_free_slice() -> None:
    state = SchedulerState(SchedulerConfig(lost_after_s=5.0, retry_backoff_s=0.0))
    node = join("a", devices=(cpu_device(slices=2),), direct_address="127.0.0.1:7000")
    state.handle(AgentConnected(node, 0.0))
    first = state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=1.0))
    _warm_all(state, first, 1.5)
    second = state.handle(DeploymentApplied("mlp", None, 2, now=2.0))
    _warm_all(state, second, 2.5)
    info = state.deployment_info("mlp")
    assert info is not None and len(info.ready) == 2
    slices = {r.lease.slice_index for r in info.ready if r.lease}
    assert slices == {0, 1}


def test_a_replica_s_slice_is_its_own_until_released_and_a_job_waits_saying_so() -> None:
    state = _state("a")  # one node, one slice
    _warm_all(state, state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=1.0)), 1.5)
    queued = state.handle(JobSubmitted("job-1", submit_request(), now=2.0))
    assert not messages_sent(queued, m.Launch)  # not queued behind the replica's calls
    job = state.jobs["job-1"]
    assert job.state == "pending"
    assert "held by deployments' replicas (mlp ×1)" in job.pending_reasons["all nodes"]
    assert "anypu scale" in job.pending_reasons["all nodes"]
    other = state.handle(DeploymentApplied("other", TEMPLATE, 1, now=2.5))
    assert not messages_sent(other, m.Launch)  # nor is another deployment's replica
    released = state.handle(DeploymentApplied("mlp", None, 0, now=3.0))
    assert len(messages_sent(released, m.LeaseRevoked)) == 1
    launches = messages_sent(released + state.handle(Tick(3.1)), m.Launch)
    assert "job-1" in {x.job_id for x in launches}


def test_deploying_anew_rolls_over_old_replicas_only_once_new_ones_are_ready() -> None:
    state = _state("a", "b")
    first = state.handle(DeploymentApplied("mlp", TEMPLATE, 2, now=1.0))
    _warm_all(state, first, 1.5)
    v2 = submit_request(name="MLP", inputs=b"example", artifact_digest="b" * 64)
    update = state.handle(DeploymentApplied("mlp", v2, 2, now=2.0))
    assert not messages_sent(update, m.LeaseRevoked)  # the old ones keep serving
    launches = messages_sent(update, m.Launch)
    assert len(launches) == 2 and {x.artifact_digest for x in launches} == {"b" * 64}
    info = state.deployment_info("mlp")
    assert info is not None and info.version == 2
    assert sorted((r.state, r.version) for r in info.replicas) == [
        ("ready", 1),
        ("ready", 1),
        ("warming", 2),
        ("warming", 2),
    ]
    assert "rolling update to version 2" in info.events[-1]
    done_actions = _warm_all(state, update, 2.5)
    assert len(messages_sent(done_actions, m.LeaseRevoked)) == 2  # now, and not before
    info = state.deployment_info("mlp")
    assert info is not None and [r.version for r in info.ready] == [2, 2]
    assert "version 2 ready on 2 replica(s): 2 of version 1 released" in info.events[-1]
    gone = state.handle(DeploymentDeleted("mlp", now=3.0))
    assert len(messages_sent(gone, m.LeaseRevoked)) == 2


def test_a_deployment_is_not_idle_while_its_first_replica_still_warms() -> None:
    config = SchedulerConfig(lost_after_s=600.0, scale_to_zero_after_s=2.0)
    state = SchedulerState(config)
    state.handle(AgentConnected(join("a", devices=(cpu_device(),), direct_address="h:1"), 0.0))
    actions = state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=1.0, bounds=(0, 2)))
    state.handle(Tick(10.0))  # a slow cold start: 9 s warming, no call yet
    info = state.deployment_info("mlp")
    assert info is not None and info.replicas_wanted == 1
    _warm_all(state, actions, 10.5)
    state.handle(Tick(11.0))
    info = state.deployment_info("mlp")
    assert info is not None and len(info.ready) == 1  # idle counts from when it was ready
    state.handle(Tick(13.0))
    info = state.deployment_info("mlp")
    assert info is not None and info.replicas_wanted == 0


V2 = submit_request(name="MLP", inputs=b"example", artifact_digest="b" * 64)


def _canary(state: SchedulerState, replicas: int = 4, percent: int = 25) -> list:
    _warm_all(state, state.handle(DeploymentApplied("mlp", TEMPLATE, replicas, now=1.0)), 1.5)
    return state.handle(DeploymentApplied("mlp", V2, replicas, now=2.0, canary_percent=percent))


def test_a_canary_takes_its_share_of_replicas_and_calls_beside_the_stable_version() -> None:
    state = _state("a", "b", "c", "d")
    update = _canary(state)
    launches = messages_sent(update, m.Launch)
    assert [x.artifact_digest for x in launches] == ["b" * 64]  # round(4 × 25 %) = 1
    revoked = messages_sent(_warm_all(state, update, 2.5), m.LeaseRevoked)
    assert len(revoked) == 1  # the stable side keeps 3 of its 4
    info = state.deployment_info("mlp")
    assert info is not None and (info.version, info.stable_version, info.canary_percent) == (
        2,
        1,
        25,
    )
    assert sorted(r.version for r in info.ready) == [1, 1, 1, 2]
    assert "canary: version 2 takes 25 % of calls" in info.events[-1]
    # Calls draw their side: 25 % to the canary.
    assert {r.version for r in info.serving(0.2)} == {2}
    assert {r.version for r in info.serving(0.3)} == {1}


def test_a_lost_stable_replica_is_placed_again_with_the_stable_model() -> None:
    state = _state("a", "b")
    update = _canary(state, replicas=2, percent=50)
    _warm_all(state, update, 2.5)
    info = state.deployment_info("mlp")
    assert info is not None and sorted(r.version for r in info.ready) == [1, 2]
    stable = next(r for r in info.ready if r.version == 1)
    other = "b" if stable.node_id == "a" else "a"
    state.handle(AgentSaid(other, 1, m.Heartbeat(8.0), now=8.0))
    again = state.handle(Tick(9.0))  # the stable replica's node is lost
    launches = messages_sent(again, m.Launch)
    assert [x.artifact_digest for x in launches] == [TEMPLATE.artifact_digest]
    info = state.deployment_info("mlp")
    assert info is not None and [r.version for r in info.replicas if r.state == "warming"] == [1]


def test_promote_rolls_over_to_the_canary_and_rollback_restores_the_stable_version() -> None:
    state = _state("a", "b", "c", "d")
    _warm_all(state, _canary(state, replicas=2, percent=50), 2.5)
    promoted = state.handle(DeploymentRolledOut("mlp", "promote", now=3.0))
    assert not messages_sent(promoted, m.LeaseRevoked)  # the stable serves until replaced
    assert [x.artifact_digest for x in messages_sent(promoted, m.Launch)] == ["b" * 64]
    assert len(messages_sent(_warm_all(state, promoted, 3.5), m.LeaseRevoked)) == 1
    info = state.deployment_info("mlp")
    assert info is not None and [r.version for r in info.ready] == [2, 2]
    assert info.canary_percent == 0 and info.stable_version == 1
    back = state.handle(DeploymentRolledOut("mlp", "rollback", now=4.0))
    assert [x.artifact_digest for x in messages_sent(back, m.Launch)] == [
        TEMPLATE.artifact_digest
    ] * 2
    assert len(messages_sent(_warm_all(state, back, 4.5), m.LeaseRevoked)) == 2
    info = state.deployment_info("mlp")
    assert info is not None and info.version == 1 and [r.version for r in info.ready] == [1, 1]
    assert any(isinstance(a, PersistDeployment) and a.version == 1 for a in back)


def test_rolling_back_a_canary_drops_its_replicas_at_once() -> None:
    state = _state("a", "b", "c")
    _warm_all(state, _canary(state, replicas=2, percent=50), 2.5)
    back = state.handle(DeploymentRolledOut("mlp", "rollback", now=3.0))
    assert [x.artifact_digest for x in messages_sent(back, m.Launch)] == [TEMPLATE.artifact_digest]
    revoked = messages_sent(back, m.LeaseRevoked)
    info = state.deployment_info("mlp")
    assert info is not None and info.version == 1 and info.canary_percent == 0
    # The canary's one replica goes at once; the stable side grows back to 2.
    assert len(revoked) == 1 and [r.version for r in info.ready] == [1]
    assert "rolled back from version 2 to version 1" in " ".join(info.events)


def test_what_cannot_be_rolled_out_says_why() -> None:
    state = _state("a")
    _warm_all(state, state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=1.0)), 1.5)
    record = state.deployments["mlp"]
    assert "runs no canary" in rollout_refusal(record, "promote")
    assert "no version before 1" in rollout_refusal(record, "rollback")
    assert "use 'promote' or 'rollback'" in rollout_refusal(record, "undo")


def test_a_latency_target_adds_replicas_until_calls_answer_within_it() -> None:
    state = _state("a", "b", "c", "d")
    targets = m.Autoscaling(target_latency_s=0.1)
    actions = state.handle(
        DeploymentApplied("mlp", TEMPLATE, 1, now=1.0, bounds=(1, 3), autoscaling=targets)
    )
    (granted,) = messages_sent(_warm_all(state, actions, 1.5), m.LeaseGranted)
    # 12 calls of 0.25 s (queue and run) in 10 s: 0.3 in flight, under the 0.7 target,
    # but 2.5 × the latency aimed at: ceil(1 × 0.25 / 0.1) = 3.
    _busy(state, granted.lease, 5.0, 0.25, 12)
    _beat(state, 5.0, "a", "b", "c", "d")
    up = state.handle(Tick(5.1))
    info = state.deployment_info("mlp")
    assert info is not None and info.replicas_wanted == 3
    assert "calls took 250 ms on average on 1 replica(s) (target 100 ms)" in info.events[-1]
    # The slow calls from before are not counted again: no further step up.
    _beat(state, 6.0, "a", "b", "c", "d")
    state.handle(Tick(6.0))
    assert state.deployments["mlp"].replicas == 3
    _warm_all(state, up, 6.5)
    # Still slow on all 3 (the model alone is slower than the target): capped, and said.
    lease = state.leases.of_deployment("mlp")[0].lease
    _busy(state, lease, 8.0, 0.25, 12)
    _beat(state, 8.0, "a", "b", "c", "d")
    state.handle(Tick(8.1))
    info = state.deployment_info("mlp")
    assert info is not None and info.replicas_wanted == 3
    assert "at max_replicas 3: calls took 250 ms" in info.events[-1]


def test_a_deployment_s_own_delays_override_the_scheduler_s() -> None:
    state = _state("a", "b")
    quick = m.Autoscaling(scale_down_after_s=2.0, scale_to_zero_after_s=5.0)
    actions = state.handle(
        DeploymentApplied("mlp", TEMPLATE, 2, now=1.0, bounds=(0, 2), autoscaling=quick)
    )
    _warm_all(state, actions, 1.5)
    for now in (2.0, 4.5):  # no load: lower for 2.5 s > 2 s (the scheduler's is 30 s)
        _beat(state, now, "a", "b")
        state.handle(Tick(now))
    assert state.deployments["mlp"].replicas == 1
    _beat(state, 7.0, "a", "b")
    state.handle(Tick(7.0))  # 5.5 s after the last ready replica (60 s by default)
    info = state.deployment_info("mlp")
    assert info is not None and info.replicas_wanted == 0
    assert info.autoscaling == quick


def test_a_canary_is_refused_where_it_could_not_split_calls_safely() -> None:
    state = _state("a", "b")
    spec = (m.TensorSpec("x", "FP32", (4, 64)),)
    assert "is new" in canary_refusal(None, V2, spec, (), state.leases, "mlp")
    first = state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=1.0, inputs=spec))
    record = state.deployments["mlp"]
    # Its one replica still warming: the version does not serve yet.
    assert "still rolling over" in canary_refusal(record, V2, spec, (), state.leases, "mlp")
    _warm_all(state, first, 1.5)
    assert canary_refusal(record, V2, spec, (), state.leases, "mlp") == ""
    assert "already serves this model" in canary_refusal(
        record, TEMPLATE, spec, (), state.leases, "mlp"
    )
    other = (m.TensorSpec("x", "FP32", (8, 64)),)
    assert "the same inputs and outputs" in canary_refusal(
        record, V2, other, (), state.leases, "mlp"
    )


def test_a_replaced_canary_gets_none_of_the_stable_share() -> None:
    lease = m.Lease("l", "a", "cpu0", 0, "d")
    replicas = tuple(m.Replica(f"r{v}", "ready", lease=lease, version=v) for v in (1, 2))
    info = m.DeploymentInfo("mlp", "d", 2, replicas, version=3, canary_percent=10, stable_version=1)
    # Version 3 has no ready replica yet: calls go to the stable version 1 only.
    assert [r.version for r in info.serving(0.05)] == [1]
    assert [r.version for r in info.serving(0.5)] == [1]


def test_a_deadline_judges_a_replica_s_calls_warm_and_an_unreachable_one_waits() -> None:
    from dataclasses import replace

    from anypu.scheduler._deployments import DEADLINE_RETRY_S

    # 50 ms to fetch and load the model, 2 ms a call: 20 ms holds once it is warm.
    state = _state("a")
    actions = state.handle(DeploymentApplied("mlp", replace(TEMPLATE, deadline_ms=20), 1, 1.0))
    assert len(messages_sent(actions, m.Launch)) == 1
    # Nothing answers within 1 µs: the deployment says so and waits before trying again.
    state = _state("a")
    state.handle(DeploymentApplied("mlp", replace(TEMPLATE, deadline_ms=0.001), 1, 1.0))
    state.handle(Tick(1.5))
    info = state.deployment_info("mlp")
    assert info is not None and not info.replicas
    assert "no device is predicted to answer its calls within deadline_ms 0.001" in info.message
    assert "best is a/cpu0" in info.message and "after waiting" not in info.message
    tried = len(state.jobs)
    for now in (2.0, 4.0, 6.0, 8.0, 10.0, 1.0 + DEADLINE_RETRY_S):
        state.handle(AgentSaid("a", 1, m.Heartbeat(now), now=now))
        state.handle(Tick(now))
    assert len(state.jobs) == tried  # not every tick
    state.handle(AgentSaid("a", 1, m.Heartbeat(12.0), now=12.0))
    state.handle(Tick(2.0 + DEADLINE_RETRY_S))
    assert len(state.jobs) == tried + 1


def test_replicas_no_node_s_labels_allow_say_so_and_wait_for_nodes_to_change() -> None:
    from dataclasses import replace

    from anypu._labels import label_requirements
    from anypu.scheduler._deployments import DEADLINE_RETRY_S

    state = _state("a")
    selector = label_requirements({"zone": "shop-7"})
    state.handle(DeploymentApplied("mlp", replace(TEMPLATE, label_selector=selector), 1, 1.0))
    state.handle(Tick(1.5))
    info = state.deployment_info("mlp")
    assert info is not None and [r.state for r in info.replicas] == ["warming"]
    assert "is waiting to be placed: a: cpu0: no labels, and the job wants zone in (shop-7)" in (
        info.message
    )
    for now in (3.0, 5.0, 7.0, 8.0):  # unschedulable for longer than the scheduler waits
        state.handle(AgentSaid("a", 1, m.Heartbeat(now), now=now))
        state.handle(Tick(now))
    info = state.deployment_info("mlp")
    assert info is not None and not info.replicas
    assert "no device can hold its replicas as asked (placing again in 10 s)" in info.message
    tried = len(state.jobs)
    for now in (9.0, 11.0, 13.0):
        state.handle(AgentSaid("a", 1, m.Heartbeat(now), now=now))
        state.handle(Tick(now))
    assert len(state.jobs) == tried  # not every tick
    # A node with the label joins: the next try places the replica there.
    b = join(
        "b", devices=(cpu_device(),), direct_address="127.0.0.1:7100", labels={"zone": "shop-7"}
    )
    state.handle(AgentConnected(b, 14.0))
    now = 7.0 + DEADLINE_RETRY_S + 1.0
    state.handle(AgentSaid("a", 1, m.Heartbeat(now), now=now))
    state.handle(AgentSaid("b", 1, m.Heartbeat(now), now=now))
    actions = state.handle(Tick(now))
    (launch,) = messages_sent(actions, m.Launch)
    assert launch.job_id.startswith("mlp.replica")
    assert state.jobs[launch.job_id].placement.node_id == "b"
