"""A backend lacking an operator the model needs is a placement failure, not the user's
error. The SDK records the model's operators at export; a device whose agent says its
backend lacks one is skipped (here a simulated NPU declaring ``lacks``, the vendor
boundary of a simulated backend); and a job that reaches such a backend anyway (a
request without its operators, as an older client sends) is refused by the worker before
it runs, moves to another kind and succeeds. Real processes throughout."""

from __future__ import annotations

import dataclasses
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


def test_a_model_the_fast_backend_cannot_run_runs_elsewhere(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.add_agent("npu-1", "cloud", NPU)
        cluster.add_agent("gpu-1", "cloud", GPU)
        with cluster.connected_client(2) as client:
            model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh()).eval()
            x = torch.randn(8, 64)
            # Its operators say it needs tanh: the NPU is never tried.
            handle = client.submit(model, x)
            torch.testing.assert_close(handle.result(timeout=120), model(x))
            assert handle.info().placement.node_id == "gpu-1" and handle.info().attempt == 1
            stuck = client.submit(model, x, RunOptions(nodes=("npu-1",)))
            reason = _pending_reason(stuck, "npu-1")
            assert "lacks aten::tanh, which the model calls" in reason, reason
            stuck.cancel()
            # A request without its operators (another model, warm nowhere) reaches the
            # NPU: its worker refuses it before running, and it succeeds on the GPU at its
            # second attempt, never the user's error; the model is not sent there again.
            fresh = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh()).eval()
            request, args = client._describe(fresh, x, RunOptions())
            request = dataclasses.replace(client._with_inputs(request, args), operators=())
            job_id = client.transport.submit(request)[0].job_id
            info, outputs, timed_out = client.transport.wait(job_id, 120)
            assert not timed_out and info.state == "succeeded", info.outcome.message
            assert info.placement.node_id == "gpu-1" and info.attempt == 2
            assert "lacks operator(s) the model needs: aten::tanh" in cluster.log("scheduler")
            again = client.transport.submit(request)[0].job_id
            info, _, _ = client.transport.wait(again, 60)
            assert info.placement.node_id == "gpu-1" and info.attempt == 1
            # A model without the operator still runs on the fast backend.
            plain, y = torch.nn.Linear(64, 64).eval(), torch.randn(8, 64)
            other = client.submit(plain, y)
            torch.testing.assert_close(other.result(timeout=60), plain(y))
            assert other.info().placement.node_id == "npu-1"
    finally:
        cluster.close()


def _pending_reason(handle, node: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reason = handle.info().pending_reasons.get(node, "")
        if reason:
            return reason
        time.sleep(0.1)
    return ""
