"""Replicas placed after where a deployment's calls come from (``scheduler._traffic``):
the apportionment's pure maths, then the state machine placing, moving and releasing
replicas by the sites callers report (no I/O)."""

from __future__ import annotations

from anypu.placement import build_network
from anypu.protos import messages as m
from anypu.scheduler import AgentConnected, AgentSaid, SchedulerConfig, SchedulerState, Tick
from anypu.scheduler._events import DeploymentApplied, DeploymentsCalled
from anypu.scheduler._traffic import (
    MIN_CALLS_TO_MOVE,
    MOVE_EVERY_S,
    TRAFFIC_WINDOW_S,
    SiteTraffic,
    move,
    next_site,
    quotas,
    release_order,
)
from tests.builders import cpu_device, done, join, messages_sent, submit_request

NETWORK = build_network(
    {
        "sites": ["cloud", "shop-7", "home"],
        "links": [
            {"a": "cloud", "b": "shop-7", "latency_ms": 40, "bandwidth_mbps": 100},
            {"a": "cloud", "b": "home", "latency_ms": 40, "bandwidth_mbps": 100},
        ],
    }
)
TEMPLATE = submit_request(name="MLP", inputs=b"example", origin="cloud")


# ---------------------------------------------------------------- the maths


def test_quotas_follow_the_calls_or_the_declared_origin_when_none_were_measured():
    assert quotas(3, {}, "cloud") == {"cloud": 3.0}
    assert quotas(4, {"shop-7": 30, "home": 10}, "cloud") == {"shop-7": 3.0, "home": 1.0}


def test_a_new_replica_goes_to_the_site_its_share_most_lacks():
    share = {"shop-7": 3.0, "home": 1.0}
    assert next_site(share, {}, {"shop-7": 30, "home": 10}) == "shop-7"
    assert next_site(share, {"shop-7": 3}, {"shop-7": 30, "home": 10}) == "home"
    # A tie goes to the site with more calls, then by name.
    assert next_site({"a": 1.0, "b": 1.0}, {}, {"a": 5, "b": 9}) == "b"
    assert next_site({"a": 1.0, "b": 1.0}, {}, {"a": 5, "b": 5}) == "a"


def test_released_first_are_those_placed_for_the_site_furthest_over_its_share():
    share = {"shop-7": 2.0, "home": 0.0}
    replicas = [("r1", "shop-7", 1.0), ("r2", "home", 5.0), ("r3", "shop-7", 0.5)]
    assert release_order(share, replicas) == ["r2", "r3", "r1"]
    # With no site over, the idle longest goes first.
    assert release_order({"": 2.0}, [("a", "", 3.0), ("b", "", 1.0)]) == ["b", "a"]


def test_a_replica_moves_only_when_that_lowers_the_squared_deviation_by_a_margin():
    calls = {"shop-7": 40, "cloud": 0}
    # Two replicas for cloud, all calls from shop-7: d(shop-7) - d(cloud) = 2 - (-2) = 4.
    assert move({"shop-7": 2.0}, {"cloud": 2}, calls) == ("shop-7", "cloud")
    # 60/40 on one replica placed for the 40 %: 0.6 - (0.4 - 1) = 1.2, not above 1.2.
    assert move({"a": 0.6, "b": 0.4}, {"b": 1}, {"a": 30, "b": 20}) is None
    # 70/30: 0.7 - (0.3 - 1) = 1.4: it moves; and not back at 30/70's mirror.
    assert move({"a": 0.7, "b": 0.3}, {"b": 1}, {"a": 35, "b": 15}) == ("a", "b")
    assert move({"a": 0.7, "b": 0.3}, {"a": 1}, {"a": 35, "b": 15}) is None
    # Too few calls to go by.
    few = {"shop-7": MIN_CALLS_TO_MOVE - 1}
    assert move({"shop-7": 2.0}, {"cloud": 2}, few) is None


def test_traffic_counts_only_the_last_window():
    traffic = SiteTraffic()
    traffic.add(0.0, "shop-7", 5)
    traffic.add(10.0, "home", 3)
    traffic.add(10.0, "home", 0)
    assert traffic.by_site(20.0) == {"shop-7": 5, "home": 3}
    assert traffic.by_site(TRAFFIC_WINDOW_S + 5.0) == {"home": 3}


# ---------------------------------------------------------------- the state machine


def _state() -> SchedulerState:
    state = SchedulerState(SchedulerConfig(lost_after_s=1e9, retry_backoff_s=0.0), NETWORK)
    for i, (name, site) in enumerate((("cloud-1", "cloud"), ("shop-1", "shop-7"))):
        address = f"127.0.0.1:{7000 + i}"
        node = join(name, devices=(cpu_device(),), direct_address=address, site=site)
        state.handle(AgentConnected(node, 0.0))
    return state


def _warm_all(state: SchedulerState, actions: list, now: float) -> list:
    out: list = []
    for send in [a for a in actions if isinstance(getattr(a, "message", None), m.Launch)]:
        launch = send.message
        out += state.handle(AgentSaid(send.node_id, send.epoch, done(launch.job_id), now))
    return out


def _ready(state: SchedulerState) -> list[tuple[str, str]]:
    info = state.deployment_info("mlp")
    assert info is not None
    return sorted((r.placed_for, r.node_id) for r in info.ready)


def test_replicas_follow_the_traffic_from_a_gateway_node_and_release_the_declared_one():
    state = _state()
    _warm_all(state, state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=1.0)), 1.5)
    assert _ready(state) == [("cloud", "cloud-1")]  # declared origin: no calls yet
    # The shop's gateway agent answered 30 calls: the traffic is all from shop-7.
    state.handle(DeploymentsCalled(m.Traffic((("mlp", 30),)), 5.0, node_id="shop-1"))
    info = state.deployment_info("mlp", 5.0)
    assert info is not None and info.traffic == (("shop-7", 30),)
    moved = state.handle(Tick(5.0))
    launches = messages_sent(moved, m.Launch)
    assert [s.node_id for s in moved if isinstance(getattr(s, "message", None), m.Launch)] == [
        "shop-1"
    ]
    assert len(launches) == 1
    assert "moving a replica from cloud to shop-7: 100 % of 30 calls" in info_events(state)
    revoked = messages_sent(_warm_all(state, moved, 6.0), m.LeaseRevoked)
    assert len(revoked) == 1  # the surge replica ready: the cloud one goes
    assert _ready(state) == [("shop-7", "shop-1")]
    # Placed where its share is, it stays: no further move.
    state.handle(DeploymentsCalled(m.Traffic((("mlp", 30),)), 6.0 + MOVE_EVERY_S, "shop-1"))
    assert messages_sent(state.handle(Tick(7.0 + MOVE_EVERY_S)), m.Launch) == []


def test_an_sdk_caller_s_origin_places_new_replicas_and_scale_down_keeps_the_busy_site():
    state = _state()
    _warm_all(state, state.handle(DeploymentApplied("mlp", TEMPLATE, 1, now=1.0)), 1.5)
    calls = m.Traffic((("mlp", 10),), origin="shop-7")
    state.handle(DeploymentsCalled(calls, 2.0))
    state.handle(DeploymentsCalled(m.Traffic((("mlp", 10),), origin="cloud"), 2.0))
    scaled = state.handle(DeploymentApplied("mlp", None, 2, now=3.0))
    placed = [s for s in scaled if isinstance(getattr(s, "message", None), m.Launch)]
    assert [s.node_id for s in placed] == ["shop-1"]  # the half of calls with no replica
    _warm_all(state, scaled, 3.5)
    assert _ready(state) == [("cloud", "cloud-1"), ("shop-7", "shop-1")]
    # Now the calls are from shop-7 only: scaling to one keeps its replica.
    later = 3.5 + TRAFFIC_WINDOW_S + 1
    state.handle(DeploymentsCalled(m.Traffic((("mlp", 5),), origin="shop-7"), later))
    state.handle(DeploymentApplied("mlp", None, 1, now=later))
    assert _ready(state) == [("shop-7", "shop-1")]


def info_events(state: SchedulerState) -> str:
    info = state.deployment_info("mlp")
    assert info is not None
    return "\n".join(info.events)
