"""A call split across tiers over real processes: the SDK offers cuts of the model, the
scheduler runs the head on the phone and the tail in the cloud, and the outputs are the
model's own."""

from __future__ import annotations

import pytest
import torch

from anypu.sdk import Client, RunOptions
from anypu.sdk._transport import GrpcTransport
from tests.cluster import Cluster

# The scheduler is beside the phone (its site's gateway: inputs go up to it and the agent
# fetches them); the cloud is across an 8 Mb/s (1 MB/s) uplink, 20 ms away.
NETWORK = """\
sites: [scheduler, phone, cloud]
links:
  - {a: phone, b: scheduler, latency_ms: 1, bandwidth_mbps: 1000}
  - {a: scheduler, b: cloud, latency_ms: 20, bandwidth_mbps: 8}
"""
PHONE = (
    "devices:\n"
    "  - {kind: cpu, vendor: arm, model: Cortex-A78, memory: 4GiB, tflops: 0.001}\n"
    "include_host: false\n"
)
CLOUD = (
    "devices:\n"
    "  - {kind: gpu, vendor: nvidia, model: A100-SXM4-40GB, memory: 40GiB, tflops: 156}\n"
    "include_host: false\n"
)


class Camera(torch.nn.Module):
    """A strided convolution shrinks 16 frames of 3x128x128 (3 MiB) to 64 KiB; the rest
    is the heavy part (0.32 GFLOP in 150 kB of weights, so a cold tail is quick to
    ship): best run where the compute is, once the frames are small enough to send."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, stride=4, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2)
        )
        self.head = torch.nn.Sequential(
            torch.nn.Conv2d(4, 64, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(64, 64, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(64, 10),
        )

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.head(self.features(frames))
        return {"logits": logits, "best": logits.argmax(dim=1)}


@pytest.fixture(scope="module")
def split_cluster(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("split")
    (workdir / "network.yaml").write_text(NETWORK)
    cluster = Cluster(workdir, network=workdir / "network.yaml")
    try:
        cluster.add_agent("phone-1", "device", PHONE, site="phone")
        cluster.add_agent("cloud-1", "cloud", CLOUD, site="cloud")
        client = Client(GrpcTransport(cluster.address, cluster.token), origin="phone")
        cluster.wait_nodes(client, 2)
        yield client
        client.close()
    finally:
        cluster.close()


def test_a_deadline_call_splits_phone_then_cloud_with_the_model_s_outputs(split_cluster):
    client = split_cluster
    model = Camera().eval()
    frames = torch.randn(16, 3, 128, 128)
    future = client.submit(model, frames, RunOptions(deadline_ms=5_000))
    outputs = future.result(timeout=120)
    expected = model(frames)
    torch.testing.assert_close(outputs["logits"], expected["logits"])
    assert torch.equal(outputs["best"], expected["best"])
    info = future.info()
    assert info.state == "succeeded" and info.placement.node_id == "cloud-1"
    assert "head on phone-1/cpu0, tail on cloud-1/gpu0" in info.split, info.split
    head = next(j for j in client.transport.list_jobs(10) if j.job_id == info.head_job_id)
    assert head.state == "succeeded" and head.placement.node_id == "phone-1"
    assert head.name == "Camera (head)"


def test_split_false_runs_whole_and_a_wrong_split_says_what_to_give(split_cluster):
    client = split_cluster
    model = Camera().eval()
    frames = torch.randn(16, 3, 128, 128)
    future = client.submit(model, frames, RunOptions(deadline_ms=20_000, split=False))
    torch.testing.assert_close(future.result(timeout=120)["logits"], model(frames)["logits"])
    assert future.info().split == "" and future.info().head_job_id == ""
    from anypu.errors import InputError

    with pytest.raises(InputError, match="split must be True, False or None"):
        client.run(model, frames, RunOptions(split="yes"))  # type: ignore[arg-type]
