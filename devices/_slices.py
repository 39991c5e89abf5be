"""Slices: how one worker process is confined to its share of a device.

The agent starts one worker per slice with ``slice_environment(device, i)`` merged into
its environment; the worker, right after importing torch, calls
``apply_slice_limits(device)`` and moves tensors to ``worker_torch_device(device)``.

What is enforced, per vendor:

- every device: ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` and
  ``torch.set_num_threads`` from the slice's threads (a forward's tail latency explodes
  when threads oversubscribe cores);
- NVIDIA: ``CUDA_VISIBLE_DEVICES`` narrowed to the one physical GPU (NVML index, with
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA numbers GPUs the way NVML does), a memory cap
  of ``1/slices`` through ``torch.cuda.set_per_process_memory_fraction`` and, with more
  than one slice, ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (honoured when an MPS daemon runs);
- Ascend: ``ASCEND_RT_VISIBLE_DEVICES`` narrowed to the logical device;
- CPU and simulated devices: GPUs are hidden (``CUDA_VISIBLE_DEVICES=""``) so a CPU job
  never initialises CUDA and takes GPU memory that another slice owns.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from anypu.devices._model import Device

__all__ = [
    "apply_slice_limits",
    "is_nvidia_gpu",
    "physical_index",
    "slice_environment",
    "with_slices",
    "worker_torch_device",
]

_SHARING = {"cpu": "threads", "gpu": "mps"}


def is_nvidia_gpu(device: Device) -> bool:
    return device.kind == "gpu" and device.vendor == "nvidia" and not device.simulated


def _is_ascend_npu(device: Device) -> bool:
    return device.kind == "npu" and device.vendor == "huawei" and not device.simulated


def physical_index(device: Device) -> int:
    """The index the vendor runtime knows the device by (``extra["index"]``, else ``cuda:N``)."""
    if "index" in device.extra:
        return int(device.extra["index"])
    _, _, number = device.torch_device.partition(":")
    if not number.isdigit():
        raise ValueError(
            f"device {device.device_id} ({device.torch_device}) has no physical index;"
            " probes set extra['index'] for accelerators"
        )
    return int(number)


def with_slices(device: Device, slices: int, threads: int | None = None) -> Device:
    """The same device cut into ``slices`` (e.g. from an agent's ``--gpu-slices`` flag)."""
    if slices < 1:
        raise ValueError(f"slices must be at least 1, got {slices}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    sharing = "exclusive" if slices == 1 else _SHARING.get(device.kind, "time")
    if device.simulated and slices > 1:
        sharing = "time"
    return dataclasses.replace(
        device, slices=slices, threads=threads or device.threads, sharing=sharing
    )


def slice_environment(device: Device, slice_index: int) -> dict[str, str]:
    """Environment variables for the worker that runs slice ``slice_index`` of ``device``."""
    if not 0 <= slice_index < device.slices:
        raise ValueError(
            f"slice {slice_index} does not exist on {device.device_id}, which has"
            f" {device.slices} slice(s) (valid: 0..{device.slices - 1})"
        )
    threads = str(device.threads)
    env = {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "ANYPU_DEVICE_ID": device.device_id,
        "ANYPU_SLICE_INDEX": str(slice_index),
        "ANYPU_SLICES": str(device.slices),
        "ANYPU_TORCH_DEVICE": worker_torch_device(device),
    }
    if is_nvidia_gpu(device):
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = str(physical_index(device))
        env["ANYPU_MEMORY_FRACTION"] = repr(1.0 / device.slices)
        if device.slices > 1:
            env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(max(1, 100 // device.slices))
    elif _is_ascend_npu(device):
        env["ASCEND_RT_VISIBLE_DEVICES"] = str(physical_index(device))
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def worker_torch_device(device: Device) -> str:
    """The torch device inside the slice's worker, whose visible devices hold only this one."""
    if is_nvidia_gpu(device):
        return "cuda:0"
    if _is_ascend_npu(device):
        return "npu:0"
    return device.torch_device


def apply_slice_limits(
    device: Device, environ: Mapping[str, str] | None = None
) -> dict[str, float | int | None]:
    """Apply the slice's limits inside the worker; call after ``import torch``.

    Sets torch's intra-op threads and, for an NVIDIA slice when CUDA is available, the
    per-process memory fraction (``ANYPU_MEMORY_FRACTION`` if the agent set it, else
    ``1/slices``).  Returns what was applied, for the worker's log.
    """
    import torch

    environ = os.environ if environ is None else environ
    torch.set_num_threads(device.threads)
    fraction: float | None = None
    if is_nvidia_gpu(device) and torch.cuda.is_available():
        fraction = float(environ.get("ANYPU_MEMORY_FRACTION", 1.0 / device.slices))
        if fraction < 1.0:
            # A worker started with slice_environment sees only its GPU, as cuda:0.
            narrowed = environ.get("CUDA_VISIBLE_DEVICES") == str(physical_index(device))
            target = worker_torch_device(device) if narrowed else device.torch_device
            torch.cuda.set_per_process_memory_fraction(fraction, device=torch.device(target))
    return {"threads": device.threads, "memory_fraction": fraction}
