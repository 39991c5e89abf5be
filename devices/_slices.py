"""Slices: how one worker process is confined to its share of a device.

The agent starts one worker per slice with ``slice_environment(device, i)`` merged into
its environment; the worker, right after importing torch, calls
``apply_slice_limits(device)`` and moves tensors to ``worker_torch_device(device)``.

Every device's worker gets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/
``OPENBLAS_NUM_THREADS`` and ``torch.set_num_threads`` from the slice's threads (a
forward's tail latency explodes when threads oversubscribe cores).  The rest is the
vendor's, found by ``vendor_of(device)`` in the probe registry: the probe class whose
``describes(device)`` is true (NVIDIA: ``CUDA_VISIBLE_DEVICES`` narrowed, a memory
fraction, an MPS thread share; Ascend: ``ASCEND_RT_VISIBLE_DEVICES`` narrowed).  A
device no registered class describes (simulated devices, a kind with no probe) gets
``Probe``'s defaults: accelerators hidden, its own torch device, no limits.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping

from anypu.devices._discover import PROBES
from anypu.devices._model import Device
from anypu.devices._probe import Probe

__all__ = [
    "apply_job_limit",
    "apply_slice_limits",
    "job_environment",
    "slice_environment",
    "vendor_of",
    "with_shares",
    "with_slices",
    "worker_torch_device",
]


def vendor_of(device: Device, probes: Iterable[type[Probe]] | None = None) -> type[Probe]:
    """The probe class in ``probes`` (default: the ``PROBES`` registry) that describes
    ``device``, else ``Probe`` (the defaults)."""
    for probe in PROBES if probes is None else probes:
        if probe.describes(device):
            return probe
    return Probe


def with_slices(device: Device, slices: int, threads: int | None = None) -> Device:
    """The same device cut into ``slices`` (e.g. from an agent's ``--gpu-slices`` flag)."""
    if slices < 1:
        raise ValueError(f"slices must be at least 1, got {slices}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return dataclasses.replace(
        device,
        slices=slices,
        threads=threads or device.threads,
        sharing=vendor_of(device).sharing(device, slices),
    )


def with_shares(device: Device, seats: int) -> Device:
    """The same device offered whole (``Device.shared``): jobs reserve memory and compute
    of it sized to their demand, and up to ``seats`` of them run on it at once."""
    if seats < 1:
        raise ValueError(f"seats must be at least 1, got {seats}")
    return dataclasses.replace(
        device, slices=seats, shared=True, sharing=vendor_of(device).sharing(device, seats)
    )


def apply_job_limit(device: Device, memory_bytes: int) -> str:
    """Cap the next job's memory on a shared device at its reservation, inside the worker
    (torch imported), by the vendor's means; what was applied, for the worker's log
    (``""``: the vendor has no such cap, and the agent's watchdog is the guard)."""
    if not device.shared or memory_bytes <= 0 or device.memory_bytes <= 0:
        return ""
    return vendor_of(device).apply_job_limit(device, memory_bytes)


def slice_environment(device: Device, slice_index: int) -> dict[str, str]:
    """Environment variables for the worker that runs slice ``slice_index`` of ``device``."""
    if not 0 <= slice_index < device.slices:
        raise ValueError(
            f"slice {slice_index} does not exist on {device.device_id}, which has"
            f" {device.slices} slice(s) (valid: 0..{device.slices - 1})"
        )
    threads = str(device.threads)
    vendor = vendor_of(device)
    return {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "ANYPU_DEVICE_ID": device.device_id,
        "ANYPU_SLICE_INDEX": str(slice_index),
        "ANYPU_SLICES": str(device.slices),
        "ANYPU_TORCH_DEVICE": vendor.worker_torch_device(device),
        **vendor.slice_environment(device, slice_index),
    }


def job_environment(device: Device, compute_milli: int) -> dict[str, str]:
    """What a seat's worker is started with for a job's compute share (``Probe``)."""
    return vendor_of(device).job_environment(device, compute_milli)


def worker_torch_device(device: Device) -> str:
    """The torch device inside the slice's worker, whose visible devices hold only this one."""
    return vendor_of(device).worker_torch_device(device)


def apply_slice_limits(
    device: Device, environ: Mapping[str, str] | None = None
) -> dict[str, float | int | None]:
    """Apply the slice's limits inside the worker; call after ``import torch``.

    Sets torch's intra-op threads, then the vendor's limits (for an NVIDIA slice when
    CUDA is available, the per-process memory fraction: ``ANYPU_MEMORY_FRACTION`` if the
    agent set it, else ``1/slices``).  Returns what was applied, for the worker's log.
    """
    import torch

    environ = os.environ if environ is None else environ
    torch.set_num_threads(device.threads)
    fraction = vendor_of(device).apply_limits(device, environ)
    return {"threads": device.threads, "memory_fraction": fraction}
