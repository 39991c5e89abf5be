"""The host CPU as one device, with its throughput measured rather than looked up.

CPU model names say little about throughput (clock, SIMD width, turbo and noisy
neighbours all matter), so the probe times a short fp32 matmul on one thread and scales
it by the threads it offers.  Cores come from the affinity mask and the cgroup CPU quota,
memory from ``/proc/meminfo`` capped by the cgroup memory limit, because a container
sees the host's numbers in ``/proc`` but may use only its quota.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from anypu.devices._model import Device
from anypu.devices._probe import Probe, Reading

__all__ = [
    "CpuProbe",
    "default_cpu_slicing",
    "measure_cpu_tflops_per_thread",
    "read_cgroup_cpu_quota",
    "read_cgroup_memory_limit",
    "usable_cores",
]

# Matmul size for the benchmark: big enough that call overhead is a few percent, small
# enough that one call takes well under a millisecond on a modern core.
_BENCH_N = 256
_BENCH_BUDGET_S = 0.08
_BENCH_MAX_REPS = 200

# cgroup v1 reports "no limit" as a huge page-aligned number rather than a keyword.
_CGROUP_V1_UNLIMITED = 1 << 60

_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd", "0x41": "arm", "0x48": "hisilicon"}


def read_cgroup_cpu_quota(cgroup_root: str | Path = "/sys/fs/cgroup") -> float | None:
    """CPUs the cgroup may use (``1.5`` for a 150 ms / 100 ms quota), or None if unlimited."""
    root = Path(cgroup_root)
    v2 = root / "cpu.max"
    try:
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            if quota == "max":
                return None
            return int(quota) / int(period or "100000")
        v1_quota = root / "cpu" / "cpu.cfs_quota_us"
        v1_period = root / "cpu" / "cpu.cfs_period_us"
        if v1_quota.is_file() and v1_period.is_file():
            quota_us = int(v1_quota.read_text().strip())
            if quota_us <= 0:
                return None
            return quota_us / int(v1_period.read_text().strip())
    except (OSError, ValueError):
        return None
    return None


def read_cgroup_memory_limit(cgroup_root: str | Path = "/sys/fs/cgroup") -> int | None:
    """Bytes the cgroup may use, or None if unlimited or unknown."""
    root = Path(cgroup_root)
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max":
            return None
        try:
            limit = int(text)
        except ValueError:
            return None
        return None if limit >= _CGROUP_V1_UNLIMITED else limit
    return None


def usable_cores(affinity_count: int, cpu_quota: float | None) -> int:
    """Whole cores a worker can keep busy: the affinity mask capped by the quota.

    A fractional quota rounds down (a 1.5-CPU quota cannot run two busy threads without
    throttling) but never below one.
    """
    cores = max(1, affinity_count)
    if cpu_quota is not None:
        cores = min(cores, max(1, math.floor(cpu_quota)))
    return cores


def default_cpu_slicing(cores: int) -> tuple[int, int]:
    """``(slices, threads per slice)`` offered by default on a machine with ``cores``.

    - ≤ 2 cores: one slice of one thread. The agent, the OS and the worker share the
      machine, and a torch forward's p99 was measured to grow 15–27× when its two
      threads compete with anything else, while one thread stays steady.
    - more cores: one core is left to the agent and the OS; the rest is cut into slices
      of 1 thread (< 6 usable cores), 2 threads (< 16) or 4 threads, because the models
      anypu serves are small-batch inference, where parallel workers raise throughput
      more than extra intra-op threads do.
    """
    if cores <= 2:
        return 1, 1
    usable = cores - 1
    threads = 1 if usable < 6 else 2 if usable < 16 else 4
    return usable // threads, threads


@functools.lru_cache(maxsize=1)
def measure_cpu_tflops_per_thread() -> float:
    """fp32 matmul throughput of one thread, in TFLOPS; measured once per process.

    Runs for at most ~0.1 s.  Uses torch with one intra-op thread (restoring the
    previous setting), so the figure scales with the threads a slice is given.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(_BENCH_N, _BENCH_N, generator=gen)
        b = torch.randn(_BENCH_N, _BENCH_N, generator=gen)
        out = torch.empty(_BENCH_N, _BENCH_N)
        for _ in range(2):  # first calls pay for page faults and kernel selection
            torch.mm(a, b, out=out)
        timings: list[float] = []
        deadline = time.perf_counter() + _BENCH_BUDGET_S
        while len(timings) < _BENCH_MAX_REPS and time.perf_counter() < deadline:
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            timings.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    timings.sort()
    median = timings[len(timings) // 2]
    return 2 * _BENCH_N**3 / median / 1e12


def _parse_key_values(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in values:
            values[key.strip()] = value.strip()
    return values


def _affinity() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


class CpuProbe(Probe):
    """The host CPU as device ``cpu0`` (torch device ``cpu``).

    ``slices``/``threads`` override :func:`default_cpu_slicing`.  ``proc_root``,
    ``cgroup_root``, ``affinity`` and ``benchmark`` exist so tests can point the probe
    at recorded files; the defaults read this machine.

    ``tflops`` is the measured per-thread figure × slices × threads, i.e. what the
    offered slices can deliver together; each slice gets ``threads`` threads' worth.
    Slices share the cores by thread count (``OMP_NUM_THREADS`` and friends, which every
    worker gets); accelerators stay hidden from a CPU worker.
    """

    name = "cpu"
    kind: ClassVar[str] = "cpu"
    shared_sharing: ClassVar[str] = "threads"

    def __init__(
        self,
        *,
        slices: int | None = None,
        threads: int | None = None,
        proc_root: str | Path = "/proc",
        cgroup_root: str | Path = "/sys/fs/cgroup",
        affinity: Callable[[], set[int]] = _affinity,
        benchmark: Callable[[], float] = measure_cpu_tflops_per_thread,
    ) -> None:
        super().__init__()
        for label, value in (("slices", slices), ("threads", threads)):
            if value is not None and value < 1:
                raise ValueError(f"CpuProbe {label} must be at least 1, got {value}")
        self._slices = slices
        self._threads = threads
        self._proc = Path(proc_root)
        self._cgroup = Path(cgroup_root)
        self._affinity = affinity
        self._benchmark = benchmark
        self._last_stat: tuple[int, int] | None = None

    def available(self) -> bool:
        return True

    def cores(self) -> int:
        return usable_cores(len(self._affinity()), read_cgroup_cpu_quota(self._cgroup))

    def memory_bytes(self) -> int:
        total: int | None = None
        try:
            meminfo = _parse_key_values((self._proc / "meminfo").read_text())
            total = int(meminfo["MemTotal"].split()[0]) * 1024
        except (OSError, KeyError, ValueError, IndexError):
            if hasattr(os, "sysconf"):
                total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        limit = read_cgroup_memory_limit(self._cgroup)
        candidates = [v for v in (total, limit) if v]
        return min(candidates) if candidates else 0

    def _model_and_vendor(self) -> tuple[str, str]:
        try:
            info = _parse_key_values((self._proc / "cpuinfo").read_text())
        except OSError:
            info = {}
        model = info.get("model name") or info.get("Hardware") or platform.processor()
        vendor_key = info.get("vendor_id") or info.get("CPU implementer", "")
        vendor = _VENDORS.get(vendor_key, vendor_key.lower() or platform.machine().lower())
        return model or platform.machine() or "unknown", vendor or "unknown"

    def probe(self) -> list[Device]:
        cores = self.cores()
        slices, threads = default_cpu_slicing(cores)
        # With only one of the two given, the other fills the same usable cores.
        usable = cores if cores <= 2 else cores - 1
        if self._slices is not None:
            slices = self._slices
            threads = self._threads or max(1, usable // slices)
        elif self._threads is not None:
            threads = self._threads
            slices = max(1, usable // threads)
        per_thread = self._benchmark()
        model, vendor = self._model_and_vendor()
        return [
            Device(
                device_id="cpu0",
                kind="cpu",
                vendor=vendor,
                model=model,
                memory_bytes=self.memory_bytes(),
                tflops=round(per_thread * slices * threads, 6),
                torch_device="cpu",
                slices=slices,
                threads=threads,
                sharing="exclusive" if slices == 1 else "threads",
                extra={
                    "cores": str(cores),
                    "tflops_per_thread": f"{per_thread:.6f}",
                    "tflops_precision": "fp32",
                    "tflops_source": "measured",
                },
            )
        ]

    def _read_stat(self) -> tuple[int, int]:
        """``(busy, total)`` jiffies summed over the CPUs this process may run on."""
        allowed = {f"cpu{i}" for i in self._affinity()}
        busy = total = 0
        for line in (self._proc / "stat").read_text().splitlines():
            fields = line.split()
            if not fields or fields[0] not in allowed:
                continue
            # user nice system idle iowait irq softirq steal [guest guest_nice]; guest time
            # is already counted in user/nice, so it is left out of the total.
            counters = [int(v) for v in fields[1:9]]
            idle = counters[3] + (counters[4] if len(counters) > 4 else 0)
            total += sum(counters)
            busy += sum(counters) - idle
        return busy, total

    def readings(self) -> dict[str, Reading]:
        """Busy fraction since the previous call, and memory in use (MemTotal − MemAvailable
        from ``/proc/meminfo``: what the kernel could not hand out without swapping)."""
        used: int | None = None
        try:
            meminfo = _parse_key_values((self._proc / "meminfo").read_text())
            used = 1024 * (
                int(meminfo["MemTotal"].split()[0]) - int(meminfo["MemAvailable"].split()[0])
            )
        except (OSError, KeyError, ValueError, IndexError):
            pass
        busy = self.utilisation().get("cpu0")
        if busy is None and used is None:
            return {}
        return {"cpu0": Reading(utilisation=busy, memory_used_bytes=used)}

    def utilisation(self) -> dict[str, float]:
        """Busy fraction since the previous call; the first call reports since boot."""
        try:
            busy, total = self._read_stat()
        except (OSError, ValueError):
            return {}
        prev_busy, prev_total = self._last_stat or (0, 0)
        self._last_stat = (busy, total)
        d_total = total - prev_total
        if d_total <= 0:
            return {"cpu0": 0.0}
        return {"cpu0": min(1.0, max(0.0, (busy - prev_busy) / d_total))}
