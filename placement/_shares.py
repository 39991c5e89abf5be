r"""Demand-sized shares of a shared device: what a job reserves there, and whether it fits.

A shared device (``Device.shared``) is offered whole: memory :math:`M_d` and 1000 milli
of compute, run by :math:`S_d` seats (worker processes). Job :math:`j` with estimated
memory :math:`m_j`, predicted time alone on the device :math:`t_{jd}` (the compute term)
and SLO :math:`L_j` reserves there::

    mem_jd   = m_j + overhead(kind_d, vendor_d)                  (the runtime's context)
    milli_jd = clip( max( ceil(1000 · mem_jd / M_d),             (its memory share)
                          c_j                 if the job names a compute share,
                          ceil(1000 · t_jd / L_j)   if it has an SLO,
                          MIN_SHARE_MILLI ),
                     ·, 1000)

so the compute share is at least the memory share: the one number ``milli_jd`` is what
the GPU-sharing policies place (their ``Request.milli``) and what fills a device, and the
memory follows. A job fits device :math:`d` now when a seat is free and::

    Σ_{k on d} mem_kd + mem_jd ≤ M_d − max(0, measured_d − Σ_{k on d} used_k)
    Σ_{k on d} milli_kd + milli_jd ≤ 1000

where ``measured_d`` is the device's memory in use as its vendor reads it and ``used_k``
each of its jobs' own measured use (``ClusterTable.dev_free_memory`` / ``dev_free_milli``):
memory no job accounts for — idle seats' runtimes and warm models, other processes — is
not there to reserve, however little the jobs have allocated yet. A job that fits nowhere now waits
for a reservation to end (``Plan.deferred``), as Kubernetes keeps a pod pending; one that
needs more memory than a device has is unschedulable there (``MemoryFilter``).

The reservation is enforced on the agent: the allocator's cap at ``mem_jd`` where the
vendor has one per process (``apply_job_limit``) and the per-process watchdog.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from anypu.placement._framework import DeviceIndex, PlanContext
from anypu.placement._model import JobRequest

__all__ = [
    "DEFAULT_RUNTIME_OVERHEAD",
    "MIN_SHARE_MILLI",
    "fits_now",
    "share_memory",
    "share_milli",
]

#: The least compute share reserved: a model's kernels still need some of the device.
MIN_SHARE_MILLI = 10

#: Device memory a worker's runtime holds besides the model's tensors, by vendor
#: (``kind/vendor``, else ``kind``): a CUDA context with lazy module loading takes some
#: 300–500 MiB; the NPU runtimes are of the same order. Not measured here (no accelerator
#: was lent to the machines this was built on): a run measured using more raises what
#: the model's later jobs reserve (the scheduler's ``memory_peak``). ``host`` is for jobs
#: on host memory (a simulated device): the allocator's slack above the tensors, which
#: the worker's data limit counts; ``benchmarks.host_overhead`` measured at most 4 MiB
#: over the estimate on 8 models (a 9 MiB estimate with no slack failed its first run).
DEFAULT_RUNTIME_OVERHEAD: Mapping[str, int] = MappingProxyType(
    {
        "gpu/nvidia": 512 << 20,
        "gpu": 512 << 20,
        "npu": 512 << 20,
        "xpu": 512 << 20,
        "host": 64 << 20,
    }
)


def share_memory(job: JobRequest, ctx: PlanContext, idx: DeviceIndex) -> NDArray[np.float64]:
    """``mem_jd`` on devices ``idx``: the job's memory plus the runtime's overhead there
    (0 on a device that is not shared: its slice owns its share)."""
    t = ctx.table
    overhead = ctx.runtime_overhead[idx]
    shared = t.dev_shared[idx]
    return np.where(shared, job.memory_bytes + overhead, 0.0)


def share_milli(
    job: JobRequest, ctx: PlanContext, idx: DeviceIndex, alone_seconds: NDArray[np.float64]
) -> NDArray[np.int64]:
    """``milli_jd`` on devices ``idx`` (0 where not shared); ``alone_seconds`` is the
    compute term there."""
    t = ctx.table
    memory = t.dev_memory[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        by_memory = np.ceil(1000.0 * share_memory(job, ctx, idx) / memory)
    by_memory = np.where(memory > 0, by_memory, 1000.0)
    wanted = np.maximum(by_memory, float(max(job.compute_milli, MIN_SHARE_MILLI)))
    if job.slo_seconds and not job.compute_milli:
        with np.errstate(invalid="ignore"):
            by_slo = np.ceil(1000.0 * np.nan_to_num(alone_seconds, posinf=1e9) / job.slo_seconds)
        wanted = np.maximum(wanted, by_slo)
    milli = np.clip(wanted, MIN_SHARE_MILLI, 1000).astype(np.int64)
    return np.where(t.dev_shared[idx], milli, 0)


def fits_now(
    memory: NDArray[np.float64],
    milli: NDArray[np.int64],
    free_memory: NDArray[np.float64],
    free_milli: NDArray[np.int64],
) -> NDArray[np.bool_]:
    """Per device: does a reservation of ``memory`` and ``milli`` fit what is left? (True
    on a device that is not shared, whose free columns are unbounded.)"""
    result: NDArray[np.bool_] = (memory <= free_memory) & (milli <= free_milli)
    return result
