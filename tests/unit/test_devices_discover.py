"""discover(): the registry of probes, simulated devices, unique ids, heartbeat utilisation."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from anypu.devices import (
    PROBES,
    AscendProbe,
    CpuProbe,
    Device,
    NvidiaProbe,
    Probe,
    collect_readings,
    discover,
    make_probes,
)
from anypu.errors import ConfigError
from tests.fakes import FakeGpu, make_fake_pynvml


class StaticProbe(Probe):
    """A probe returning fixed devices, or raising, to exercise discover's plumbing."""

    name = "static"

    def __init__(self, devices: list[Device], *, fail: bool = False, present: bool = True) -> None:
        super().__init__()
        self.devices = devices
        self.fail = fail
        self.present = present
        self.probed = 0

    def available(self) -> bool:
        self.unavailable_reason = "" if self.present else "not here"
        return self.present

    def probe(self) -> list[Device]:
        self.probed += 1
        if self.fail:
            raise RuntimeError("driver exploded")
        return list(self.devices)

    def utilisation(self) -> dict[str, float]:
        if self.fail:
            raise RuntimeError("driver exploded")
        return {d.device_id: 0.5 for d in self.devices}


def _gpu(device_id: str = "gpu0", vendor: str = "nvidia") -> Device:
    return Device(device_id, "gpu", vendor, "X", 2**34, 10.0, "cuda:0")


CPU_ONLY = StaticProbe([Device("cpu0", "cpu", "amd", "EPYC", 2**33, 0.1, "cpu")])
SIMULATED = (
    "devices:\n  - {kind: gpu, vendor: nvidia, model: A100, memory: 40GiB, tflops: 156, count: 2}\n"
)


def test_registry_holds_one_class_per_vendor() -> None:
    assert PROBES[:2] == (CpuProbe, NvidiaProbe) and AscendProbe in PROBES
    assert len({p.name for p in PROBES}) == len(PROBES) == 13
    assert len({p.vendor for p in PROBES}) == len(PROBES)  # the CPU probe's "" included
    modules = {p.__module__ for p in PROBES}
    assert len(modules) == len(PROBES)  # one module per vendor


def test_default_discovery_on_this_cpu_only_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setenv("PATH", "/nonexistent")  # no npu-smi
    devices = discover()
    assert [d.device_id for d in devices] == ["cpu0"]
    assert not devices[0].simulated


def test_simulated_devices_come_after_real_ones_with_free_ids(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(SIMULATED)
    devices = discover(path, probes=[CPU_ONLY, StaticProbe([_gpu()])])
    assert [(d.device_id, d.simulated) for d in devices] == [
        ("cpu0", False),
        ("gpu0", False),
        ("gpu1", True),
        ("gpu2", True),
    ]


def test_include_host_false_runs_no_probe(tmp_path: Path) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text("include_host: false\n" + SIMULATED)
    probe = StaticProbe([_gpu()])
    devices = discover(path, probes=[probe])
    assert [d.device_id for d in devices] == ["gpu0", "gpu1"]
    assert all(d.simulated for d in devices)
    assert probe.probed == 0


def test_bad_devices_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        discover(tmp_path / "missing.yaml", probes=[CPU_ONLY])


def test_colliding_vendors_get_distinct_ids() -> None:
    devices = discover(
        probes=[StaticProbe([_gpu("gpu0"), _gpu("gpu1")]), StaticProbe([_gpu("gpu0", "amd")])]
    )
    assert [(d.device_id, d.vendor) for d in devices] == [
        ("gpu0", "nvidia"),
        ("gpu1", "nvidia"),
        ("gpu2", "amd"),
    ]


def test_a_failing_probe_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        devices = discover(probes=[CPU_ONLY, StaticProbe([_gpu()], fail=True)])
    assert [d.device_id for d in devices] == ["cpu0"]
    assert "probe static failed" in caplog.text


def test_unavailable_probe_is_not_probed() -> None:
    absent = StaticProbe([_gpu()], present=False)
    assert [d.device_id for d in discover(probes=[CPU_ONLY, absent])] == ["cpu0"]
    assert absent.probed == 0


def test_fake_nvml_gpus_join_the_real_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(
        sys.modules,
        "pynvml",
        make_fake_pynvml(
            [
                FakeGpu("NVIDIA L4", 24 * 2**30, utilisation_percent=10, uuid="GPU-a"),
                FakeGpu("NVIDIA L4", 24 * 2**30, utilisation_percent=90, uuid="GPU-b"),
            ]
        ),
    )
    probes = make_probes([CpuProbe(benchmark=lambda: 0.1), NvidiaProbe])
    devices = discover(probes=probes)
    assert [d.device_id for d in devices] == ["cpu0", "gpu0", "gpu1"]
    readings = collect_readings(probes)
    assert set(readings) == {"cpu0", "gpu0", "gpu1"}
    assert readings["gpu1"].utilisation == pytest.approx(0.9)


def test_collect_readings_survives_a_failing_probe() -> None:
    readings = collect_readings([StaticProbe([_gpu()]), StaticProbe([_gpu("gpu7")], fail=True)])
    assert {d: r.utilisation for d, r in readings.items()} == {"gpu0": 0.5}


def test_simulated_devices_are_capped_at_the_host_and_the_agent_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "devices.yaml"
    path.write_text(
        "devices:\n"
        "  - {kind: npu, vendor: huawei, model: Ascend-910B, memory: 64GiB, tflops: 320}\n"
        "  - {kind: gpu, vendor: nvidia, model: T4, memory: 16GiB, tflops: 8}\n"
        "include_host: false\n"
    )
    with caplog.at_level(logging.WARNING, logger="anypu.devices"):
        npu, gpu = discover(path, host_memory=23 << 30)
    assert npu.memory_bytes == 23 << 30 and npu.extra["declared_memory"] == str(64 << 30)
    assert gpu.memory_bytes == 16 << 30 and "declared_memory" not in gpu.extra
    assert "claim 80.0 GiB of memory, but this host has 23.0 GiB" in caplog.text
    assert "npu0 64.0 GiB capped" in caplog.text
    # Within the host: nothing changes, nothing is said.
    caplog.clear()
    assert [d.memory_bytes for d in discover(path, host_memory=128 << 30)] == [64 << 30, 16 << 30]
    assert caplog.text == ""
