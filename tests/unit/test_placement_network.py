"""The network description, path metrics and the transfer helper."""

from __future__ import annotations

import math

import networkx as nx
import pytest

from anypu.errors import ConfigError
from anypu.placement import NetworkCosts, build_network, transfer_seconds

SPEC = {
    "sites": ["phone", "edge", "cloud", "island"],
    "links": [
        {"a": "phone", "b": "edge", "latency_ms": 10, "bandwidth_mbps": 80},
        {"a": "edge", "b": "cloud", "latency_ms": 30, "bandwidth_mbps": 800},
        # A slower-latency direct path: Dijkstra by latency must not take it.
        {"a": "phone", "b": "cloud", "latency_ms": 100, "bandwidth_mbps": 8000},
    ],
}


def test_build_network_converts_units_and_freezes() -> None:
    g = build_network(SPEC)
    assert set(g.nodes) == {"phone", "edge", "cloud", "island"}
    assert g["phone"]["edge"]["latency_s"] == pytest.approx(0.010)
    assert g["phone"]["edge"]["bandwidth_bps"] == pytest.approx(80e6 / 8)
    assert nx.is_frozen(g)
    with pytest.raises(nx.NetworkXError):
        g.add_edge("phone", "island")


def test_transfer_follows_least_latency_path_with_its_bottleneck() -> None:
    g = build_network(SPEC)
    # phone→edge→cloud: 40 ms, bottleneck 10 MB/s (80 Mbit/s).
    assert transfer_seconds(g, "phone", "cloud", 10e6) == pytest.approx(0.040 + 1.0)
    assert transfer_seconds(g, "cloud", "phone", 0) == pytest.approx(0.040)
    assert transfer_seconds(g, "edge", "edge", 1e9) == 0.0


def test_unknown_or_missing_network_is_colocated_and_cut_off_is_inf() -> None:
    g = build_network(SPEC)
    assert transfer_seconds(None, "phone", "cloud", 1e9) == 0.0
    assert transfer_seconds(g, "", "cloud", 1e9) == 0.0
    assert transfer_seconds(g, "laptop", "cloud", 1e9) == 0.0
    assert transfer_seconds(g, "phone", "island", 1) == math.inf
    assert NetworkCosts(g).metrics("phone", "island") is None


def test_path_metrics_are_cached_per_frozen_graph() -> None:
    g = build_network(SPEC)
    first = NetworkCosts(g).metrics("phone", "cloud")
    # A second view of the same frozen graph reuses the table built by the first.
    again = NetworkCosts(g)
    assert "phone" in again._by_source
    assert again.metrics("phone", "cloud") is first


def test_network_must_be_a_graph() -> None:
    with pytest.raises(TypeError, match="build_network"):
        NetworkCosts({"sites": []})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "expected a mapping"),
        ({"sites": ["a"], "link": []}, "unknown key.*link"),
        ({"links": []}, "network.sites"),
        ({"sites": ["a", "a"]}, r"sites\[1\].*twice"),
        ({"sites": ["a", ""]}, r"sites\[1\]"),
        ({"sites": ["a"], "links": {}}, "network.links: must be a list"),
        (
            {
                "sites": ["a", "b"],
                "links": [{"a": "a", "b": "c", "latency_ms": 1, "bandwidth_mbps": 1}],
            },
            r"links\[0\]: site 'c' is not in network.sites",
        ),
        (
            {"sites": ["a", "b"], "links": [{"a": "a", "b": "b", "latency_ms": 1}]},
            r"links\[0\]: missing bandwidth_mbps",
        ),
        (
            {
                "sites": ["a", "b"],
                "links": [{"a": "a", "b": "b", "latency_ms": 1, "bandwidth_mbps": 1, "mtu": 9000}],
            },
            "unknown key.*mtu",
        ),
        (
            {
                "sites": ["a", "b"],
                "links": [{"a": "a", "b": "a", "latency_ms": 1, "bandwidth_mbps": 1}],
            },
            "to itself",
        ),
        (
            {
                "sites": ["a", "b"],
                "links": [{"a": "a", "b": "b", "latency_ms": -1, "bandwidth_mbps": 1}],
            },
            "latency_ms must not be negative",
        ),
        (
            {
                "sites": ["a", "b"],
                "links": [{"a": "a", "b": "b", "latency_ms": 1, "bandwidth_mbps": 0}],
            },
            "bandwidth_mbps must be greater than 0",
        ),
        (
            {
                "sites": ["a", "b"],
                "links": [{"a": "a", "b": "b", "latency_ms": True, "bandwidth_mbps": 1}],
            },
            "latency_ms must be a number",
        ),
        (
            {
                "sites": ["a", "b"],
                "links": [{"a": "a", "b": "b", "latency_ms": "5ms", "bandwidth_mbps": 1}],
            },
            "latency_ms must be a number",
        ),
        (
            {
                "sites": ["a", "b"],
                "links": [
                    {"a": "a", "b": "b", "latency_ms": 1, "bandwidth_mbps": 1},
                    {"a": "b", "b": "a", "latency_ms": 2, "bandwidth_mbps": 1},
                ],
            },
            r"links\[1\].*already linked",
        ),
    ],
)
def test_build_network_names_the_bad_entry(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_network(spec)  # type: ignore[arg-type]
