"""Slice isolation: worker environments, limits applied inside the worker, worker devices."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from typing import Any

import pytest
import torch

from anypu.devices import (
    PROBES,
    AmdProbe,
    AscendProbe,
    CpuProbe,
    Device,
    NvidiaProbe,
    Probe,
    apply_slice_limits,
    physical_index,
    slice_environment,
    vendor_of,
    with_slices,
    worker_torch_device,
)


def _gpu(slices: int = 1, index: int = 3) -> Device:
    return Device(
        device_id="gpu1",
        kind="gpu",
        vendor="nvidia",
        model="H100 80GB HBM3",
        memory_bytes=80 * 2**30,
        tflops=67.0,
        torch_device="cuda:1",
        slices=slices,
        threads=2,
        extra={"index": str(index)},
    )


NPU = Device(
    "npu2", "npu", "huawei", "Ascend910B3", 64 * 2**30, 313.0, "npu:2", extra={"index": "2"}
)
CPU = Device("cpu0", "cpu", "amd", "EPYC", 8 * 2**30, 0.4, "cpu", slices=3, threads=2)
SIM_GPU = Device(
    "gpu0", "gpu", "nvidia", "A100", 40 * 2**30, 156.0, "cpu", simulated=True, slices=2
)


def test_nvidia_slice_pins_the_physical_gpu_and_caps_memory() -> None:
    env = slice_environment(_gpu(slices=4), 2)
    assert env["CUDA_VISIBLE_DEVICES"] == "3"  # NVML index, not the agent's cuda:1
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert float(env["ANYPU_MEMORY_FRACTION"]) == 0.25
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2"
    assert (env["ANYPU_DEVICE_ID"], env["ANYPU_SLICE_INDEX"], env["ANYPU_SLICES"]) == (
        "gpu1",
        "2",
        "4",
    )
    assert env["ANYPU_TORCH_DEVICE"] == "cuda:0"


def test_whole_gpu_has_no_mps_share() -> None:
    env = slice_environment(_gpu(slices=1), 0)
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in env
    assert float(env["ANYPU_MEMORY_FRACTION"]) == 1.0


def test_three_slices_round_the_mps_percentage_down() -> None:
    assert slice_environment(_gpu(slices=3), 0)["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "33"


def test_gpu_without_index_falls_back_to_torch_device_number() -> None:
    gpu = Device("gpu0", "gpu", "nvidia", "T4", 2**34, 8.1, "cuda:5")
    assert slice_environment(gpu, 0)["CUDA_VISIBLE_DEVICES"] == "5"


def test_ascend_slice_pins_the_logical_npu() -> None:
    env = slice_environment(NPU, 0)
    assert env["ASCEND_RT_VISIBLE_DEVICES"] == "2"
    assert "CUDA_VISIBLE_DEVICES" not in env and "ANYPU_MEMORY_FRACTION" not in env
    assert worker_torch_device(NPU) == "npu:0"


@pytest.mark.parametrize("device", [CPU, SIM_GPU])
def test_cpu_and_simulated_slices_hide_gpus(device: Device) -> None:
    env = slice_environment(device, 1)
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert "ANYPU_MEMORY_FRACTION" not in env
    assert env["ANYPU_TORCH_DEVICE"] == "cpu"
    assert worker_torch_device(device) == "cpu"


@pytest.mark.parametrize("index", [-1, 3, 10])
def test_slice_index_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match=r"cpu0, which has 3 slice\(s\) \(valid: 0\.\.2\)"):
        slice_environment(CPU, index)


def test_with_slices_recuts_a_device() -> None:
    cut = with_slices(_gpu(), 4)
    assert (cut.slices, cut.sharing, cut.threads) == (4, "time", 2)  # no MPS daemon: by time
    assert cut.slice_memory_bytes == 20 * 2**30
    assert with_slices(cut, 1).sharing == "exclusive"
    assert with_slices(CPU, 2, threads=1).sharing == "threads"
    assert with_slices(SIM_GPU, 4).sharing == "time"
    with pytest.raises(ValueError, match="slices must be at least 1"):
        with_slices(CPU, 0)


@pytest.fixture
def restore_threads() -> Any:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_apply_limits_sets_torch_threads(restore_threads: None) -> None:
    applied = apply_slice_limits(Device("cpu0", "cpu", "x", "y", 2**30, 0.1, "cpu", threads=1))
    assert torch.get_num_threads() == 1
    assert applied == {"threads": 1, "memory_fraction": None}


def test_apply_limits_caps_cuda_memory_when_cuda_is_available(
    monkeypatch: pytest.MonkeyPatch, restore_threads: None
) -> None:
    calls: list[tuple[float, torch.device]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch.cuda,
        "set_per_process_memory_fraction",
        lambda fraction, device: calls.append((fraction, device)),
    )
    gpu = _gpu(slices=4)
    applied = apply_slice_limits(gpu, environ=slice_environment(gpu, 0))
    assert applied["memory_fraction"] == 0.25
    assert calls == [(0.25, torch.device("cuda:0"))]  # narrowed worker: its GPU is cuda:0
    calls.clear()
    apply_slice_limits(gpu, environ={})  # not narrowed: the agent-side numbering applies
    assert calls == [(0.25, torch.device("cuda:1"))]
    calls.clear()
    apply_slice_limits(_gpu(slices=1), environ={})
    assert calls == []  # a whole GPU needs no cap


def test_apply_limits_skips_cuda_when_unavailable(restore_threads: None) -> None:
    if torch.cuda.is_available():
        pytest.fail("this test assumes the CPU-only torch build the project pins")
    assert apply_slice_limits(_gpu(slices=2), environ={})["memory_fraction"] is None


def test_environment_reaches_a_real_worker_process() -> None:
    env = {**os.environ, **slice_environment(CPU, 2)}
    code = (
        "import os, torch;"
        "from anypu.devices import Device, apply_slice_limits;"
        "d = Device('cpu0', 'cpu', 'x', 'y', 2**30, 0.1, 'cpu', slices=3, threads=2);"
        "apply_slice_limits(d);"
        "print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads(),"
        " repr(os.environ['CUDA_VISIBLE_DEVICES']), os.environ['ANYPU_SLICE_INDEX'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.split() == ["2", "2", "''", "2"]


@pytest.mark.parametrize(
    ("device", "vendor"),
    [
        (_gpu(), NvidiaProbe),
        (NPU, AscendProbe),
        (CPU, CpuProbe),
        (SIM_GPU, Probe),  # simulated: no vendor runtime, the defaults
        (Device("gpu0", "gpu", "amd", "MI300X", 2**30, 1.0, "cuda:0"), AmdProbe),
        (Device("gpu0", "gpu", "acme", "X1", 2**30, 1.0, "cuda:0"), Probe),  # no probe
    ],
)
def test_each_device_finds_its_vendor_in_the_registry(device: Device, vendor: type) -> None:
    assert vendor_of(device) is vendor


def test_every_registered_probe_declares_the_devices_it_describes() -> None:
    kinds = {(probe.kind, probe.vendor) for probe in PROBES}
    assert len(kinds) == len(PROBES), "two probes claim the same devices"
    assert all(probe.kind for probe in PROBES)


class _TpuProbe(Probe):
    """A vendor the registry has never seen (Sophgo TPUs): one class is all it takes."""

    name = "sophgo"
    kind = "npu"
    vendor = "sophgo"

    def available(self) -> bool:
        return False

    def probe(self) -> list[Device]:
        return []

    def utilisation(self) -> dict[str, float]:
        return {}

    @classmethod
    def slice_environment(cls, device: Device, slice_index: int) -> dict[str, str]:
        return {"SOPHGO_VISIBLE_DEVICES": str(physical_index(device))}

    @classmethod
    def worker_torch_device(cls, device: Device) -> str:
        return "tpu:0"


def test_a_new_vendor_is_one_class_plus_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    tpu = Device("npu0", "npu", "sophgo", "SC7", 2**30, 1.0, "tpu:4", extra={"index": "4"})
    assert vendor_of(tpu) is Probe
    registry = (*PROBES, _TpuProbe)
    assert vendor_of(tpu, registry) is _TpuProbe
    assert vendor_of(NPU, registry) is AscendProbe
    assert _TpuProbe.slice_environment(tpu, 0) == {"SOPHGO_VISIBLE_DEVICES": "4"}
    assert _TpuProbe.worker_torch_device(tpu) == "tpu:0"
    assert _TpuProbe.sharing(tpu, 2) == "time"
    # Registered, the slice functions the agent and its workers call use it.
    import anypu.devices._slices as slices

    monkeypatch.setattr(slices, "PROBES", registry)
    env = slice_environment(with_slices(tpu, 2), 1)
    assert env["SOPHGO_VISIBLE_DEVICES"] == "4" and env["ANYPU_TORCH_DEVICE"] == "tpu:0"
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert with_slices(tpu, 2).sharing == "time"
    assert worker_torch_device(tpu) == "tpu:0"


def test_only_nvidia_gpus_share_through_mps() -> None:
    # MPS is NVIDIA's; a real GPU of a vendor without a probe class shares by time.
    amd = Device("gpu0", "gpu", "amd", "MI300X", 2**30, 1.0, "cuda:0")
    assert with_slices(amd, 2).sharing == "time"
    assert with_slices(_gpu(), 2).sharing == "time"  # no MPS daemon seen by its probe
    served = dataclasses.replace(_gpu(), extra={**_gpu().extra, "mps": "running"})
    assert with_slices(served, 2).sharing == "mps"
