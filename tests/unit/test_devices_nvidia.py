"""NvidiaProbe against a fake pynvml: the real probe code, no GPU needed."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest

from anypu.devices import NvidiaProbe, nvidia_tflops
from tests.fakes import FakeGpu, make_fake_pynvml
from tests.fakes.pynvml import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_LIBRARY_NOT_FOUND,
)

H100_UUID = "GPU-8f0c2a51-54a6-1b3e-9d6e-2b8f6a4c1d01"
A100_UUID = "GPU-1b2c3d4e-0000-4a4a-8b8b-0123456789ab"


def _two_gpus() -> list[FakeGpu]:
    return [
        FakeGpu(
            name="NVIDIA H100 80GB HBM3",
            memory_total=85520809984,
            memory_used=1048576 * 600,
            utilisation_percent=73,
            uuid=H100_UUID,
            compute_capability=(9, 0),
            mig_mode=(0, 0),
        ),
        FakeGpu(
            name="NVIDIA A100-SXM4-40GB",
            memory_total=42949672960,
            utilisation_percent=0,
            uuid=A100_UUID,
            compute_capability=(8, 0),
            mig_mode=(0, 1),  # MIG pending (after a reset): still a whole GPU now
        ),
    ]


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = make_fake_pynvml(_two_gpus())
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def test_two_gpus_are_described(fake_nvml: ModuleType) -> None:
    probe = NvidiaProbe()
    assert probe.available()
    h100, a100 = probe.probe()
    assert (h100.device_id, h100.torch_device, h100.kind, h100.vendor) == (
        "gpu0",
        "cuda:0",
        "gpu",
        "nvidia",
    )
    assert h100.model == "H100 80GB HBM3"
    assert h100.memory_bytes == 85520809984
    assert h100.tflops == 67.0
    assert h100.extra["tflops_fp16"] == "989.5"
    assert h100.extra["tflops_precision"] == "fp32"
    assert h100.extra["compute_capability"] == "9.0"
    assert h100.extra["uuid"] == H100_UUID
    assert h100.extra["driver_version"] == "550.54.15"
    assert h100.extra["mig_mode"] == "disabled"
    assert h100.extra["memory_free_bytes"] == str(85520809984 - 1048576 * 600)
    assert (a100.device_id, a100.torch_device, a100.extra["index"]) == ("gpu1", "cuda:1", "1")
    assert a100.model == "A100-SXM4-40GB"
    assert a100.tflops == 19.5
    assert a100.extra["mig_mode"] == "disabled"  # a GPU in MIG mode: test_devices_nvidia_mig
    assert not h100.simulated and h100.slices == 1 and h100.sharing == "exclusive"


def test_utilisation_is_keyed_by_device_id(fake_nvml: ModuleType) -> None:
    probe = NvidiaProbe()
    assert probe.utilisation() == {}  # nothing probed yet, nothing to report
    probe.probe()
    assert probe.utilisation() == {"gpu0": pytest.approx(0.73), "gpu1": 0.0}


def test_nvml_is_initialised_once_and_shut_down_on_close(fake_nvml: ModuleType) -> None:
    probe = NvidiaProbe()
    probe.available()
    probe.probe()
    probe.utilisation()
    assert fake_nvml.fake_state["init_calls"] == 1
    probe.close()
    assert fake_nvml.fake_state["shutdown_calls"] == 1
    assert fake_nvml.fake_state["initialised"] == 0


def test_pynvml_missing_means_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise
    probe = NvidiaProbe()
    assert not probe.available()
    assert "nvidia-ml-py" in probe.unavailable_reason


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (NVML_ERROR_LIBRARY_NOT_FOUND, "Shared Library Not Found"),
        (NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded"),
    ],
)
def test_nvml_init_failure_means_not_available(
    monkeypatch: pytest.MonkeyPatch, code: int, text: str
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml(_two_gpus(), init_error=code))
    probe = NvidiaProbe()
    assert not probe.available()
    assert text in probe.unavailable_reason
    assert probe.utilisation() == {}


def test_no_gpus_means_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([]))
    probe = NvidiaProbe()
    assert not probe.available()
    assert probe.unavailable_reason.startswith("NVML reports no GPUs")


def test_empty_cuda_visible_devices_hides_every_gpu(
    fake_nvml: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not NvidiaProbe().available()


def test_unsupported_optional_queries_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(
        name="Tesla T4",
        memory_total=16 * 2**30,
        unsupported={"nvmlDeviceGetMigMode", "nvmlDeviceGetUUID"},
    )
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([gpu], driver_version=b"470.1"))
    (device,) = NvidiaProbe().probe()
    assert device.model == "Tesla T4"
    assert device.tflops == 8.1
    assert "mig_mode" not in device.extra and "uuid" not in device.extra
    assert device.extra["driver_version"] == "470.1"  # old bindings return bytes


def test_unknown_gpu_falls_back_to_cores_times_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu(
        name="NVIDIA Future GPU", memory_total=2**34, cuda_cores=10240, max_sm_clock_mhz=2000
    )
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([gpu]))
    (device,) = NvidiaProbe().probe()
    assert device.tflops == pytest.approx(10240 * 2 * 2000e6 / 1e12)
    assert device.extra["tflops_source"] == "cores×clock"
    assert "tflops_fp16" not in device.extra


def test_unknown_gpu_without_core_queries_gets_a_marked_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gpu = FakeGpu(
        name="NVIDIA Mystery",
        memory_total=2**33,
        unsupported={"nvmlDeviceGetNumGpuCores", "nvmlDeviceGetMaxClockInfo"},
    )
    monkeypatch.setitem(sys.modules, "pynvml", make_fake_pynvml([gpu]))
    (device,) = NvidiaProbe().probe()
    assert device.extra["tflops_source"] == "default"
    assert device.tflops > 0


def test_lost_gpu_during_heartbeat_is_skipped(fake_nvml: ModuleType) -> None:
    probe = NvidiaProbe()
    probe.probe()
    fake_nvml.nvmlDeviceGetHandleByIndex(0).gpu.lost = True  # type: ignore[attr-defined]
    assert probe.utilisation() == {"gpu1": 0.0}


@pytest.mark.parametrize(
    ("visible", "expected"),
    [("1", ["1"]), (A100_UUID + "," + H100_UUID, ["1", "0"]), ("0,7,1", ["0"]), ("", [])],
)
def test_agent_cuda_visible_devices_is_respected(
    fake_nvml: ModuleType, monkeypatch: pytest.MonkeyPatch, visible: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    devices = NvidiaProbe().probe()
    assert [d.extra["index"] for d in devices] == expected
    assert [d.torch_device for d in devices] == [f"cuda:{i}" for i in range(len(expected))]


def test_slices_mark_sharing(
    fake_nvml: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    h100, _ = NvidiaProbe(slices=4).probe()
    assert (h100.slices, h100.sharing, h100.extra["mps"]) == (4, "time", "not running")
    (tmp_path / "control").touch()  # an MPS control daemon's pipe
    h100, _ = NvidiaProbe(slices=4).probe()
    assert (h100.slices, h100.sharing, h100.extra["mps"]) == (4, "mps", "running")
    assert h100.slice_memory_bytes == 85520809984 // 4
    with pytest.raises(ValueError, match="at least 1"):
        NvidiaProbe(slices=0)


@pytest.mark.parametrize(
    ("name", "fp32"),
    [
        ("NVIDIA H100 PCIe", 51.0),
        ("NVIDIA H100 NVL", 60.0),
        ("NVIDIA H200", 67.0),
        ("NVIDIA GH200 480GB", 67.0),
        ("NVIDIA A100 80GB PCIe", 19.5),
        ("NVIDIA A10", 31.2),
        ("NVIDIA L40S", 91.6),
        ("NVIDIA L4", 30.3),
        ("Tesla V100-PCIE-16GB", 14.0),
        ("Tesla V100-SXM2-32GB", 15.7),
        ("NVIDIA GeForce RTX 4090", 82.6),
    ],
)
def test_table_picks_the_specific_variant(name: str, fp32: float) -> None:
    known = nvidia_tflops(name)
    assert known is not None and known[0] == fp32


def test_table_does_not_match_lookalikes() -> None:
    assert nvidia_tflops("NVIDIA A10G") is None  # not an A10
    assert nvidia_tflops("NVIDIA L40S")[0] != nvidia_tflops("NVIDIA L4")[0]  # type: ignore[index]


def test_readings_carry_utilisation_memory_and_each_process(fake_nvml: ModuleType) -> None:
    fake_nvml.fake_gpus[0].processes = {4242: 3 << 30, 4343: 1 << 30}  # type: ignore[attr-defined]
    probe = NvidiaProbe()
    probe.probe()
    readings = probe.readings()
    h100 = readings["gpu0"]
    assert h100.utilisation == pytest.approx(0.73)
    assert h100.memory_used_bytes == 1048576 * 600
    assert dict(h100.process_memory) == {4242: 3 << 30, 4343: 1 << 30}
    assert readings["gpu1"].process_memory == {}


def test_a_seat_is_held_to_its_job_s_compute_share_only_where_mps_runs() -> None:
    import dataclasses

    from anypu.devices import Device, job_environment, with_shares

    gpu = Device("gpu0", "gpu", "nvidia", "A100", 40 << 30, 19.5, "cuda:0", extra={"index": "0"})
    mps = dataclasses.replace(gpu, extra={**gpu.extra, "mps": "running"})
    assert job_environment(with_shares(mps, 4), 333) == {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "34"}
    assert job_environment(with_shares(mps, 4), 1) == {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "1"}
    assert job_environment(with_shares(gpu, 4), 333) == {}  # no daemon: shared by time
    assert job_environment(mps, 333) == {}  # a whole or sliced GPU: set per slice at start
    assert job_environment(with_shares(mps, 4), 0) == {}
