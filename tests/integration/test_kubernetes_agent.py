"""``anypu agent --kubernetes`` against an API server's recorded answers, served by a
local HTTP server (no API server runs here): the real ``kubernetes`` client reads the
node and its ResourceSlices with a kubeconfig's token, and the agent offers what the
node hands out, with its labels."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.cluster import Cluster

pytest.importorskip("kubernetes", reason="--kubernetes needs the kubernetes client")

DATA = Path(__file__).parent.parent / "data" / "kubernetes"
TOKEN = "recorded-service-account-token"
# What the agent's pod sees: one GPU (declared: this machine has none) and its own CPU.
POD_DEVICES = """\
devices:
  - {kind: gpu, vendor: nvidia, model: A100-SXM4-40GB, memory: 40GiB, tflops: 19.5}
  - {kind: npu, vendor: huawei, model: Ascend-910B, memory: 64GiB, tflops: 320}
"""


class RecordedApiServer(http.server.ThreadingHTTPServer):
    """Answers the two reads the agent makes from files, checking its bearer token."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.asked: list[str] = []
        self.node_file = "node-gpu.json"  # what GET of the node answers
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: RecordedApiServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.asked.append(self.path)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._answer(403, {"kind": "Status", "status": "Failure", "reason": "Forbidden",
                                      "message": 'nodes "gpu-node-1" is forbidden', "code": 403})  # fmt: skip
        url = urlparse(self.path)
        if url.path == "/api/v1/nodes/gpu-node-1":
            return self._answer(200, json.loads((DATA / self.server.node_file).read_text()))
        if url.path == "/apis/resource.k8s.io/v1/resourceslices":
            assert parse_qs(url.query)["fieldSelector"] == ["spec.nodeName=gpu-node-1"]
            return self._answer(200, {"kind": "ResourceSliceList", "apiVersion": "resource.k8s.io/v1",
                                      "metadata": {}, "items": []})  # fmt: skip
        self._answer(
            404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
        )

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _kubeconfig(path: Path, server: str, token: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: recorded\n"
        f"clusters:\n- name: recorded\n  cluster:\n    server: {server}\n"
        f"users:\n- name: agent\n  user:\n    token: {token}\n"
        "contexts:\n- name: recorded\n  context:\n    cluster: recorded\n    user: agent\n"
    )
    return path


@pytest.fixture(scope="module")
def api_server():
    server = RecordedApiServer()
    yield server
    server.shutdown()
    server.server_close()


def test_the_agent_offers_what_its_node_hands_out_with_the_node_s_labels(api_server, tmp_path):
    cluster = Cluster(tmp_path)
    try:
        config = _kubeconfig(tmp_path / "kubeconfig", api_server.url, TOKEN)
        flags = ("--kubernetes", "--kubeconfig", str(config), "--kubernetes-node", "gpu-node-1",
                 "--kubernetes-reread", "0.5")  # fmt: skip
        cluster.add_agent("gpu-node-1", "cloud", POD_DEVICES, extra=(*flags, "--label", "team=ml"))
        with cluster.connected_client(1) as client:
            (node,) = client.transport.list_nodes()
            kinds = sorted(d.kind for d in node.devices)
            assert kinds == ["cpu", "gpu"], node.devices  # the NPU is not the node's to give
            (gpu,) = [d for d in node.devices if d.kind == "gpu"]
            assert gpu.extra["kubernetes_resource"] == "nvidia.com/gpu"
            assert gpu.extra["kubernetes_model"] == "NVIDIA-A100-SXM4-40GB"
            assert node.labels["topology.kubernetes.io/zone"] == "eu-central-1a"
            assert node.labels["team"] == "ml"  # --label joins the node's
            # The node's device plugin goes: read again, the agent joins without the GPU.
            node_json = json.loads((DATA / "node-gpu.json").read_text())
            node_json["status"]["allocatable"].pop("nvidia.com/gpu")
            (tmp_path / "node-gpu-gone.json").write_text(json.dumps(node_json))
            api_server.node_file = str(tmp_path / "node-gpu-gone.json")
            deadline = time.monotonic() + 30
            while any(d.kind == "gpu" for d in client.transport.list_nodes()[0].devices):
                assert time.monotonic() < deadline, "the GPU is still offered"
                time.sleep(0.2)
            # Relabelled (kubectl label node … --overwrite): the scheduler sees the new zone.
            node_json["metadata"]["labels"]["topology.kubernetes.io/zone"] = "eu-central-1b"
            (tmp_path / "node-relabelled.json").write_text(json.dumps(node_json))
            api_server.node_file = str(tmp_path / "node-relabelled.json")
            while (
                client.transport.list_nodes()[0].labels["topology.kubernetes.io/zone"]
                != "eu-central-1b"
            ):
                assert time.monotonic() < deadline, "the node's new label never arrived"
                time.sleep(0.2)
            assert client.transport.list_nodes()[0].labels["team"] == "ml"
        log = cluster.log("gpu-node-1")
        assert "label topology.kubernetes.io/zone=eu-central-1a -> eu-central-1b" in log
        assert "Kubernetes node gpu-node-1: gpu0 no longer offered" in log
        assert "is not offered: node gpu-node-1 lists no such device to Kubernetes" in log
        assert "has 8 nvidia gpu(s)" in log and "resources.limits nvidia.com/gpu: 8" in log
        assert any(p.startswith("/api/v1/nodes/gpu-node-1") for p in api_server.asked)
        assert any(
            p.startswith("/apis/resource.k8s.io/v1/resourceslices") for p in api_server.asked
        )
    finally:
        cluster.close()


def test_a_service_account_without_the_role_is_told_which_it_needs(api_server, tmp_path):
    cluster = Cluster(tmp_path)
    try:
        config = _kubeconfig(tmp_path / "kubeconfig", api_server.url, "not-the-token")
        agent = cluster.add_agent(
            "gpu-node-1", "cloud", extra=("--kubernetes", "--kubeconfig", str(config),
                                          "--kubernetes-node", "gpu-node-1"),
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert agent.returncode == 2
        log = cluster.log("gpu-node-1")
        assert "the API server refused to get nodes (403 Forbidden)" in log
        assert "ClusterRole" in log and "Traceback" not in log
    finally:
        cluster.close()
