"""A stand-in for ``pynvml`` that behaves like NVML on a configurable set of GPUs.

``make_fake_pynvml(...)`` returns a fresh module object; tests install it with
``monkeypatch.setitem(sys.modules, "pynvml", fake)`` so the real ``NvidiaProbe`` code
runs against it.  Only the calls the probe makes exist, with pynvml's names, argument
order and return shapes (named tuples where pynvml returns ctypes structs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

__all__ = ["FakeGpu", "make_fake_pynvml"]

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    6: "Not Found",
}


@dataclass
class FakeGpu:
    """One GPU. A name listed in ``unsupported`` makes that NVML call raise NOT_SUPPORTED."""

    name: str
    memory_total: int
    memory_used: int = 0
    utilisation_percent: int = 0
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    compute_capability: tuple[int, int] = (8, 0)
    mig_mode: tuple[int, int] = (0, 0)
    cuda_cores: int = 0
    max_sm_clock_mhz: int = 0
    unsupported: set[str] = field(default_factory=set)
    lost: bool = False
    #: pid -> device memory of each compute process (``nvmlDeviceGetComputeRunningProcesses``)
    processes: dict[int, int] = field(default_factory=dict)
    #: MIG devices by MIG index (``None``: an index with no device); set ``mig_mode`` too.
    #: Each is a FakeGpu of its own: name as NVML gives it (``NVIDIA A100-SXM4-40GB MIG
    #: 1g.5gb``), memory, ``MIG-…`` UUID, processes; NVML has no utilisation for it.
    mig_devices: list[FakeGpu | None] = field(default_factory=list)
    max_mig_devices: int = 7
    #: A MIG device's GPU instance (compute instances of one GPU instance share it).
    gpu_instance_id: int = 0


def make_fake_pynvml(
    gpus: list[FakeGpu],
    *,
    init_error: int | None = None,
    driver_version: str | bytes = "550.54.15",
) -> ModuleType:
    """A module mimicking pynvml; ``init_error`` makes ``nvmlInit`` fail with that code."""
    module = ModuleType("pynvml")
    state = {"initialised": 0, "init_calls": 0, "shutdown_calls": 0}

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(value)
            self.value = value

        def __str__(self) -> str:
            return _MESSAGES.get(self.value, f"NVML error {self.value}")

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's own spelling
        pass

    def _raise(code: int) -> None:
        raise (NVMLError_NotSupported if code == NVML_ERROR_NOT_SUPPORTED else NVMLError)(code)

    def _require_init() -> None:
        if not state["initialised"]:
            _raise(NVML_ERROR_UNINITIALIZED)

    def _gpu(handle: Any, call: str) -> FakeGpu:
        _require_init()
        gpu: FakeGpu = handle.gpu
        if gpu.lost:
            _raise(NVML_ERROR_GPU_IS_LOST)
        if call in gpu.unsupported:
            _raise(NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def nvmlInit() -> None:
        state["init_calls"] += 1
        if init_error is not None:
            _raise(init_error)
        state["initialised"] += 1

    def nvmlShutdown() -> None:
        _require_init()
        state["shutdown_calls"] += 1
        state["initialised"] -= 1

    def nvmlSystemGetDriverVersion() -> str | bytes:
        _require_init()
        return driver_version

    def nvmlDeviceGetCount() -> int:
        _require_init()
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(index: int) -> SimpleNamespace:
        _require_init()
        if not 0 <= index < len(gpus):
            _raise(2)  # NVML_ERROR_INVALID_ARGUMENT
        return SimpleNamespace(gpu=gpus[index], index=index)

    def nvmlDeviceGetName(handle: Any) -> str:
        return _gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(handle: Any) -> str:
        return _gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetMemoryInfo(handle: Any) -> SimpleNamespace:
        gpu = _gpu(handle, "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(
            total=gpu.memory_total, used=gpu.memory_used, free=gpu.memory_total - gpu.memory_used
        )

    def nvmlDeviceGetUtilizationRates(handle: Any) -> SimpleNamespace:
        gpu = _gpu(handle, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=gpu.utilisation_percent, memory=0)

    def nvmlDeviceGetComputeRunningProcesses(handle: Any) -> list[SimpleNamespace]:
        gpu = _gpu(handle, "nvmlDeviceGetComputeRunningProcesses")
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF)
            for pid, used in gpu.processes.items()
        ]

    def nvmlDeviceGetCudaComputeCapability(handle: Any) -> tuple[int, int]:
        return _gpu(handle, "nvmlDeviceGetCudaComputeCapability").compute_capability

    def nvmlDeviceGetMigMode(handle: Any) -> list[int]:
        return list(_gpu(handle, "nvmlDeviceGetMigMode").mig_mode)

    def nvmlDeviceGetMaxMigDeviceCount(handle: Any) -> int:
        gpu = _gpu(handle, "nvmlDeviceGetMaxMigDeviceCount")
        return gpu.max_mig_devices if gpu.mig_mode[0] == 1 else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(handle: Any, index: int) -> SimpleNamespace:
        gpu = _gpu(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
        mig = gpu.mig_devices[index] if 0 <= index < len(gpu.mig_devices) else None
        if mig is None:
            _raise(6)  # NVML_ERROR_NOT_FOUND
        return SimpleNamespace(gpu=mig, index=index)

    def nvmlDeviceGetGpuInstanceId(handle: Any) -> int:
        return _gpu(handle, "nvmlDeviceGetGpuInstanceId").gpu_instance_id

    def nvmlDeviceGetNumGpuCores(handle: Any) -> int:
        return _gpu(handle, "nvmlDeviceGetNumGpuCores").cuda_cores

    def nvmlDeviceGetMaxClockInfo(handle: Any, clock_type: int) -> int:
        assert clock_type == 1, "the probe must ask for NVML_CLOCK_SM"
        return _gpu(handle, "nvmlDeviceGetMaxClockInfo").max_sm_clock_mhz

    for name, value in list(locals().items()):
        if name.startswith(("nvml", "NVML")):
            setattr(module, name, value)
    for name, value in globals().items():
        if name.startswith("NVML_"):
            setattr(module, name, value)
    module.NVML_CLOCK_SM = 1
    module.NVML_DEVICE_MIG_ENABLE = 1
    module.fake_state = state
    module.fake_gpus = gpus  # tests change a GPU's readings through this
    return module
