"""Round trips on the agent stream: the agent times each heartbeat's echo on its own
clock, and the scheduler keeps the last 64 per node."""

from __future__ import annotations

import math

import pytest

from anypu.agents._state import ECHO_EVERY, AgentIdentity, AgentState, SchedulerSaid, Tick
from anypu.placement import build_network
from anypu.protos import messages as m
from anypu.scheduler import (
    AgentConnected,
    AgentSaid,
    JobSubmitted,
    SchedulerConfig,
    SchedulerState,
)
from anypu.scheduler._round_trips import WINDOW, RoundTrips
from tests.builders import cpu_device, join, messages_sent, submit_request


def test_quantiles_over_the_last_window_and_the_newest_s_age() -> None:
    trips = RoundTrips()
    assert (trips.quantile(0.5), trips.age(5.0), len(trips)) == (0.0, -1.0, 0)
    for i in range(WINDOW + 36):  # the first 36 fall out of the window
        trips.add(1.0 if i < 36 else 0.001 * (i - 35), now=float(i))
    assert len(trips) == WINDOW
    assert trips.quantile(0.5) == 0.032 and trips.quantile(0.95) == 0.061
    assert trips.age(100.5) == 1.5
    trips.add(-0.2, now=200.0)  # a clock stepped back: dropped
    trips.add(math.nan, now=200.0)
    assert len(trips) == WINDOW and trips.age(100.5) == 1.5


def test_the_agent_asks_for_an_echo_and_reports_what_it_took() -> None:
    state = AgentState(AgentIdentity("edge-1", "edge", (cpu_device(),), token="t"))
    state.handle(SchedulerSaid(m.JoinAck("n1", 1.0, 5.0, 3, 2), 0.0, "join"))
    (first,) = messages_sent(state.handle(Tick(1.0, "t")), m.Heartbeat)
    assert first.wants_echo and first.rtt_s == 0.0
    state.handle(SchedulerSaid(m.HeartbeatEcho(first.sent_at), 1.0042, "echo"))
    (second,) = messages_sent(state.handle(Tick(2.5, "t")), m.Heartbeat)
    assert abs(second.rtt_s - 0.0042) < 1e-9
    asks = [first.wants_echo, second.wants_echo]
    for i in range(3, 12):
        (beat,) = messages_sent(state.handle(Tick(1.5 * i, "t")), m.Heartbeat)
        asks.append(beat.wants_echo)
        assert beat.rtt_s == 0.0  # reported once: the scheduler counts each one it is sent
    assert asks == [i % ECHO_EVERY == 0 for i in range(11)]  # one in ECHO_EVERY asks
    state.handle(SchedulerSaid(m.HeartbeatEcho(17.0), 17.4, "echo"))  # queued behind a probe
    assert abs(state.base_rtt_s - 0.0042) < 1e-9  # the path's own round trip


def test_the_time_the_scheduler_held_the_heartbeat_is_not_the_network_s() -> None:
    state = AgentState(AgentIdentity("edge-1", "edge", (cpu_device(),), token="t"))
    state.handle(SchedulerSaid(m.JoinAck("n1", 1.0, 5.0, 3, 2), 0.0, "join"))
    state.handle(SchedulerSaid(m.HeartbeatEcho(1.0, held_s=0.0015), 1.0065, "echo"))
    assert abs(state.rtt_s - 0.005) < 1e-9
    # A hold longer than the whole round trip is a clock or a bug, not a measurement:
    # the round trip is kept as timed rather than made negative.
    state.handle(SchedulerSaid(m.HeartbeatEcho(2.0, held_s=0.5), 2.004, "echo"))
    assert abs(state.rtt_s - 0.004) < 1e-9


def test_the_scheduler_echoes_and_keeps_each_node_s_round_trips() -> None:
    state = SchedulerState(SchedulerConfig(lost_after_s=60.0))
    state.handle(AgentConnected(join("n1"), now=0.0))
    actions = state.handle(AgentSaid("n1", 1, m.Heartbeat(7.25, wants_echo=True), now=1.0))
    (echo,) = [
        a.message for a in actions if isinstance(getattr(a, "message", None), m.HeartbeatEcho)
    ]
    assert echo == m.HeartbeatEcho(7.25)
    older = state.handle(AgentSaid("n1", 1, m.Heartbeat(8.0), now=1.5))  # an older agent
    assert not [a for a in older if isinstance(getattr(a, "message", None), m.HeartbeatEcho)]
    for i, rtt in enumerate((0.002, 0.004, 0.003, 0.010)):
        state.handle(AgentSaid("n1", 1, m.Heartbeat(9.0 + i, rtt_s=rtt), now=2.0 + i))
    info = state.nodes["n1"].info(6.0)
    assert (info.rtt_p50_s, info.rtt_p95_s, info.rtt_age_s) == (0.003, 0.010, 1.0)


# home -1 ms- scheduler, scheduler -4 ms- edge-a, scheduler -5 ms- edge-b: edge-a is
# nearer as declared.
NETWORK = build_network(
    {
        "sites": ["scheduler", "edge-a", "edge-b", "home"],
        "links": [
            {"a": "home", "b": "scheduler", "latency_ms": 1, "bandwidth_mbps": 1000},
            {"a": "scheduler", "b": "edge-a", "latency_ms": 4, "bandwidth_mbps": 1000},
            {"a": "scheduler", "b": "edge-b", "latency_ms": 5, "bandwidth_mbps": 1000},
        ],
    }
)


def _placed_on(measured: bool, rtt_a: float) -> tuple[str, SchedulerState]:
    config = SchedulerConfig(lost_after_s=60.0, measured_network=measured)
    state = SchedulerState(config, network=NETWORK)
    for name in ("edge-a", "edge-b"):
        state.handle(AgentConnected(join(name, site=name), now=0.0))
    for i in range(5):
        beat = m.Heartbeat(float(i), rtt_s=rtt_a)
        state.handle(AgentSaid("edge-a", 1, beat, now=1.0 + i))
        state.handle(AgentSaid("edge-b", 1, m.Heartbeat(float(i), rtt_s=0.010), now=1.0 + i))
    state.handle(JobSubmitted("j1", submit_request(origin="home"), now=7.0))
    placement = state.jobs["j1"].placement
    assert placement is not None
    return placement.node_id, state


def test_placement_moves_off_a_site_whose_round_trips_degrade() -> None:
    assert _placed_on(measured=True, rtt_a=0.008)[0] == "edge-a"  # as declared
    node, state = _placed_on(measured=True, rtt_a=0.080)  # 40 ms each way, not 4
    assert node == "edge-b"
    terms = state.jobs["j1"].placement.terms  # type: ignore[union-attr]
    assert terms["transfer"] == pytest.approx(2 * 0.006, rel=0.05)  # edge-b measured as declared
    graph = state.measured.graph(state.nodes.values(), 7.0)
    assert graph is not None
    assert graph.edges["scheduler", "edge-a"]["latency_s"] == pytest.approx(0.040, rel=0.02)
    assert _placed_on(measured=False, rtt_a=0.080)[0] == "edge-a"  # --declared-network-only


def test_the_fit_is_kept_while_nothing_moves_and_ignores_disconnected_agents() -> None:
    state = SchedulerState(SchedulerConfig(lost_after_s=60.0), network=NETWORK)
    state.handle(AgentConnected(join("edge-a", site="edge-a"), now=0.0))
    state.handle(AgentSaid("edge-a", 1, m.Heartbeat(0.0, rtt_s=0.008), now=1.0))
    first = state.measured.graph(state.nodes.values(), 2.0)
    state.handle(AgentSaid("edge-a", 1, m.Heartbeat(1.0, rtt_s=0.0081), now=3.0))
    assert state.measured.graph(state.nodes.values(), 4.0) is first  # moved < 5 %
    (sample,) = state.measured.samples(state.nodes.values(), 4.0)
    assert (sample.a, sample.b, sample.age_s) == ("edge-a", "scheduler", 1.0)
    state.nodes["edge-a"].connected = False
    assert state.measured.samples(state.nodes.values(), 4.0) == []
