"""A client that names no origin: it times round trips to the scheduler and to agents it
reaches directly, and the scheduler infers where it is from them, over real sockets."""

from __future__ import annotations

import pytest
import torch

from anypu.sdk import Client
from anypu.sdk._transport import GrpcTransport
from anypu.sdk.models import mlp
from tests.cluster import SIMULATED_CPU as CPU_NODE
from tests.cluster import Cluster
from tests.proxy import Proxy

# Far apart, so a loopback call slowed to a few ms on 2 busy cores still reads as here.
NETWORK = """\
sites: [scheduler, home, office, edge]
links:
  - {a: home, b: scheduler, latency_ms: 20, bandwidth_mbps: 100}
  - {a: office, b: scheduler, latency_ms: 50, bandwidth_mbps: 1000}
  - {a: scheduler, b: edge, latency_ms: 80, bandwidth_mbps: 1000}
"""


def _cluster(tmp_path, direct: bool):
    (tmp_path / "network.yaml").write_text(NETWORK)
    cluster = Cluster(tmp_path, network=tmp_path / "network.yaml")
    cluster.add_agent("edge-1", "edge", CPU_NODE, site="edge", direct=direct)
    return cluster


@pytest.fixture
def cluster(tmp_path):
    # The agent takes no direct calls: a client can time only the scheduler (a client
    # behind the proxy would reach a direct agent on loopback, from nowhere real).
    cluster = _cluster(tmp_path, direct=False)
    yield cluster
    cluster.close()


@pytest.fixture
def direct_cluster(tmp_path):
    cluster = _cluster(tmp_path, direct=True)
    yield cluster
    cluster.close()


def test_a_client_20_ms_away_is_placed_at_home_and_one_on_loopback_at_the_scheduler(cluster):
    proxy = Proxy(cluster.port)
    proxy.shape(delay_s=0.020)  # each way: a 40 ms round trip, as from home
    far = Client(GrpcTransport(proxy.address, cluster.token))
    near = Client(GrpcTransport(cluster.address, cluster.token))
    try:
        cluster.wait_nodes(near, 1)
        model, x = mlp(), torch.randn(4, 256)
        # edge-1's own heartbeats refit the scheduler-edge link to loopback's fraction of
        # a millisecond: on the measured network edge is where the scheduler is, so a
        # client on loopback is rightly at either.
        for client, origins in ((far, {"home"}), (near, {"scheduler", "edge"})):
            future = client.submit(model, x)
            torch.testing.assert_close(future.result(timeout=60), model(x))
            info = future.info()
            assert info.origin in origins, info.origin_inferred
            assert info.origin_inferred.startswith("inferred from 1 round trip(s)"), info
        # What the far client timed: the proxy's 40 ms (its loopback leg adds little).
        (rtt,) = (s for v, s in far._round_trips or () if v == "scheduler")
        assert 0.040 <= rtt <= 0.060
    finally:
        far.close()
        near.close()
        proxy.close()


def test_agents_taking_direct_calls_are_timed_too_and_a_named_origin_is_kept(direct_cluster):
    cluster = direct_cluster
    client = Client(GrpcTransport(cluster.address, cluster.token), origin="office")
    try:
        cluster.wait_nodes(client, 1)
        timed = dict(client.transport.round_trips())
        assert set(timed) == {"scheduler", "edge"} and all(0 < s < 0.05 for s in timed.values())
        future = client.submit(mlp(), torch.randn(4, 256))
        future.result(timeout=60)
        assert future.info().origin == "office" and future.info().origin_inferred == ""
        assert client._round_trips is None  # named: nothing to infer, nothing timed
    finally:
        client.close()
