"""Operators a backend lacks, asked of the right authority before a model runs."""

from __future__ import annotations

import dataclasses

import torch

from anypu.agents._operators import graph_operators, has_kernel, lacking_operators
from anypu.agents._runner import ModelRunner
from anypu.devices import Device, parse_devices
from anypu.protos.messages import FailureCode
from anypu.sdk._export import export_model

GIB = 1 << 30
CUDA_GPU = Device("gpu0", "gpu", "nvidia", "A100", 40 * GIB, 19.5, "cuda:0")
ASCEND = Device("npu0", "npu", "huawei", "Ascend910B", 64 * GIB, 320.0, "npu:0")


def _program() -> torch.export.ExportedProgram:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    return torch.export.export(model, (torch.randn(2, 4),))


def test_the_graph_s_operators_are_named_as_the_dispatcher_names_them():
    assert graph_operators(_program()) == {"aten::linear", "aten::tanh"}
    assert has_kernel("aten::tanh", "CPU") and not has_kernel("aten::no_such_op", "CPU")


def test_cuda_s_dispatcher_is_asked_and_composite_operators_run_everywhere():
    def kernel(op: str, key: str) -> bool:  # a CUDA build without a tanh kernel
        if key == "CompositeImplicitAutograd":
            return op == "aten::linear"
        return key == "CUDA" and op != "aten::tanh"

    ops = graph_operators(_program())
    assert lacking_operators(ops, CUDA_GPU, "cuda:0", kernel) == ["aten::tanh"]
    # A torch without CUDA kernels at all knows nothing of CUDA: nothing is refused.
    assert lacking_operators(ops, CUDA_GPU, "cuda:0", lambda op, key: False) == []
    # Out-of-tree backends may serve operators through a fallback: not asked.
    assert lacking_operators(ops, ASCEND, "npu:0", lambda op, key: False) == []


def test_a_simulated_backend_lacks_what_its_file_declares_and_the_runner_refuses_it(tmp_path):
    (npu,) = parse_devices(
        {
            "devices": [
                {
                    "kind": "npu", "vendor": "huawei", "model": "Ascend910B",
                    "memory": "4GiB", "tflops": 300, "lacks": ["aten::tanh"],
                }
            ],
            "include_host": False,
        }
    ).devices  # fmt: skip
    assert npu.extra["lacks_operators"] == "aten::tanh"
    assert lacking_operators({"aten::tanh", "aten::relu"}, npu, "cpu") == ["aten::tanh"]
    artifact = export_model(
        torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh()), (torch.randn(2, 4),)
    )
    path = tmp_path / "model.anypu"
    path.write_bytes(artifact.data)
    from anypu import _codec

    runner = ModelRunner("cpu", device=npu, where="npu0 slice 0")
    outcome, _ = runner.execute(artifact.digest, str(path), _codec.encode((torch.randn(2, 4),)))
    assert outcome.code is FailureCode.OPERATOR_UNSUPPORTED and outcome.retryable
    assert "lacks operator(s) the model needs: aten::tanh" in outcome.message
    assert runner.warm == []  # not kept: it cannot run here
    plain = dataclasses.replace(npu, extra={})
    outcome, _ = ModelRunner("cpu", device=plain).execute(
        artifact.digest, str(path), _codec.encode((torch.randn(2, 4),))
    )
    assert outcome.ok


def test_the_export_records_the_operators_and_placement_skips_a_backend_lacking_one():
    from anypu.placement import (
        ClusterSnapshot,
        DeviceView,
        JobRequest,
        NodeView,
        PlacementConfig,
        plan,
    )
    from anypu.protos import convert
    from anypu.protos import messages as m

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    artifact = export_model(model, (torch.randn(2, 4),))
    assert artifact.operators == {"aten::linear", "aten::tanh"}
    request = m.SubmitRequest("d" * 64, operators=tuple(sorted(artifact.operators)))
    assert convert.submit_request_from_pb(convert.submit_request_to_pb(request)) == request
    npu = dataclasses.replace(ASCEND, extra={"lacks_operators": "aten::tanh,aten::erf"})
    snapshot = ClusterSnapshot(
        nodes=(
            NodeView("npu-1", "cloud", "", devices=(DeviceView("npu-1", npu, (0.0,)),)),
            NodeView("gpu-1", "cloud", "", devices=(DeviceView("gpu-1", CUDA_GPU, (0.0,)),)),
        )
    )
    job = JobRequest("j", "d" * 64, 1e12, GIB, 0, 0, operators=frozenset(artifact.operators))
    (placed,) = plan(snapshot, [job], config=PlacementConfig()).placements
    assert placed.node_id == "gpu-1"  # the NPU is faster, but lacks tanh
    pinned = dataclasses.replace(job, nodes=frozenset({"npu-1"}))
    reasons = plan(snapshot, [pinned], config=PlacementConfig()).unschedulable["j"]
    assert "lacks aten::tanh, which the model calls" in reasons["npu-1"]
    plain = dataclasses.replace(job, operators=frozenset({"aten::linear"}))
    (placed,) = plan(snapshot, [plain], config=PlacementConfig()).placements
    assert placed.node_id == "npu-1"


def test_an_allocation_refused_without_words_is_still_reported_as_out_of_memory(
    tmp_path, monkeypatch
):
    """``MemoryError()`` says nothing: the report must not fail on its empty text."""
    import anypu.agents._artifact as artifact_module
    from anypu import _codec

    artifact = export_model(torch.nn.Linear(4, 4), (torch.randn(2, 4),))
    path = tmp_path / "model.anypu"
    path.write_bytes(artifact.data)

    def refuse(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(artifact_module, "run_model", refuse)
    runner = ModelRunner("cpu", memory_limit_bytes=1 << 20)
    outcome, _ = runner.execute(artifact.digest, str(path), _codec.encode((torch.randn(2, 4),)))
    assert outcome.code is FailureCode.OUT_OF_MEMORY
    assert outcome.message.endswith("(MemoryError)")
    assert outcome.memory_used_bytes == 1 << 20
