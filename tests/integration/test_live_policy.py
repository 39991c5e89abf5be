"""A real scheduler started with ``--policy fgd`` places and runs jobs over gRPC."""

from __future__ import annotations

import pytest
import torch

from anypu.sdk import RunOptions
from anypu.sdk.models import mlp
from tests.cluster import Cluster

GPU_AND_HOST = (
    "devices:\n"
    "  - {kind: gpu, vendor: nvidia, model: A100-SXM4-40GB, memory: 40GiB, tflops: 156,"
    " slices: 2}\n"
    "include_host: true\n"
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("policy"), policy="fgd")
    c.add_agent("gpu-1", "cloud", GPU_AND_HOST)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def client(cluster):
    with cluster.connected_client(nodes=1) as client:
        yield client


def test_fgd_places_an_accelerator_job_that_then_runs(cluster, client):
    assert "placement policy: fgd" in cluster.log("scheduler")
    model = mlp()
    x = torch.randn(16, 256)
    torch.testing.assert_close(client.run(model, x), model(x))
    info = client.transport.list_jobs(1)[0]
    assert info.state == "succeeded"
    assert (info.placement.node_id, info.placement.device_id) == ("gpu-1", "gpu0")
    assert info.placement.solver == "policy:fgd"
    assert info.placement.predicted_seconds > 0
    assert set(info.placement.terms) >= {"compute", "transfer", "warm", "queue"}


def test_a_cpu_only_job_keeps_the_cost_placement(client):
    model = mlp(width=32, depth=2)
    x = torch.randn(4, 32)
    y = client.run(model, x, RunOptions(device_kinds=("cpu",)))
    torch.testing.assert_close(y, model(x))
    info = client.transport.list_jobs(1)[0]
    assert info.placement.device_id == "cpu0"
    assert info.placement.solver.startswith("policy:fgd; cost (")
