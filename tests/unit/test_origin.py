"""A client's origin inferred from the round trips it measured."""

from __future__ import annotations

import math

from anypu.placement import build_network, infer_origin

# home -20 ms- scheduler -2 ms- office; cloud 40 ms beyond the scheduler.
NETWORK = build_network(
    {
        "sites": ["scheduler", "home", "office", "cloud"],
        "links": [
            {"a": "home", "b": "scheduler", "latency_ms": 20, "bandwidth_mbps": 100},
            {"a": "office", "b": "scheduler", "latency_ms": 2, "bandwidth_mbps": 1000},
            {"a": "scheduler", "b": "cloud", "latency_ms": 40, "bandwidth_mbps": 1000},
        ],
    }
)


def test_the_vertex_whose_paths_fit_the_round_trips_is_the_origin() -> None:
    # 41 ms to the scheduler, 122 ms to the cloud: home (20 and 60 ms one way).
    fit = infer_origin(NETWORK, {"scheduler": 0.041, "cloud": 0.122})
    assert fit is not None and fit.vertex == "home" and fit.samples == 2
    assert fit.factor < 1.05 and fit.runner_up_factor > 2
    assert fit.describe().startswith("inferred from 2 round trip(s): home (within ×1.0")


def test_a_loopback_client_is_at_the_scheduler_and_a_near_one_at_the_office() -> None:
    assert infer_origin(NETWORK, {"scheduler": 0.0002}).vertex == "scheduler"  # type: ignore[union-attr]
    assert infer_origin(NETWORK, {"scheduler": 0.004}).vertex == "office"  # type: ignore[union-attr]


def test_one_sample_of_a_site_with_agents_places_the_client_there() -> None:
    fit = infer_origin(NETWORK, {"cloud": 0.0003, "scheduler": 0.081})
    assert fit is not None and fit.vertex == "cloud"


def test_nothing_to_infer_from_gives_none() -> None:
    assert infer_origin(None, {"scheduler": 0.01}) is None
    assert infer_origin(NETWORK, {}) is None
    assert infer_origin(NETWORK, {"moon": 0.01, "scheduler": math.nan}) is None
