"""A model's precision chooses which of a device's throughput figures its compute is
costed with, so devices are compared like with like."""

from __future__ import annotations

import pytest
import torch

from anypu.devices import Device
from anypu.placement import (
    PRECISION_RELATIVE,
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NodeView,
    PlacementConfig,
    PlanContext,
    plan,
)
from anypu.sdk._estimate import estimate_profile, precision_of

GIB = 1 << 30
# fp32 19.5 / fp16 312 (tensor cores) against fp32 31.2 / fp16 125.
A100 = Device(
    "gpu0", "gpu", "nvidia", "A100", 40 * GIB, 19.5, "cuda:0",
    extra={"tflops_precision": "fp32", "tflops_fp16": "312"},
)  # fmt: skip
A10 = Device(
    "gpu0", "gpu", "nvidia", "A10", 24 * GIB, 31.2, "cuda:0",
    extra={"tflops_precision": "fp32", "tflops_fp16": "125"},
)  # fmt: skip
ASCEND = Device(
    "npu0", "npu", "huawei", "Ascend910B", 64 * GIB, 320.0, "npu:0",
    extra={"tflops_precision": "fp16"},
)  # fmt: skip


def _snapshot(*devices: tuple[str, Device]) -> ClusterSnapshot:
    nodes = tuple(
        NodeView(name, "cloud", "", devices=(DeviceView(name, device, (0.0,)),))
        for name, device in devices
    )
    return ClusterSnapshot(nodes=nodes)


def _job(precision: str) -> JobRequest:
    return JobRequest("j", "d" * 64, 1e13, GIB, 0, 0, precision=precision)


@pytest.mark.parametrize(("precision", "node"), [("fp32", "a10"), ("fp16", "a100")])
def test_the_model_s_precision_picks_the_faster_device_for_it(precision: str, node: str):
    snapshot = _snapshot(("a100", A100), ("a10", A10))
    (placed,) = plan(snapshot, [_job(precision)], config=PlacementConfig()).placements
    assert placed.node_id == node


def test_a_device_without_a_figure_at_the_precision_is_scaled_from_its_own():
    ctx = PlanContext(_snapshot(("npu", ASCEND), ("gpu", A100)), PlacementConfig())
    fp16, fp32, int8 = ctx.flops_per_s("fp16"), ctx.flops_per_s("fp32"), ctx.flops_per_s("int8")
    eff_npu, eff_gpu = (
        PlacementConfig().efficiency_of("npu"),
        PlacementConfig().efficiency_of("gpu"),
    )
    assert fp16[0] == pytest.approx(320e12 * eff_npu)  # its own figure
    assert fp32[0] == pytest.approx(320e12 * eff_npu / PRECISION_RELATIVE["fp16"])
    assert fp16[1] == pytest.approx(312e12 * eff_gpu)  # the published tensor-core figure
    assert int8[1] == pytest.approx(19.5e12 * eff_gpu * PRECISION_RELATIVE["int8"])


def test_the_sdk_reads_the_precision_from_the_weights_else_the_inputs():
    linear = torch.nn.Linear(8, 8)
    assert precision_of(linear, (torch.randn(2, 8),)) == "fp32"
    assert precision_of(linear.half(), (torch.randn(2, 8).half(),)) == "fp16"
    assert precision_of(torch.nn.ReLU(), (torch.randn(2, 8, dtype=torch.bfloat16),)) == "bf16"
    half = torch.nn.Linear(8, 8).to(torch.bfloat16)
    assert estimate_profile(half, (torch.randn(2, 8, dtype=torch.bfloat16),)).precision == "bf16"
