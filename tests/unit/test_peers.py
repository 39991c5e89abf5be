"""Agents timing other sites' agents: whom the scheduler names, what the agent measures
within its budget, and how the samples reach the fitted network."""

from __future__ import annotations

import time

import pytest

from anypu.agents._peers import PeerProber
from anypu.agents._probes import MIN_BYTES, ProbeConfig
from anypu.placement import build_network
from anypu.protos import messages as m
from anypu.scheduler._measured_network import MeasuredNetwork
from anypu.scheduler._state import (
    AgentConnected,
    AgentDisconnected,
    AgentSaid,
    SchedulerConfig,
    SchedulerState,
    Send,
)
from tests.builders import join


def _peers_sent(actions: list[object]) -> dict[str, tuple[str, ...]]:
    return {
        a.node_id: tuple(p.site for p in a.message.peers)
        for a in actions
        if isinstance(a, Send) and isinstance(a.message, m.Peers)
    }


def test_each_agent_is_told_one_agent_per_other_site_that_takes_direct_calls() -> None:
    state = SchedulerState(SchedulerConfig(lost_after_s=60.0))
    a = state.handle(AgentConnected(join("a-1", site="a", direct_address="h:1"), now=0.0))
    assert _peers_sent(a) == {"a-1": ()}  # the set changed: everyone hears, a-1 of none
    b = state.handle(AgentConnected(join("b-1", site="b", direct_address="h:2"), now=0.0))
    assert _peers_sent(b) == {"a-1": ("b",), "b-1": ("a",)}
    # A second direct agent at a site already represented changes nothing for others.
    a2 = state.handle(AgentConnected(join("a-2", site="a", direct_address="h:3"), now=0.0))
    assert _peers_sent(a2) == {"a-2": ("b",)}
    plain = state.handle(AgentConnected(join("c-1", site="c"), now=0.0))
    assert _peers_sent(plain) == {"c-1": ("a", "b")}
    gone = state.handle(AgentDisconnected("a-1", 1, now=1.0))
    # a-2 now stands for site a: everyone hears of it.
    assert set(_peers_sent(gone)) == {"a-2", "b-1", "c-1"}
    assert state.peer_representatives["a"].node_id == "a-2"


def test_what_an_agent_timed_to_another_site_becomes_a_sample_of_that_path() -> None:
    network = build_network(
        {
            "sites": ["scheduler", "a", "b"],
            "links": [
                {"a": "a", "b": "scheduler", "latency_ms": 5, "bandwidth_mbps": 100},
                {"a": "b", "b": "scheduler", "latency_ms": 5, "bandwidth_mbps": 100},
                {"a": "a", "b": "b", "latency_ms": 3, "bandwidth_mbps": 100},
            ],
        }
    )
    state = SchedulerState(SchedulerConfig(lost_after_s=60.0), network=network)
    state.handle(AgentConnected(join("a-1", site="a"), now=0.0))
    beat = m.Heartbeat(1.0, peers=(m.PeerSample("b", 0.012, 2.5e6),))
    state.handle(AgentSaid("a-1", 1, beat, now=1.0))
    assert state.nodes["a-1"].peer_trips["b"] == (0.012, 1.0, 2.5e6, 1.0)
    samples = MeasuredNetwork(network).samples(state.nodes.values(), now=3.0)
    (between,) = [s for s in samples if {s.a, s.b} == {"a", "b"}]
    assert between.latency_s == pytest.approx(0.006) and between.age_s == pytest.approx(2.0)
    assert between.bandwidth_bps == 2.5e6
    fitted = MeasuredNetwork(network, refresh_s=0).graph(state.nodes.values(), now=3.0)
    assert fitted is not None and fitted.edges["a", "b"]["latency_s"] == pytest.approx(
        0.006, rel=0.05
    )


class _FakePeer:
    """A peer 10 ms away whose link carries 2 MB/s."""

    def __init__(self) -> None:
        self.pings = 0
        self.received: list[int] = []

    def ping(self, peer: m.Peer) -> None:
        self.pings += 1
        time.sleep(0.010)

    def upload(self, peer: m.Peer, payload: bytes) -> None:
        self.received.append(len(payload))
        time.sleep(0.010 + len(payload) / 2e6)


def test_a_peer_is_timed_then_probed_within_the_budget() -> None:
    fake, reports = _FakePeer(), []
    config = ProbeConfig(interval_s=30, budget_bytes_per_hour=64 << 20)
    prober = PeerProber(config, lambda: (), fake.ping, fake.upload, reports.append)
    sample = prober.probe_once(m.Peer("b-1", "b", "h:2"))
    assert fake.pings == 4  # one to open the connection, three timed
    assert sample.site == "b" and 0.010 <= sample.rtt_s < 0.030
    assert fake.received == [MIN_BYTES] and sample.bandwidth_bps == pytest.approx(2e6, rel=0.3)
    assert reports == [sample] and prober.sent_bytes == MIN_BYTES
    # A budget that cannot pay for a probe: the round trip alone.
    poor = PeerProber(
        ProbeConfig(interval_s=1, budget_bytes_per_hour=1 << 20),
        lambda: (),
        fake.ping,
        fake.upload,
        reports.append,
    )
    assert poor.probe_once(m.Peer("b-1", "b", "h:2"), waited_s=1).bandwidth_bps == 0.0
    assert fake.received == [MIN_BYTES]


def test_peer_samples_ride_the_next_heartbeat_once() -> None:
    from anypu.agents._state import AgentIdentity, AgentState, PeerMeasured, SchedulerSaid, Tick
    from tests.builders import cpu_device, messages_sent

    state = AgentState(AgentIdentity("a-1", "edge", (cpu_device(),), site="a"))
    state.handle(SchedulerSaid(m.JoinAck("a-1", 1.0, 5.0, 1, 2), 0.0, "join"))
    state.handle(SchedulerSaid(m.Peers((m.Peer("b-1", "b", "h:2"),)), 0.0, "peers"))
    assert [p.site for p in state.peers] == ["b"]
    state.handle(PeerMeasured(m.PeerSample("b", 0.01, 1e6), 1.0))
    (first,) = messages_sent(state.handle(Tick(2.0, "t")), m.Heartbeat)
    (second,) = messages_sent(state.handle(Tick(3.0, "t")), m.Heartbeat)
    assert first.peers == (m.PeerSample("b", 0.01, 1e6),) and second.peers == ()
