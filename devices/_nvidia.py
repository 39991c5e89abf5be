"""NVIDIA GPUs through NVML (``pynvml``, shipped by the ``nvidia-ml-py`` distribution).

``pynvml`` is imported inside methods only, so a machine without it (or without a
driver) simply has no NVIDIA devices.  NVML indices follow PCI bus order, which is why
worker environments set ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (``NvidiaProbe.slice_environment``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from types import ModuleType
from typing import Any, ClassVar

from anypu.devices._model import Device
from anypu.devices._probe import Probe, Reading, allocator_cap, physical_index, utilisation_of
from anypu.errors import ConfigError

__all__ = [
    "NVIDIA_TFLOPS",
    "NvidiaProbe",
    "mps_pipe_directory",
    "mps_running",
    "nvidia_tflops",
    "start_mps",
]

log = logging.getLogger(__name__)

#: ``(name pattern, fp32 TFLOPS, dense fp16 tensor TFLOPS)``; the first match wins, so
#: specific variants precede the family.  ``Device.tflops`` takes the **fp32** figure
#: (CUDA cores, no tensor cores, no sparsity): exported models run in fp32 unless the
#: user casts them, PyTorch does not use TF32 for fp32 matmuls by default, and the CPU
#: figure it is compared against is measured in fp32.  The fp16 figure (dense, fp32
#: accumulate) goes to ``extra["tflops_fp16"]`` for half-precision models.
#: Sources: NVIDIA's public data sheets — "NVIDIA H100 Tensor Core GPU" (SXM, PCIe, NVL),
#: "NVIDIA H200 Tensor Core GPU", "NVIDIA A100 Tensor Core GPU", "NVIDIA A10/A30/A40",
#: "NVIDIA L4", "NVIDIA L40/L40S", "NVIDIA T4", "NVIDIA V100 Tensor Core GPU", and the
#: "NVIDIA Ada GPU Architecture" / "NVIDIA Ampere GA102 GPU Architecture" white papers for
#: the GeForce cards.  Data sheets quote tensor figures "with sparsity"; these are halved.
NVIDIA_TFLOPS: tuple[tuple[str, float, float], ...] = (
    (r"\bGH200\b", 67.0, 989.5),
    (r"\bH200 NVL\b", 60.0, 835.5),
    (r"\bH200\b", 67.0, 989.5),
    (r"\bH100 PCIe\b", 51.0, 756.0),
    (r"\bH100 NVL\b", 60.0, 835.5),
    (r"\bH100\b", 67.0, 989.5),
    (r"\bA100\b", 19.5, 312.0),
    (r"\bA40\b", 37.4, 149.7),
    (r"\bA30\b", 10.3, 165.0),
    (r"\bA10\b", 31.2, 125.0),
    (r"\bL40S\b", 91.6, 362.0),
    (r"\bL40\b", 90.5, 181.0),
    (r"\bL4\b", 30.3, 121.0),
    (r"\bT4\b", 8.1, 65.0),
    (r"\bV100S\b", 16.4, 130.0),
    (r"\bV100-PCIE\b", 14.0, 112.0),
    (r"\bV100\b", 15.7, 125.0),
    (r"\bRTX 4090\b", 82.6, 165.2),
    (r"\bRTX 3090\b", 35.6, 71.0),
)

# NVML's constants, restated so callers need not import pynvml to read ``extra``.
_NVML_CLOCK_SM = 1
_NVML_DEVICE_MIG_ENABLE = 1


def nvidia_tflops(name: str) -> tuple[float, float] | None:
    """``(fp32, fp16)`` TFLOPS of a GPU named like NVML names it, or None if unknown."""
    for pattern, fp32, fp16 in NVIDIA_TFLOPS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return fp32, fp16
    return None


def _text(value: Any) -> str:
    # pynvml before 11.5 returned bytes for names and versions.
    return value.decode() if isinstance(value, bytes) else str(value)


def mps_pipe_directory() -> str:
    """Where MPS clients find the control daemon: ``CUDA_MPS_PIPE_DIRECTORY``, else the
    driver's default ``/tmp/nvidia-mps``."""
    return os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps"


def mps_running(pipe_directory: str | None = None) -> bool:
    """Whether an MPS control daemon serves this machine: its ``control`` pipe exists."""
    return os.path.exists(os.path.join(pipe_directory or mps_pipe_directory(), "control"))


def start_mps(binary: str = "nvidia-cuda-mps-control", timeout: float = 30.0) -> str:
    """Start an MPS control daemon (``nvidia-cuda-mps-control -d``) unless one runs; what
    happened, for the agent's log. Raises ``ConfigError`` saying why it could not."""
    import shutil
    import subprocess

    if mps_running():
        return f"MPS control daemon already running (pipes in {mps_pipe_directory()})"
    path = shutil.which(binary)
    if path is None:
        raise ConfigError(
            f"--start-mps: {binary} is not on PATH; install the NVIDIA driver's MPS tools"
            " or start the daemon yourself (nvidia-cuda-mps-control -d)"
        )
    try:
        result = subprocess.run([path, "-d"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"--start-mps: {binary} -d could not run: {exc}") from None
    if result.returncode != 0:
        raise ConfigError(
            f"--start-mps: {binary} -d failed ({result.returncode}):"
            f" {(result.stderr or result.stdout).strip()[:300]}"
        )
    return f"started the MPS control daemon (pipes in {mps_pipe_directory()})"


def _visible_as(device: Device) -> str:
    """What a worker's ``CUDA_VISIBLE_DEVICES`` names ``device`` by: a MIG device by its
    ``MIG-…`` UUID (CUDA knows no index for it), a GPU by its NVML index."""
    if "mig_index" in device.extra and device.extra.get("uuid", "").startswith("MIG-"):
        return device.extra["uuid"]
    return str(physical_index(device))


def _visible_selector() -> list[str] | None:
    """The agent's own ``CUDA_VISIBLE_DEVICES`` entries, or None when it is unset."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


class NvidiaProbe(Probe):
    """Every NVIDIA GPU NVML reports, as ``gpu<N>`` with torch device ``cuda:<N>``.

    When the agent itself runs with ``CUDA_VISIBLE_DEVICES`` set (integers are taken as
    NVML/PCI indices, ``GPU-…`` as UUIDs), only those GPUs are offered, in that order,
    so ``cuda:<N>`` means the same GPU to the agent's torch.  ``extra["index"]`` keeps
    the NVML index that worker environments pin.

    ``slices`` > 1 shares each GPU between that many workers (memory fraction + MPS
    thread percentage, see ``slice_environment``).

    A worker on a slice sees only its GPU: ``CUDA_VISIBLE_DEVICES`` is narrowed to the
    NVML index (with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA numbers GPUs the way NVML
    does) and the worker's torch device is ``cuda:0``; its memory is capped at
    ``1/slices`` through ``torch.cuda.set_per_process_memory_fraction`` and, with more
    than one slice, ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` is set (honoured when an MPS
    daemon runs).
    """

    name = "nvidia"
    kind: ClassVar[str] = "gpu"
    vendor: ClassVar[str] = "nvidia"
    shared_sharing: ClassVar[str] = "mps"
    quick_readings: ClassVar[bool] = True  # NVML calls, a few microseconds each

    @classmethod
    def slice_environment(cls, device: Device, slice_index: int) -> dict[str, str]:
        env = {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": _visible_as(device),
            # A seat of a shared GPU is capped per job (apply_job_limit), not per worker.
            "ANYPU_MEMORY_FRACTION": repr(1.0 if device.shared else 1.0 / device.slices),
        }
        if device.slices > 1 and not device.shared:
            env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(max(1, 100 // device.slices))
        return env

    @classmethod
    def worker_torch_device(cls, device: Device) -> str:
        return "cuda:0"

    @classmethod
    def job_environment(cls, device: Device, compute_milli: int) -> dict[str, str]:
        """On a shared GPU that an MPS daemon serves: the job's compute share as the
        worker's ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (MPS reads it when the process
        makes its CUDA context, so it takes a fresh worker to change)."""
        if not device.shared or device.extra.get("mps") != "running" or compute_milli <= 0:
            return {}
        return {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(min(100, max(1, -(-compute_milli // 10))))}

    @classmethod
    def sharing(cls, device: Device, slices: int) -> str:
        """Slices of a GPU share it through MPS when a control daemon runs (each worker
        then gets ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` of the SMs), else by time."""
        if slices == 1:
            return "exclusive"
        return "mps" if device.extra.get("mps") == "running" else "time"

    @classmethod
    def apply_limits(cls, device: Device, environ: Mapping[str, str]) -> float | None:
        """The per-process memory fraction (``ANYPU_MEMORY_FRACTION``, else ``1/slices``)."""
        import torch

        if not torch.cuda.is_available():
            return None
        fraction = float(environ.get("ANYPU_MEMORY_FRACTION", 1.0 / device.slices))
        if fraction < 1.0:
            # A worker started with slice_environment sees only its GPU, as cuda:0.
            narrowed = environ.get("CUDA_VISIBLE_DEVICES") == _visible_as(device)
            target = cls.worker_torch_device(device) if narrowed else device.torch_device
            torch.cuda.set_per_process_memory_fraction(fraction, device=torch.device(target))
        return fraction

    @classmethod
    def apply_job_limit(cls, device: Device, memory_bytes: int) -> str:
        """The caching allocator's cap at what the seat already holds (its warm models'
        tensors) plus the job's reservation, set anew before each job
        (``set_per_process_memory_fraction`` may change between allocations). It refuses
        what the job itself allocates past its share; the CUDA context and other
        libraries' allocations are the NVML watchdog's to catch."""
        return allocator_cap("cuda", device, memory_bytes)

    def __init__(self, *, slices: int = 1) -> None:
        super().__init__()
        if slices < 1:
            raise ValueError(f"NvidiaProbe slices must be at least 1, got {slices}")
        self._slices = slices
        self._nvml: ModuleType | None = None
        self._mig_selected: set[str] | None = None
        # device_id -> (NVML index, MIG device index or None), filled by probe() so the
        # readings' keys match.
        self._ids: dict[str, tuple[int, int | None]] = {}

    def _init(self) -> ModuleType:
        """NVML, initialised once per probe; raises ImportError or NVMLError."""
        if self._nvml is None:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        return self._nvml

    def available(self) -> bool:
        try:
            nvml = self._init()
            count = len(self._selected_indices(nvml, int(nvml.nvmlDeviceGetCount())))
        except ImportError:
            self.unavailable_reason = "pynvml is not installed (pip install nvidia-ml-py)"
            return False
        except Exception as exc:  # NVMLError subclasses, or OSError from the loader
            self.unavailable_reason = f"NVML could not start: {exc}"
            return False
        if count == 0:
            self.unavailable_reason = "NVML reports no GPUs (or CUDA_VISIBLE_DEVICES hides them)"
            return False
        self.unavailable_reason = ""
        return True

    def _selected_indices(self, nvml: ModuleType, count: int) -> list[int]:
        """The GPUs the agent's own ``CUDA_VISIBLE_DEVICES`` lets it see (indices, ``GPU-…``
        UUIDs, or ``MIG-…`` UUIDs, which select their GPU and then only those MIG
        devices of it, ``self._mig_selected``)."""
        selector = _visible_selector()
        self._mig_selected = None
        if selector is None:
            return list(range(count))
        uuids: dict[str, int] = {}
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuids[_text(nvml.nvmlDeviceGetUUID(handle))] = index
            except nvml.NVMLError:
                continue
            if any(entry.startswith("MIG-") for entry in selector):
                for mig in self._mig_handles(handle):
                    uuids[_text(nvml.nvmlDeviceGetUUID(mig))] = index
        chosen: list[int] = []
        for entry in selector:
            picked = int(entry) if entry.isdigit() else uuids.get(entry)
            if picked is None or not 0 <= picked < count:
                # CUDA stops at the first invalid entry; matching that keeps cuda:N aligned.
                break
            if picked not in chosen:
                chosen.append(picked)
            if entry.startswith("MIG-"):
                self._mig_selected = (self._mig_selected or set()) | {entry}
        return chosen

    def _mig_handles(self, handle: Any) -> list[Any]:
        """The MIG devices of a GPU in MIG mode (none otherwise)."""
        assert self._nvml is not None
        nvml = self._nvml
        found = []
        for mig_index in range(
            int(self._optional(nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0)
        ):
            try:
                found.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, mig_index))
            except nvml.NVMLError:
                continue
        return found

    def _optional(self, call: Any, *args: Any) -> Any:
        """A query some GPUs or drivers do not support; None instead of an error."""
        assert self._nvml is not None
        try:
            return call(*args)
        except self._nvml.NVMLError as exc:
            log.debug("NVML %s unsupported: %s", getattr(call, "__name__", call), exc)
            return None

    def probe(self) -> list[Device]:
        nvml = self._init()
        driver = self._optional(nvml.nvmlSystemGetDriverVersion)
        devices: list[Device] = []
        self._ids = {}
        for ordinal, index in enumerate(self._selected_indices(nvml, nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(nvml.nvmlDeviceGetName(handle)).strip()
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            extra = {"index": str(index), "memory_free_bytes": str(int(memory.free))}
            uuid = self._optional(nvml.nvmlDeviceGetUUID, handle)
            if uuid is not None:
                extra["uuid"] = _text(uuid)
            if driver is not None:
                extra["driver_version"] = _text(driver)
            capability = self._optional(nvml.nvmlDeviceGetCudaComputeCapability, handle)
            if capability is not None:
                extra["compute_capability"] = f"{capability[0]}.{capability[1]}"
            extra["mps"] = "running" if mps_running() else "not running"
            mig = self._optional(nvml.nvmlDeviceGetMigMode, handle)
            if mig is not None:
                extra["mig_mode"] = "enabled" if mig[0] == _NVML_DEVICE_MIG_ENABLE else "disabled"
            tflops = self._tflops(name, handle, extra)
            device = Device(
                device_id=f"gpu{ordinal}",
                kind="gpu",
                vendor="nvidia",
                model=name.removeprefix("NVIDIA ").strip() or name,
                memory_bytes=int(memory.total),
                tflops=tflops,
                torch_device=f"cuda:{ordinal}",
                slices=self._slices,
                threads=1,
                sharing="exclusive",
                extra=extra,
            )
            device = replace(device, sharing=self.sharing(device, self._slices))
            if extra.get("mig_mode") == "enabled":
                devices += self._mig_devices(device, handle, index)
                continue
            self._ids[device.device_id] = (index, None)
            devices.append(device)
        return devices

    def _mig_devices(self, parent: Device, handle: Any, index: int) -> list[Device]:
        """A GPU in MIG mode offers its MIG devices, each a device of its own (the GPU
        itself runs no CUDA context then): memory as NVML reads it, compute the share of
        the GPU's compute slices its profile names (``3g.20gb``: 3 of 7)."""
        assert self._nvml is not None
        nvml = self._nvml
        count = self._optional(nvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0
        found: list[Device] = []
        instances: dict[object, str] = {}  # GPU instance id -> the MIG device offered for it
        for mig_index in range(int(count)):
            try:  # indices without a MIG device raise NOT_FOUND: they are simply skipped
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, mig_index)
                name = _text(nvml.nvmlDeviceGetName(mig)).strip()
                memory = nvml.nvmlDeviceGetMemoryInfo(mig)
                uuid = _text(nvml.nvmlDeviceGetUUID(mig))
            except nvml.NVMLError as exc:
                log.debug("MIG device %d of GPU %d: %s", mig_index, index, exc)
                continue
            if self._mig_selected is not None and uuid not in self._mig_selected:
                continue  # the agent's CUDA_VISIBLE_DEVICES names other MIG devices
            # "3g.20gb" is a whole GPU instance; "1c.3g.20gb" one compute instance of it,
            # 1 of its 3 compute slices, sharing its memory with its sibling instances.
            profile = re.search(r"(?:(\d+)c\.)?(\d+)g\.\d+gb", name)
            slices = 4 if re.search(r"\bA30\b", name) else 7
            compute = int(profile.group(1) or profile.group(2)) if profile else 1
            share = min(1.0, compute / slices)
            get_instance = getattr(nvml, "nvmlDeviceGetGpuInstanceId", None)
            instance = self._optional(get_instance, mig) if get_instance else None
            if profile and profile.group(1) and instance is not None:
                if instance in instances:  # its memory is offered once, with the first
                    log.info(
                        "MIG device %s shares GPU instance %s's memory with %s: not offered",
                        uuid,
                        instance,
                        instances[instance],
                    )
                    continue
                instances[instance] = uuid
            extra = {
                **parent.extra,
                "uuid": uuid,
                "mig_index": str(mig_index),
                "mig_parent": parent.device_id,
                "mig_profile": profile.group(0) if profile else "unknown",
                "memory_free_bytes": str(int(memory.free)),
            }
            if "tflops_fp16" in parent.extra:
                extra["tflops_fp16"] = f"{float(parent.extra['tflops_fp16']) * share:.4g}"
            device_id = f"{parent.device_id}-mig{mig_index}"
            self._ids[device_id] = (index, mig_index)
            found.append(
                Device(
                    device_id=device_id,
                    kind="gpu",
                    vendor="nvidia",
                    model=name.removeprefix("NVIDIA ").strip() or name,
                    memory_bytes=int(memory.total),
                    tflops=round(parent.tflops * share, 4),
                    torch_device=parent.torch_device,
                    slices=self._slices,
                    threads=1,
                    sharing=parent.sharing,
                    extra=extra,
                )
            )
        if not found:
            log.warning(
                "GPU %d (%s) is in MIG mode with no MIG device created: it offers nothing"
                " until an operator creates instances (nvidia-smi mig -cgi … -C)",
                index,
                parent.model,
            )
        return found

    def _tflops(self, name: str, handle: Any, extra: dict[str, str]) -> float:
        """fp32 TFLOPS from the table, else CUDA cores × 2 FLOP × max SM clock."""
        extra["tflops_precision"] = "fp32"
        known = nvidia_tflops(name)
        if known is not None:
            extra["tflops_source"] = "table"
            extra["tflops_fp16"] = f"{known[1]:g}"
            return known[0]
        assert self._nvml is not None
        # Both queries are newer than some drivers and bindings; absence is not an error.
        get_cores = getattr(self._nvml, "nvmlDeviceGetNumGpuCores", None)
        get_clock = getattr(self._nvml, "nvmlDeviceGetMaxClockInfo", None)
        cores = self._optional(get_cores, handle) if get_cores else None
        clock_mhz = self._optional(get_clock, handle, _NVML_CLOCK_SM) if get_clock else None
        if cores and clock_mhz:
            extra["tflops_source"] = "cores×clock"
            return round(int(cores) * 2 * int(clock_mhz) * 1e6 / 1e12, 3)
        # An unknown GPU with neither query supported: a deliberately low figure, marked
        # so the dashboard shows it is a guess; the measured run times correct placement.
        extra["tflops_source"] = "default"
        return 1.0

    def utilisation(self) -> dict[str, float]:
        """NVML's ``gpu`` utilisation rate (fraction of time a kernel ran) per device."""
        return utilisation_of(self.readings())

    def readings(self) -> dict[str, Reading]:
        """NVML's utilisation, memory used, and memory per compute process, per device."""
        if not self._ids:
            return {}
        try:
            nvml = self._init()
        except Exception:  # the driver went away; report nothing rather than fail a heartbeat
            return {}
        found: dict[str, Reading] = {}
        for device_id, (index, mig_index) in self._ids.items():
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                if mig_index is not None:
                    handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, mig_index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError:
                continue
            # A MIG device has no utilisation of its own in NVML (NOT_SUPPORTED).
            rates = self._optional(nvml.nvmlDeviceGetUtilizationRates, handle)
            processes: dict[int, int] = {}
            try:
                for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if process.usedGpuMemory is not None:  # None: NVML may not say (WDDM)
                        processes[int(process.pid)] = int(process.usedGpuMemory)
            except nvml.NVMLError:
                pass
            found[device_id] = Reading(
                utilisation=None if rates is None else min(1.0, max(0.0, rates.gpu / 100.0)),
                memory_used_bytes=int(memory.used),
                process_memory=processes,
            )
        return found

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None
