"""A backend lacking an operator the model needs is a placement failure, not the user's
error: the worker finds it before running (the device's backend declares the gap at the
vendor boundary, here a simulated NPU's ``lacks``), the job moves to another kind and
succeeds, and the model is not sent to that backend again. Real processes throughout."""

from __future__ import annotations

import time

import torch

from anypu.sdk import RunOptions
from tests.cluster import Cluster

NPU = """devices:
  - {kind: npu, vendor: huawei, model: Ascend910B, memory: 4GiB, tflops: 300, lacks: [aten::tanh]}
include_host: false
"""
GPU = """devices:
  - {kind: gpu, vendor: nvidia, model: T4, memory: 4GiB, tflops: 8}
include_host: false
"""


def test_a_model_the_fast_backend_cannot_run_ends_up_succeeding_elsewhere(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.add_agent("npu-1", "cloud", NPU)
        cluster.add_agent("gpu-1", "cloud", GPU)
        with cluster.connected_client(2) as client:
            model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh()).eval()
            x = torch.randn(8, 64)
            handle = client.submit(model, x)
            torch.testing.assert_close(handle.result(timeout=120), model(x))
            info = handle.info()
            assert info.placement.node_id == "gpu-1" and info.attempt == 2
            assert info.outcome.ok  # never the user's error
            scheduler = cluster.log("scheduler")
            assert "lacks operator(s) the model needs: aten::tanh" in scheduler
            # The same model goes straight to the backend that has the operator now, and
            # where only the lacking one is allowed it says why it cannot go there.
            again = client.submit(model, x)
            again.result(timeout=60)
            assert again.info().placement.node_id == "gpu-1" and again.info().attempt == 1
            stuck = client.submit(model, x, RunOptions(nodes=("npu-1",)))
            deadline, reasons = time.monotonic() + 30, {}
            while time.monotonic() < deadline and not reasons:
                reasons = stuck.info().pending_reasons
                time.sleep(0.1)
            assert "lacks an operator the model needs" in reasons.get("npu-1", ""), reasons
            stuck.cancel()
            # A model without the operator still runs on the fast backend.
            plain, y = torch.nn.Linear(64, 64).eval(), torch.randn(8, 64)
            other = client.submit(plain, y)
            torch.testing.assert_close(other.result(timeout=60), plain(y))
            assert other.info().placement.node_id == "npu-1"
    finally:
        cluster.close()
