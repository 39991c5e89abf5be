"""One agent standing for a real local Ray cluster (``anypu agent --backend ray``).

Three Ray nodes on loopback, started with Ray's own cluster utilities: a head with one
CPU, a node declaring a T4 GPU and a zone label, and a node declaring an Ascend NPU
(declared resources: this machine has neither, so both are offered simulated on the
CPU, and said to be). The agent's inventory is Ray's; jobs run as Ray actors pinned to
the chosen node with the chosen share; a node removed from Ray leaves the inventory and
its running job is retried elsewhere.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from anypu.sdk import In, RunOptions
from tests.cluster import Cluster

# Ray dials a cluster given as 127.0.0.1 at this machine's outward address instead
# (``services.resolve_ip_for_localhost``) unless told this is no multi-machine cluster:
# tests reach loopback only. Read when ray is imported, here and in the agent's process.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray", reason="the Ray backend needs ray (pip install '.[ray]')")
from ray.cluster_utils import Cluster as RayLocalCluster  # noqa: E402

pytestmark = pytest.mark.timeout(300)


class Scale(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x * 3.0 - 1.0).sum(dim=1)


class Slow(torch.nn.Module):
    """Seconds of 1024² matmuls on one thread, from a small input: long enough to lose
    its node under it."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        x = torch.outer(v, v)
        for _ in range(200):
            x = torch.tanh(x @ x)
        return x.sum(dim=0)


@pytest.fixture(scope="module")
def ray_nodes():
    nodes = RayLocalCluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    try:
        gpu = nodes.add_node(
            num_cpus=1,
            num_gpus=1,
            resources={"accelerator_type:T4": 1},
            labels={"zone": "shop-7"},
            node_ip_address="127.0.0.1",
        )
        npu = nodes.add_node(
            num_cpus=1,
            resources={"NPU": 1, "accelerator_type:Ascend910B": 1},
            node_ip_address="127.0.0.1",
        )
        nodes.wait_for_nodes()
        yield nodes, gpu, npu
    finally:
        nodes.shutdown()


@pytest.fixture(scope="module")
def cluster(ray_nodes, tmp_path_factory):
    nodes, _, _ = ray_nodes
    workdir = tmp_path_factory.mktemp("ray-backend")
    cluster = Cluster(workdir)
    try:
        cluster.add_agent(
            "ray-cluster",
            "cloud",
            extra=("--backend", "ray", "--ray-address", nodes.address),
        )
        with cluster.connected_client(1) as client:
            yield cluster, client
    finally:
        cluster.close()


def _devices(client) -> dict[str, object]:
    (node,) = [n for n in client.transport.list_nodes() if n.node_id == "ray-cluster"]
    return {d.device_id: d for d in node.devices}


def _short(node) -> str:
    return node.node_id[:8]


def test_the_agent_offers_every_ray_node_s_devices(ray_nodes, cluster):
    nodes, gpu, npu = ray_nodes
    _, client = cluster
    devices = _devices(client)
    head = _short(nodes.head_node)
    assert {f"{head}-cpu0", f"{_short(gpu)}-cpu0", f"{_short(npu)}-cpu0"} <= set(devices)
    t4 = devices[f"{_short(gpu)}-gpu0"]
    assert (t4.kind, t4.vendor, t4.model, t4.simulated) == ("gpu", "nvidia", "T4", True)
    assert t4.extra["label.zone"] == "shop-7"
    assert t4.extra["ray_resource"] == "GPU"
    ascend = devices[f"{_short(npu)}-npu0"]
    assert (ascend.kind, ascend.vendor, ascend.model) == ("npu", "huawei", "Ascend910B")
    assert cluster[0].log("ray-cluster").count("offered simulated on that node's CPU") >= 2


def test_a_job_runs_as_a_ray_actor_on_the_chosen_node_with_the_same_outputs(ray_nodes, cluster):
    nodes, gpu, _ = ray_nodes
    _, client = cluster
    x = torch.randn(4, 8)
    model = Scale().eval()
    future = client.submit(model, x, RunOptions(device_kinds=("gpu",)))
    outputs = future.result(timeout=180)
    torch.testing.assert_close(outputs, model(x))  # what the embedded mode gives
    placement = future.info().placement
    assert placement.device_id == f"{_short(gpu)}-gpu0"
    # Ray itself ran it there: the slice's actor lives on the T4's node, holding its GPU.
    ray.init(address=nodes.address, namespace="anypu", ignore_reinit_error=True)
    try:
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
        (name,) = [n for n in names if n.startswith(f"{_short(gpu)}-gpu0.0.")]
        where = ray.get(ray.get_actor(name, namespace="anypu").where.remote(), timeout=60)
    finally:
        ray.shutdown()
    assert where["node_id"] == gpu.node_id
    assert where["resources"].get("GPU") == 1.0
    # The Ray node's labels are its devices': a selector picks that node's CPU.
    selected = client.submit(
        model, x, RunOptions(device_kinds=("cpu",), label_selector={"zone": In("shop-7")})
    )
    torch.testing.assert_close(selected.result(timeout=180), model(x))
    assert selected.info().placement.device_id == f"{_short(gpu)}-cpu0"


def test_a_ray_node_lost_under_a_job_leaves_the_inventory_and_the_job_is_retried(
    ray_nodes, cluster
):
    nodes, _, npu = ray_nodes
    agent_cluster, client = cluster
    x = torch.randn(1024) / 32
    model = Slow().eval()
    warm = client.submit(model, x, RunOptions(device_kinds=("npu",)))
    warm.result(timeout=180)  # the NPU node's actor holds the model now
    assert warm.info().placement.device_id == f"{_short(npu)}-npu0"
    future = client.submit(model, x, RunOptions(device_kinds=("npu", "cpu"), max_retries=3))
    deadline = time.monotonic() + 60
    while future.info().state != "running":
        assert time.monotonic() < deadline, future.info()
        time.sleep(0.05)
    nodes.remove_node(npu, allow_graceful=False)
    torch.testing.assert_close(future.result(timeout=180), model(x))
    info = future.info()
    assert info.attempt >= 2, info
    assert not info.placement.device_id.startswith(_short(npu))
    deadline = time.monotonic() + 60
    while f"{_short(npu)}-npu0" in _devices(client):
        assert time.monotonic() < deadline, "the lost Ray node's devices are still offered"
        time.sleep(0.2)
    log = agent_cluster.log("ray-cluster")
    assert f"Ray node {_short(npu)} left" in log
