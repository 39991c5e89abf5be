"""An agent's operator self-test: each real backend's gaps found once at start and
reported with its devices. torch's Meta backend plays the accelerator: it is a real
backend with real gaps (no kernel for ``aten::masked_select`` or ``aten::bincount``), so
the dispatcher and the runs answer for real."""

from __future__ import annotations

import dataclasses
import logging
import subprocess

import pytest

from anypu.agents._operators import has_kernel
from anypu.agents._selftest import (
    CATALOGUE,
    _self_test,
    backend_gaps,
    run_catalogue,
    with_self_tested_operators,
)
from anypu.devices import Device

GIB = 1 << 30
GPU0 = Device("gpu0", "gpu", "nvidia", "A100", 40 * GIB, 19.5, "cuda:0", extra={"index": "0"})
GPU1 = dataclasses.replace(GPU0, device_id="gpu1", torch_device="cuda:1", extra={"index": "1"})
NPU = Device(
    "npu0",
    "npu",
    "huawei",
    "Ascend910B3",
    64 * GIB,
    313,
    "npu:0",
    extra={"index": "0", "lacks_operators": "aten::erf"},
)
CPU = Device("cpu0", "cpu", "amd", "EPYC", 64 * GIB, 1.0, "cpu", threads=8)


def _meta_plays_cuda(operator: str, key: str) -> bool:
    return has_kernel(operator, "Meta" if key == "CUDA" else key)


def test_every_catalogue_operator_runs_on_the_cpu() -> None:
    import torch

    from anypu.agents._selftest import _operator

    for name, make_args in CATALOGUE:
        _operator(torch, name)(*make_args(torch, "cpu"))  # raises if an entry is wrong
    assert run_catalogue("cpu") == []


def test_a_run_backend_reports_the_operators_it_refuses_and_nothing_else() -> None:
    extra = (
        ("aten::masked_select", lambda torch, d: (torch.rand(4, device=d),) * 2),
        ("aten::bincount", lambda torch, d: (torch.randint(0, 4, (4,), device=d),)),
        ("aten::item", lambda torch, d: (torch.rand(1, device=d),)),  # fails, not missing
    )
    assert run_catalogue("meta", CATALOGUE + extra) == ["aten::bincount", "aten::masked_select"]


def test_an_authoritative_backend_is_answered_by_its_dispatcher() -> None:
    gaps = backend_gaps("cuda:0", kernel=_meta_plays_cuda, run=lambda _: pytest.fail("ran"))
    assert "aten::masked_select" in gaps and "aten::bincount" in gaps
    assert "aten::linear" not in gaps  # composite
    assert "aten::mm" not in gaps  # a Meta kernel exists
    assert gaps == sorted(gaps) and all(op.startswith("aten::") for op in gaps)


def test_a_build_without_the_backend_is_not_asked_its_dispatcher() -> None:
    # This torch has no CUDA kernels, so its dispatcher cannot speak for CUDA: run instead.
    assert backend_gaps("cuda:0", run=lambda device: [f"ran on {device}"]) == ["ran on cuda:0"]


def test_gaps_are_added_to_declared_ones_once_per_backend(caplog: pytest.LogCaptureFixture) -> None:
    asked: list[str] = []

    def test(device: Device, timeout_s: float) -> list[str]:
        asked.append(device.device_id)
        return ["aten::cumsum", "aten::topk"] if device.kind == "npu" else []

    simulated = dataclasses.replace(GPU1, device_id="gpu9", simulated=True)
    with caplog.at_level(logging.INFO):
        cpu, gpu0, gpu1, npu, sim = with_self_tested_operators(
            [CPU, GPU0, GPU1, NPU, simulated], test=test
        )
    assert asked == ["gpu0", "npu0"]  # gpu1 answers as gpu0; the CPU and simulated untested
    assert (cpu, gpu0, gpu1, sim) == (CPU, GPU0, GPU1, simulated)
    assert npu.lacking_operators == {"aten::erf", "aten::cumsum", "aten::topk"}
    assert "operator self-test of npu0 (npu): lacks 2 operator(s): aten::cumsum" in caplog.text


def test_a_failed_self_test_is_logged_and_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def test(device: Device, timeout_s: float) -> list[str]:
        raise subprocess.TimeoutExpired("python", timeout_s)

    with caplog.at_level(logging.WARNING):
        assert with_self_tested_operators([NPU], test=test, timeout_s=0.5) == [NPU]
    assert "operator self-test of npu0 (npu) failed" in caplog.text
    assert "found per model before it first runs instead" in caplog.text


def test_the_self_test_runs_in_a_child_process() -> None:
    # CPU-only torch: nothing on cuda:0 runs, and nothing is said to be missing either.
    assert _self_test(GPU0, 120.0) == []


def test_mps_with_its_cpu_fallback_is_run_not_read_from_the_dispatcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Missing operators then run on the CPU: the registrations would report gaps that are not.
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    assert backend_gaps(
        "mps",
        kernel=lambda op, key: key != "MPS" or op == "aten::add.Tensor",
        run=lambda device: [f"ran on {device}"],
    ) == ["ran on mps"]
