"""The measured network: declared links refitted to measured paths, fading with age."""

from __future__ import annotations

import math

import networkx as nx
import pytest

from anypu.placement import NetworkCosts, PathSample, build_network, fit_network

# scheduler -5 ms- edge-a, scheduler -5 ms- edge-b, scheduler -1 ms- home,
# edge-a -2 ms- shop (a site behind edge-a).
DECLARED = build_network(
    {
        "sites": ["scheduler", "edge-a", "edge-b", "home", "shop"],
        "links": [
            {"a": "scheduler", "b": "edge-a", "latency_ms": 5, "bandwidth_mbps": 800},
            {"a": "scheduler", "b": "edge-b", "latency_ms": 5, "bandwidth_mbps": 800},
            {"a": "scheduler", "b": "home", "latency_ms": 1, "bandwidth_mbps": 8000},
            {"a": "edge-a", "b": "shop", "latency_ms": 2, "bandwidth_mbps": 80},
        ],
    }
)
MB = 1e6 / 8 * 8  # bytes per second of 8 Mbit/s: 1e6


def _latency(graph: nx.Graph[str], a: str, b: str) -> float:
    metrics = NetworkCosts(graph).metrics(a, b)
    assert metrics is not None
    return metrics.latency_s


def test_no_samples_is_the_declared_network() -> None:
    fitted = fit_network(DECLARED, [])
    assert nx.is_frozen(fitted)
    for u, v, data in fitted.edges(data=True):
        assert data["latency_s"] == DECLARED.edges[u, v]["latency_s"]
        assert data["measured_age_s"] is None


def test_a_measured_link_takes_the_measurement_and_others_keep_what_was_declared() -> None:
    fitted = fit_network(DECLARED, [PathSample("edge-a", "scheduler", 0.040, age_s=2.0)])
    assert fitted.edges["scheduler", "edge-a"]["latency_s"] == pytest.approx(0.040, rel=0.01)
    assert fitted.edges["scheduler", "edge-a"]["measured_age_s"] == 2.0
    assert fitted.edges["scheduler", "edge-a"]["declared_latency_s"] == pytest.approx(0.005)
    assert fitted.edges["scheduler", "edge-b"]["latency_s"] == pytest.approx(0.005)
    # a client at home now reaches edge-b sooner than edge-a: placement moves with it
    assert _latency(fitted, "home", "edge-a") == pytest.approx(0.041, rel=0.01)
    assert _latency(fitted, "home", "edge-b") == pytest.approx(0.006)


def test_a_path_of_several_links_is_spread_in_proportion_to_what_was_declared() -> None:
    fitted = fit_network(DECLARED, [PathSample("shop", "scheduler", 0.014)])  # declared 7 ms
    assert fitted.edges["edge-a", "shop"]["latency_s"] == pytest.approx(0.004, rel=0.01)
    assert fitted.edges["scheduler", "edge-a"]["latency_s"] == pytest.approx(0.010, rel=0.01)


def test_links_shared_by_measured_paths_fit_them_all() -> None:
    samples = [PathSample("edge-a", "scheduler", 0.008), PathSample("shop", "scheduler", 0.020)]
    fitted = fit_network(DECLARED, samples)
    assert fitted.edges["scheduler", "edge-a"]["latency_s"] == pytest.approx(0.008, rel=0.02)
    assert fitted.edges["edge-a", "shop"]["latency_s"] == pytest.approx(0.012, rel=0.02)


def test_an_old_sample_fades_back_to_what_was_declared() -> None:
    fresh, recent, half, gone = (
        fit_network(
            DECLARED, [PathSample("edge-a", "scheduler", 0.045, age_s=age)], half_life_s=60
        ).edges["scheduler", "edge-a"]["latency_s"]
        for age in (0.0, 60.0, 120.0, 10_000.0)
    )
    assert fresh == recent == pytest.approx(0.045, rel=1e-3)  # full weight for a half-life
    assert half == pytest.approx(0.025, rel=1e-3)  # then halfway back to the declared 5 ms
    assert gone == pytest.approx(0.005)  # forgotten


def test_measured_bandwidth_lowers_the_bottleneck_or_raises_links_below_it() -> None:
    slow = fit_network(DECLARED, [PathSample("shop", "scheduler", 0.007, bandwidth_bps=1e6)])
    assert slow.edges["edge-a", "shop"]["bandwidth_bps"] == 1e6  # the declared bottleneck
    assert slow.edges["scheduler", "edge-a"]["bandwidth_bps"] == pytest.approx(1e8)
    fast = fit_network(DECLARED, [PathSample("shop", "scheduler", 0.007, bandwidth_bps=5e7)])
    assert fast.edges["edge-a", "shop"]["bandwidth_bps"] == 5e7
    assert fast.edges["edge-a", "shop"]["declared_bandwidth_bps"] == pytest.approx(1e7)


@pytest.mark.parametrize(
    "sample",
    [
        PathSample("nowhere", "scheduler", 0.01),
        PathSample("edge-a", "edge-a", 0.01),
        PathSample("edge-a", "scheduler", math.nan),
        PathSample("edge-a", "scheduler", -1.0),
        PathSample("edge-a", "scheduler", 0.01, age_s=math.inf),
    ],
)
def test_samples_that_say_nothing_are_ignored(sample: PathSample) -> None:
    fitted = fit_network(DECLARED, [sample])
    assert all(d["measured_age_s"] is None for _, _, d in fitted.edges(data=True))
