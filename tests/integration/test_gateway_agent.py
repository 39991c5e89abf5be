"""An agent as a gateway of the Open Inference Protocol, and replicas that follow the
calls: real processes on loopback under TLS (mutual TLS for agents, HTTPS with the node's
certificate at the gateway). A deployment declared at the cloud site is called through
the shop's gateway agent, over REST (``http.client``, written from the specification)
and gRPC (Triton's own client); the scheduler hears where the calls come from and moves
the replica to the shop."""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.request

import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from anypu.comm import client_ca
from anypu.sdk import Client
from anypu.sdk._transport import GrpcTransport
from tests.cluster import SIMULATED_CPU, Cluster

NETWORK = """\
sites: [cloud, shop-7]
links:
  - {a: cloud, b: shop-7, latency_ms: 40, bandwidth_mbps: 100}
"""


class Scale(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


X = torch.tensor([[1.0, 5.0, 2.0, 0.5]])
BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X.tolist()}]}
).encode()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gateway")
    (workdir / "network.yaml").write_text(NETWORK)
    cluster = Cluster(workdir, tls=True, network=workdir / "network.yaml")
    try:
        cluster.add_agent("cloud-1", "cloud", SIMULATED_CPU, site="cloud", direct=True)
        gateway = ("--gateway-http", "127.0.0.1:0", "--health-address", "127.0.0.1:0")
        cluster.add_agent(
            "shop-gw", "edge", SIMULATED_CPU, site="shop-7", direct=True, extra=gateway
        )
        ca_pem = client_ca(cluster.address, cluster.ca_hash)
        client = Client(GrpcTransport(cluster.address, cluster.token, ca_pem), origin="cloud")
        cluster.wait_nodes(client, 2)
        info = client.deploy(Scale().eval(), "scale", example_inputs=X, replicas=1)
        assert [r.node_id for r in info.ready] == ["cloud-1"], info
        yield cluster, client, ca_pem
        client.close()
    finally:
        cluster.close()


def _https(shop, method: str, path: str, body: bytes = b"", token: str | None = None):
    cluster, _, ca_pem = shop
    port = cluster.printed("shop-gw", r"Inference Protocol at https://127\.0\.0\.1:(\d+)/v2")
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.check_hostname = False  # dialled by address; the certificate is checked below
    connection = http.client.HTTPSConnection("127.0.0.1", int(port), timeout=60, context=context)
    headers = {"Content-Type": "application/json"} if body else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        assert connection.sock is not None
        peer = connection.sock.getpeercert()
        names = [value for kind, value in peer.get("subjectAltName", ()) if kind == "DNS"]
        assert "shop-gw" in names  # the node's own certificate, from the cluster's CA
        return response.status, response.read()
    finally:
        connection.close()


def test_the_gateway_agent_serves_the_protocol_over_https(shop):
    cluster, _, _ = shop
    status, body = _https(shop, "GET", "/v2/health/ready")
    assert status == 200 and json.loads(body) == {"ready": True}
    status, body = _https(shop, "POST", "/v2/models/scale/infer", BODY, cluster.token)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["model_name"] == "scale"
    assert answer["outputs"][0]["data"] == (X * 2).reshape(-1).tolist()
    # Refusals as at the scheduler: no token, a wrong one, an unknown model.
    status, body = _https(shop, "POST", "/v2/models/scale/infer", BODY)
    assert status == 401 and "Bearer" in json.loads(body)["error"]
    status, body = _https(shop, "POST", "/v2/models/scale/infer", BODY, "wrong-token")
    assert status == 401 and "refused the token" in json.loads(body)["error"]
    status, body = _https(shop, "GET", "/v2/models/nothing", token=cluster.token)
    assert status == 404 and "deployed: scale" in json.loads(body)["error"]
    # The gateway agent's own /metrics counts what it answered, as the scheduler's does.
    at = cluster.printed("shop-gw", r"/healthz, /readyz and /metrics at (http://\S+)")
    with urllib.request.urlopen(at + "/metrics", timeout=30) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    assert [s.value for s in families["anypu_agent_ready"].samples] == [1.0]
    answered = {
        (s.labels["protocol"], s.labels["model"], s.labels["code"]): s.value
        for s in families["anypu_inference_requests"].samples
    }
    assert answered[("http", "scale", "200")] >= 1 and answered[("http", "scale", "401")] >= 1
    timed = [
        s.value
        for s in families["anypu_inference_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels == {"protocol": "http", "model": "scale"}
    ]
    assert timed and timed[0] >= 1
    assert "anypu_auth_failures_throttled" in families


def test_a_triton_grpc_client_infers_at_the_gateway_s_direct_port(shop):
    import tritonclient.grpc as triton

    cluster, client, _ = shop
    shop_node = next(n for n in client.transport.list_nodes() if n.node_id == "shop-gw")
    host_port = shop_node.direct_address
    assert host_port
    grpc_client = triton.InferenceServerClient(
        host_port,
        ssl=True,
        root_certificates=str(cluster.state_dir / "tls" / "ca.pem"),
        channel_args=[("grpc.ssl_target_name_override", "shop-gw")],
    )
    try:
        x = triton.InferInput("x", [1, 4], "FP32")
        x.set_data_from_numpy(X.numpy())
        bearer = {"authorization": f"Bearer {cluster.token}"}
        answer = grpc_client.infer("scale", [x], headers=bearer)
        assert answer.as_numpy("output0").tolist() == (X * 2).tolist()
        assert grpc_client.is_model_ready("scale", headers=bearer)
    finally:
        grpc_client.close()


def test_the_replica_moves_to_the_site_its_calls_come_from(shop):
    cluster, client, _ = shop
    for _ in range(30):
        status, _ = _https(shop, "POST", "/v2/models/scale/infer", BODY, cluster.token)
        assert status == 200
    deadline = time.monotonic() + 60
    where: list[tuple[str, str]] = []
    info = None
    while time.monotonic() < deadline:
        _https(shop, "GET", "/v2/models/scale/ready", token=cluster.token)  # reports the rest
        info = next(d for d in client.deployments() if d.name == "scale")
        where = sorted((r.placed_for, r.node_id) for r in info.ready)
        if where == [("shop-7", "shop-gw")]:
            break
        time.sleep(0.3)
    assert where == [("shop-7", "shop-gw")], info
    assert info is not None and dict(info.traffic).get("shop-7", 0) >= 20
    assert any("moving a replica from cloud to shop-7" in e for e in info.events), info.events
    # The gateway told the scheduler its calls' times end to end there.
    assert sum(info.caller_buckets) >= 30 and info.caller_seconds > 0
    # It still answers, now from the shop's own replica.
    status, body = _https(shop, "POST", "/v2/models/scale/infer", BODY, cluster.token)
    assert status == 200, body
