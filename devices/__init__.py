"""Finding and describing hardware: one small probe per vendor, and slices of devices.

``discover(devices_file)`` is what an agent calls: it runs every available probe in
``PROBES`` (CPU, NVIDIA through NVML, Huawei Ascend through ``npu-smi``) and appends the
simulated devices of a devices file.  Vendor libraries and tools are touched only when a
probe runs, so a CPU-only install needs none of them.  Workers confine themselves to a
slice with ``slice_environment`` (set by the agent), ``apply_slice_limits`` and
``worker_torch_device`` (called in the worker); what those do per vendor lives on the
probe classes, so a new vendor is one ``Probe`` subclass and one entry in ``PROBES``.
"""

from anypu.devices._amd import AmdProbe
from anypu.devices._apple import AppleProbe
from anypu.devices._ascend import ASCEND_TFLOPS, AscendProbe, NpuChip, parse_npu_smi_info
from anypu.devices._cambricon import CambriconProbe
from anypu.devices._cpu import CpuProbe, default_cpu_slicing, measure_cpu_tflops_per_thread
from anypu.devices._discover import (
    PROBES,
    cap_at_host,
    collect_readings,
    discover,
    make_probes,
)
from anypu.devices._enflame import EnflameProbe
from anypu.devices._hygon import HygonProbe
from anypu.devices._iluvatar import IluvatarProbe
from anypu.devices._intel import IntelProbe
from anypu.devices._kunlunxin import KunlunxinProbe
from anypu.devices._metax import MetaxProbe
from anypu.devices._model import DEVICE_KINDS, Device, format_bytes
from anypu.devices._mthreads import MooreThreadsProbe
from anypu.devices._nvidia import (
    NVIDIA_TFLOPS,
    NvidiaProbe,
    mps_pipe_directory,
    mps_running,
    nvidia_tflops,
    start_mps,
)
from anypu.devices._probe import Probe, Reading, physical_index
from anypu.devices._simulated import (
    SimulatedDevices,
    load_devices_file,
    parse_devices,
    parse_size,
)
from anypu.devices._slices import (
    apply_job_limit,
    apply_slice_limits,
    job_environment,
    slice_environment,
    vendor_of,
    with_shares,
    with_slices,
    worker_torch_device,
)
from anypu.devices._tool import ToolDevice, ToolProbe

__all__ = [
    "ASCEND_TFLOPS",
    "DEVICE_KINDS",
    "NVIDIA_TFLOPS",
    "PROBES",
    "AmdProbe",
    "AppleProbe",
    "AscendProbe",
    "CambriconProbe",
    "CpuProbe",
    "Device",
    "EnflameProbe",
    "HygonProbe",
    "IluvatarProbe",
    "IntelProbe",
    "KunlunxinProbe",
    "MetaxProbe",
    "MooreThreadsProbe",
    "NpuChip",
    "NvidiaProbe",
    "Probe",
    "Reading",
    "SimulatedDevices",
    "ToolDevice",
    "ToolProbe",
    "apply_job_limit",
    "apply_slice_limits",
    "cap_at_host",
    "collect_readings",
    "default_cpu_slicing",
    "discover",
    "format_bytes",
    "job_environment",
    "load_devices_file",
    "make_probes",
    "measure_cpu_tflops_per_thread",
    "mps_pipe_directory",
    "mps_running",
    "nvidia_tflops",
    "parse_devices",
    "parse_npu_smi_info",
    "parse_size",
    "physical_index",
    "slice_environment",
    "start_mps",
    "vendor_of",
    "with_shares",
    "with_slices",
    "worker_torch_device",
]
