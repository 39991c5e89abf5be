"""CpuProbe on this machine, and on recorded /proc and cgroup files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anypu.devices import CpuProbe, default_cpu_slicing, measure_cpu_tflops_per_thread
from anypu.devices._cpu import read_cgroup_cpu_quota, read_cgroup_memory_limit, usable_cores

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
"""
MEMINFO = "MemTotal:       16384000 kB\nMemFree:         8000000 kB\n"


def _fake_proc(tmp_path: Path, stat: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text(CPUINFO)
    (proc / "meminfo").write_text(MEMINFO)
    (proc / "stat").write_text(stat)
    return proc


def _stat(cpu0: tuple[int, ...], cpu1: tuple[int, ...]) -> str:
    def line(name: str, values: tuple[int, ...]) -> str:
        return name + " " + " ".join(map(str, values)) + " 0 0\n"

    total = tuple(a + b for a, b in zip(cpu0, cpu1, strict=True))
    return line("cpu", total) + line("cpu0", cpu0) + line("cpu1", cpu1) + "intr 1 2 3\n"


def test_probe_on_this_machine_describes_the_cpu() -> None:
    (device,) = CpuProbe().probe()
    assert device.device_id == "cpu0"
    assert device.kind == "cpu"
    assert device.torch_device == "cpu"
    assert not device.simulated
    assert device.memory_bytes > 2**28
    assert 0 < device.tflops < 100
    cores = int(device.extra["cores"])
    assert 1 <= cores <= (os.cpu_count() or 1)
    assert (device.slices, device.threads) == default_cpu_slicing(cores)
    assert device.extra["tflops_source"] == "measured"


def test_benchmark_is_measured_once_per_process() -> None:
    first = measure_cpu_tflops_per_thread()
    assert first > 0
    assert measure_cpu_tflops_per_thread() == first
    assert measure_cpu_tflops_per_thread.cache_info().hits >= 1


def test_benchmark_restores_torch_threads() -> None:
    import torch

    before = torch.get_num_threads()
    measure_cpu_tflops_per_thread.cache_clear()
    measure_cpu_tflops_per_thread()
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("cores", "expected"),
    [(1, (1, 1)), (2, (1, 1)), (4, (3, 1)), (8, (3, 2)), (16, (7, 2)), (64, (15, 4))],
)
def test_default_slicing(cores: int, expected: tuple[int, int]) -> None:
    slices, threads = default_cpu_slicing(cores)
    assert (slices, threads) == expected
    # Never promise more threads than the machine has.
    assert slices * threads <= max(1, cores - 1 if cores > 2 else cores)


def test_recorded_proc_files_give_model_vendor_memory(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, _stat((100, 0, 50, 850, 0, 0, 0, 0), (0, 0, 0, 1000, 0, 0, 0, 0)))
    probe = CpuProbe(
        proc_root=proc,
        cgroup_root=tmp_path / "no-cgroup",
        affinity=lambda: {0, 1, 2, 3, 4, 5, 6, 7},
        benchmark=lambda: 0.05,
    )
    (device,) = probe.probe()
    assert device.vendor == "intel"
    assert device.model.startswith("Intel(R) Xeon(R) Platinum 8375C")
    assert device.memory_bytes == 16384000 * 1024
    assert (device.slices, device.threads) == (3, 2)
    assert device.sharing == "threads"
    assert device.tflops == pytest.approx(0.05 * 3 * 2)
    assert device.slice_tflops == pytest.approx(0.05 * 2)


def test_cgroup_v2_quota_and_memory_limit_cap_what_is_offered(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, _stat((1,) * 8, (1,) * 8))
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text("150000 100000\n")
    (cgroup / "memory.max").write_text(str(4 * 2**30) + "\n")
    probe = CpuProbe(
        proc_root=proc, cgroup_root=cgroup, affinity=lambda: set(range(16)), benchmark=lambda: 0.1
    )
    (device,) = probe.probe()
    assert device.extra["cores"] == "1"
    assert device.memory_bytes == 4 * 2**30
    assert (device.slices, device.threads) == (1, 1)


def test_cgroup_v1_files(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "memory").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert read_cgroup_cpu_quota(tmp_path) == 4.0
    assert read_cgroup_memory_limit(tmp_path) is None  # v1's "unlimited"
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert read_cgroup_cpu_quota(tmp_path) is None


def test_unlimited_cgroup_v2(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert read_cgroup_cpu_quota(tmp_path) is None
    assert read_cgroup_memory_limit(tmp_path) is None


@pytest.mark.parametrize(
    ("affinity", "quota", "expected"),
    [(8, None, 8), (8, 2.0, 2), (8, 0.5, 1), (2, 16.0, 2), (0, None, 1)],
)
def test_usable_cores(affinity: int, quota: float | None, expected: int) -> None:
    assert usable_cores(affinity, quota) == expected


def test_explicit_slices_or_threads_fill_the_usable_cores(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, _stat((1,) * 8, (1,) * 8))

    def probe(**kwargs: int) -> tuple[int, int]:
        (device,) = CpuProbe(
            proc_root=proc,
            cgroup_root=tmp_path,
            affinity=lambda: set(range(9)),
            benchmark=lambda: 0.1,
            **kwargs,
        ).probe()
        return device.slices, device.threads

    assert probe(slices=2) == (2, 4)
    assert probe(threads=8) == (1, 8)
    assert probe(slices=3, threads=1) == (3, 1)
    with pytest.raises(ValueError, match="slices must be at least 1"):
        CpuProbe(slices=0)


def test_utilisation_from_proc_stat_deltas_over_allowed_cpus(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, _stat((100, 0, 0, 900, 0, 0, 0, 0), (0, 0, 0, 1000, 0, 0, 0, 0)))
    probe = CpuProbe(proc_root=proc, affinity=lambda: {0}, benchmark=lambda: 0.1)
    assert probe.utilisation() == {"cpu0": pytest.approx(0.1)}  # since boot
    # cpu0: +60 user, +20 system, +10 idle, +10 iowait -> 80% busy; cpu1 is not ours.
    (proc / "stat").write_text(_stat((160, 0, 20, 910, 10, 0, 0, 0), (500, 0, 0, 1000, 0, 0, 0, 0)))
    assert probe.utilisation() == {"cpu0": pytest.approx(0.8)}
    assert probe.utilisation() == {"cpu0": 0.0}  # no time passed


def test_utilisation_on_this_machine_is_a_fraction() -> None:
    probe = CpuProbe(benchmark=lambda: 0.1)
    for _ in range(2):
        (value,) = probe.utilisation().values()
        assert 0.0 <= value <= 1.0


def test_readings_add_memory_in_use_from_meminfo(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path, _stat((100, 0, 0, 900, 0, 0, 0, 0), (0, 0, 0, 1000, 0, 0, 0, 0)))
    (proc / "meminfo").write_text("MemTotal: 16384000 kB\nMemAvailable: 6384000 kB\n")
    probe = CpuProbe(proc_root=proc, affinity=lambda: {0}, benchmark=lambda: 0.1)
    (reading,) = probe.readings().values()
    assert reading.utilisation == pytest.approx(0.1)
    assert reading.memory_used_bytes == 10_000_000 * 1024
