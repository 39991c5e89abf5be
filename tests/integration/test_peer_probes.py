"""Agents time each other's sites over real sockets (DirectService Ping and Probe), and
the link between the two sites is refitted to what they measured."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from scripts.dashboard_demo import dashboard_url
from tests.cluster import SIMULATED_CPU as CPU_NODE
from tests.cluster import Cluster

# As declared, site a is 8 ms from site b (nearer than through the scheduler, 10 ms); on
# loopback it is well under a millisecond.
NETWORK = """\
sites: [scheduler, a, b]
links:
  - {a: a, b: scheduler, latency_ms: 5, bandwidth_mbps: 100}
  - {a: b, b: scheduler, latency_ms: 5, bandwidth_mbps: 100}
  - {a: a, b: b, latency_ms: 8, bandwidth_mbps: 100}
"""
# Probes every 0.3 s, and a budget that pays for 64 KiB each time (768 MiB an hour).
FAST = ("--probe-interval", "0.3", "--probe-budget", "1024")


def _link(url: str, a: str, b: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/v1/topology", timeout=5) as response:
        links = json.load(response)["links"]
    return next(lk for lk in links if {lk["a"], lk["b"]} == {a, b})


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "mutual TLS"])
def test_two_sites_agents_time_each_other_and_their_link_is_refitted(tmp_path, tls):
    # Over TLS each agent checks the other's certificate names the node it was told of.
    (tmp_path / "network.yaml").write_text(NETWORK)
    cluster = Cluster(tmp_path, tls=tls, network=tmp_path / "network.yaml", **{"http-port": 0})
    try:
        cluster.add_agent("a-1", "edge", CPU_NODE, site="a", direct=True, extra=FAST)
        cluster.add_agent("b-1", "edge", CPU_NODE, site="b", direct=True, extra=FAST)
        url = dashboard_url(cluster)
        deadline = time.monotonic() + 30
        link = _link(url, "a", "b")
        while link["measured_age_s"] is None and time.monotonic() < deadline:
            time.sleep(0.2)
            link = _link(url, "a", "b")
        assert link["measured_age_s"] is not None, cluster.log("a-1")
        assert link["latency_ms"] == 8 and link["measured_latency_ms"] < 2
        # Each probe was bounded: at least one upload went to the other site and came back
        # as a bandwidth (loopback carries far more than the declared 100 Mb/s).
        deadline = time.monotonic() + 30
        while link["measured_bandwidth_mbps"] is None and time.monotonic() < deadline:
            time.sleep(0.2)
            link = _link(url, "a", "b")
        assert link["measured_bandwidth_mbps"] is not None and link["measured_bandwidth_mbps"] > 100
    finally:
        cluster.close()
