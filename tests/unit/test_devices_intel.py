"""IntelProbe and its xpu-smi parsers on recorded outputs (tests/fakes/intel/SOURCES.md)."""

from __future__ import annotations

import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from anypu.devices._intel import (
    DISCOVERY_ARGUMENTS,
    DUMP_ARGUMENTS,
    IntelProbe,
    XpuSample,
    merge_samples,
    parse_discovery_dump,
    parse_discovery_json,
    parse_dump,
)
from anypu.devices._tool import ToolDevice
from tests.fakes import recorded

MIB = 1 << 20


def _intel(name: str) -> str:
    return recorded(f"intel/{name}")


def _runner(
    discovery: str, dump: str, calls: list[list[str]] | None = None
) -> Callable[[list[str], float], str]:
    """A fake `run` giving each xpu-smi command its recording (anything else fails)."""

    def run(command: list[str], timeout: float) -> str:
        assert command[0] == sys.executable
        if calls is not None:
            calls.append(command[1:])
        if tuple(command[1:]) == DISCOVERY_ARGUMENTS:
            return _intel(discovery)
        if tuple(command[1:]) == DUMP_ARGUMENTS:
            return _intel(dump)
        raise RuntimeError(f"unexpected command {command}")

    return run


def _flex_probe(calls: list[list[str]] | None = None, slices: int = 1) -> IntelProbe:
    """Two Flex 170s (the DOC discovery dump) with the DOC dump of device 0."""
    return IntelProbe(
        binary=sys.executable,
        slices=slices,
        run=_runner("xpu_smi_discovery_dump.csv", "xpu_smi_dump_doc.csv", calls),
    )


# -- parsers on the recordings ---------------------------------------------------------


def test_parse_discovery_dump_of_two_flex_gpus() -> None:
    # `xpu-smi discovery --dump 1,2,3,6`: no memory column, trailing blank line.
    assert parse_discovery_dump(_intel("xpu_smi_discovery_dump.csv")) == [
        ToolDevice(index=0, name="Intel(R) Graphics [0x56c0]", memory_total_bytes=0),
        ToolDevice(index=1, name="Intel(R) Graphics [0x56c0]", memory_total_bytes=0),
    ]


def test_parse_discovery_dump_with_memory_not_available() -> None:
    # `xpu-smi discovery --dump 1,2,6,16` on an Arc A310: Memory Physical Size "N/A".
    assert parse_discovery_dump(_intel("xpu_smi_discovery_dump_a310_beszel755.csv")) == [
        ToolDevice(index=0, name="Intel(R) Arc(TM) A310 LP Graphics", memory_total_bytes=0)
    ]


def test_parse_discovery_dump_memory_and_bus_id_columns() -> None:
    # No recording prints a memory size in dump form: this row is the recorded A310
    # header with field 11 added and the size the DOC detail view prints for that
    # property (xpu_smi_discovery_d0.txt), quoted as comlet_discovery.cpp writes it.
    text = (
        "Device ID,Device Name,PCI BDF Address,Memory Physical Size\n"
        '0,"Intel(R) Graphics [0x020a]","0000:4d:00.0","32768.00 MiB"\n'
    )
    assert parse_discovery_dump(text) == [
        ToolDevice(
            index=0,
            name="Intel(R) Graphics [0x020a]",
            memory_total_bytes=32768 * MIB,
            bus_id="0000:4d:00.0",
        )
    ]


def test_parse_dump_of_the_user_guide() -> None:
    # `xpu-smi dump -d 0 -m 0,1,2 -i 1 -n 5`: five samples of device 0, no memory metric.
    samples = parse_dump(_intel("xpu_smi_dump_doc.csv"))
    assert samples == [XpuSample(device_id=0, utilisation=0.0)] * 5


def test_parse_dump_of_arc_a770s_with_utilisation_not_available() -> None:
    samples = parse_dump(_intel("xpu_smi_dump_a770_issue76.csv"))
    assert [s.device_id for s in samples] == [0, 1, 2, 3]
    assert [s.utilisation for s in samples] == [None] * 4  # " N/A", as published
    assert [s.memory_used_bytes for s in samples] == [
        int(17.52 * MIB),
        int(17.52 * MIB),
        int(49.21 * MIB),
        int(17.52 * MIB),
    ]


def test_parse_dump_of_an_arc_a310_without_the_utilisation_metric() -> None:
    # `-d "-1" -m 1,2,5,18`: memory used, no metric 0 at all.
    samples = parse_dump(_intel("xpu_smi_dump_a310_beszel755.csv"))
    assert samples == [XpuSample(device_id=0, memory_used_bytes=int(82.44 * MIB))] * 4


def test_parse_dump_of_six_max_1550s() -> None:
    samples = parse_dump(_intel("xpu_smi_dump_max1550_issue98.csv"))
    assert len(samples) == 13
    assert {s.device_id for s in samples} == set(range(6))
    assert all(s.utilisation is None and s.memory_used_bytes is None for s in samples)


def test_parse_discovery_json() -> None:
    assert parse_discovery_json(_intel("xpu_smi_discovery.json")) == [
        ToolDevice(
            index=0,
            name="Intel(R) Graphics [0x020a]",
            memory_total_bytes=0,
            bus_id="0000:4d:00.0",
        )
    ]


def test_merge_takes_each_devices_latest_sample() -> None:
    devices = [
        ToolDevice(index=0, name="a", memory_total_bytes=0),
        ToolDevice(index=1, name="b", memory_total_bytes=0),
    ]
    samples = [
        XpuSample(0, 0.5, 10),
        XpuSample(0, 0.25, 20),
        XpuSample(7, 1.0, 30),  # a device discovery did not list: dropped
    ]
    assert merge_samples(devices, samples) == [
        ToolDevice(index=0, name="a", memory_total_bytes=0, memory_used_bytes=20, utilisation=0.25),
        ToolDevice(index=1, name="b", memory_total_bytes=0),
    ]


def test_utilisation_percent_is_a_clamped_fraction() -> None:
    text = "Timestamp, DeviceId, GPU Utilization (%)\n06:14:46.000,    0, 37.50\n"
    assert parse_dump(text) == [XpuSample(device_id=0, utilisation=0.375)]
    text = "Timestamp, DeviceId, GPU Utilization (%)\n06:14:46.000,    0, 100.20\n"
    assert parse_dump(text)[0].utilisation == 1.0


# -- what is not xpu-smi 1.x output -----------------------------------------------------

_NOT_INTEL = [
    "",
    "garbage\n",
    recorded("kunlunxin/xpu_smi.txt"),  # Kunlunxin's tool of the same name
    recorded("kunlunxin/xpu_smi_xre4.31_r300.txt"),
    "Error: Device not found\n",
]


@pytest.mark.parametrize(
    "text", [*_NOT_INTEL, _intel("xpu_smi_discovery.txt"), _intel("xpu_smi_dump_doc.csv")]
)
def test_discovery_dump_parser_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="discovery --dump"):
        parse_discovery_dump(text)


@pytest.mark.parametrize("text", [*_NOT_INTEL, _intel("xpu_smi_discovery_dump.csv")])
def test_dump_parser_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="xpu-smi dump"):
        parse_dump(text)


def test_dump_parser_rejects_an_error_after_the_header() -> None:
    text = "Timestamp, DeviceId, GPU Utilization (%)\nError: Level Zero Initialization Error\n"
    with pytest.raises(ValueError, match="Level Zero"):
        parse_dump(text)


def test_dump_parser_rejects_a_tile_level_dump() -> None:
    text = "Timestamp, DeviceId, TileId, GPU Utilization (%)\n06:14:46.000,    0,    0, 1.0\n"
    with pytest.raises(ValueError, match="per tile"):
        parse_dump(text)


def test_discovery_dump_parser_rejects_an_unknown_memory_format() -> None:
    text = 'Device ID,Device Name,Memory Physical Size\n0,"x","lots"\n'
    with pytest.raises(ValueError, match="Memory Physical Size"):
        parse_discovery_dump(text)


@pytest.mark.parametrize(
    "text", ["", "[]", '{"devices": []}', '{"device_list": [{"device_name": "x"}]}']
)
def test_discovery_json_parser_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="discovery -j|device_"):
        parse_discovery_json(text)


# -- the probe, end to end ---------------------------------------------------------------


def test_probe_runs_both_commands_and_describes_each_gpu() -> None:
    calls: list[list[str]] = []
    probe = _flex_probe(calls)
    assert probe.available(), probe.unavailable_reason
    devices = probe.probe()
    assert calls == [list(DISCOVERY_ARGUMENTS), list(DUMP_ARGUMENTS)] * 2
    assert [d.device_id for d in devices] == ["gpu0", "gpu1"]
    gpu1 = devices[1]
    assert (gpu1.kind, gpu1.vendor, gpu1.model, gpu1.torch_device) == (
        "gpu",
        "intel",
        "Intel(R) Graphics [0x56c0]",
        "xpu:1",
    )
    assert gpu1.extra["index"] == "1"
    assert gpu1.memory_bytes == 0 and gpu1.extra["memory_total"] == "unknown"
    assert "memory_free_bytes" not in gpu1.extra  # total unknown: no made-up free figure
    assert gpu1.tflops == 1.0  # Flex 170 named by PCI id: not in the table
    assert gpu1.extra["tflops_source"] == "default"
    assert gpu1.extra["tflops_precision"] == "fp32"
    assert (gpu1.slices, gpu1.sharing) == (1, "exclusive")
    assert not gpu1.simulated


def test_readings_merge_the_dump_into_the_listed_devices() -> None:
    calls: list[list[str]] = []
    probe = _flex_probe(calls)
    probe.probe()
    del calls[:]
    readings = probe.readings()
    assert calls == [list(DUMP_ARGUMENTS)]  # the device list is kept from probe()
    assert readings["gpu0"].utilisation == 0.0
    assert readings["gpu0"].memory_used_bytes is None  # the DOC dump has no metric 18
    assert readings["gpu1"].utilisation is None  # the DOC dump has device 0 only
    assert probe.utilisation() == {"gpu0": 0.0}


def test_a310_end_to_end_memory_used_but_size_unknown() -> None:
    run = _runner("xpu_smi_discovery_dump_a310_beszel755.csv", "xpu_smi_dump_a310_beszel755.csv")
    probe = IntelProbe(binary=sys.executable, run=run)
    assert probe.available()
    (gpu0,) = probe.probe()
    assert gpu0.model == "Intel(R) Arc(TM) A310 LP Graphics"
    readings = probe.readings()
    assert readings["gpu0"].memory_used_bytes == int(82.44 * MIB)
    assert readings["gpu0"].utilisation is None
    assert probe.utilisation() == {}


def test_table_tflops_for_named_parts() -> None:
    def discovery(name: str) -> str:
        return f'Device ID,Device Name\n0,"{name}"\n'

    def run_for(name: str) -> Callable[[list[str], float], str]:
        def run(command: list[str], timeout: float) -> str:
            if tuple(command[1:]) == DISCOVERY_ARGUMENTS:
                return discovery(name)
            return _intel("xpu_smi_dump_doc.csv")

        return run

    def tflops(name: str) -> float:
        return IntelProbe(binary=sys.executable, run=run_for(name)).probe()[0].tflops

    assert tflops("Intel(R) Data Center GPU Max 1550") == 52.0
    assert tflops("Intel(R) Data Center GPU Max 1100") == 22.2
    assert tflops("Intel(R) Arc(TM) A770 Graphics") == 19.66
    assert tflops("Intel(R) Arc(TM) A770M Graphics") == 1.0  # the mobile part is not an A770


def test_slice_environment_narrows_to_the_xpu_smi_id() -> None:
    gpu1 = _flex_probe(slices=2).probe()[1]
    assert IntelProbe.slice_environment(gpu1, 0) == {
        "CUDA_VISIBLE_DEVICES": "",
        "ZE_AFFINITY_MASK": "1",
        "ZE_FLAT_DEVICE_HIERARCHY": "COMPOSITE",
        "ZE_ENABLE_PCI_ID_DEVICE_ORDER": "1",
    }
    assert IntelProbe.worker_torch_device(gpu1) == "xpu:0"
    assert (gpu1.slices, gpu1.sharing) == (2, "time")
    assert IntelProbe.describes(gpu1)


def test_failing_dump_still_offers_the_devices() -> None:
    def run(command: list[str], timeout: float) -> str:
        if tuple(command[1:]) == DISCOVERY_ARGUMENTS:
            return _intel("xpu_smi_discovery_dump.csv")
        raise RuntimeError("`xpu-smi dump` exited with status 1: no permission")

    probe = IntelProbe(binary=sys.executable, run=run)
    assert probe.available()
    assert len(probe.probe()) == 2
    assert probe.utilisation() == {}
    assert probe.readings()["gpu0"].memory_used_bytes is None


def test_failing_tool_is_not_available() -> None:
    def run(command: list[str], timeout: float) -> str:
        raise RuntimeError("`xpu-smi discovery --dump 1,2,6,16` exited with status 1: boom")

    probe = IntelProbe(binary=sys.executable, run=run)
    assert not probe.available()
    assert probe.unavailable_reason.startswith(f"{sys.executable} unusable: ")
    assert "status 1" in probe.unavailable_reason
    assert probe.readings() == {}


def test_failing_real_executable_is_not_available(tmp_path: Path) -> None:
    tool = tmp_path / "xpu-smi"
    tool.write_text('#!/bin/sh\necho "Error: Level Zero Initialization Error" >&2\nexit 1\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    probe = IntelProbe(binary=str(tool))
    assert not probe.available()
    assert "exited with status 1" in probe.unavailable_reason
    assert "Level Zero" in probe.unavailable_reason


def test_kunlunxin_tool_of_the_same_name_is_not_available() -> None:
    def run(command: list[str], timeout: float) -> str:
        return recorded("kunlunxin/xpu_smi.txt")

    probe = IntelProbe(binary=sys.executable, run=run)
    assert not probe.available()
    assert "discovery --dump" in probe.unavailable_reason


def test_missing_binary_is_not_available(tmp_path: Path) -> None:
    probe = IntelProbe(binary=str(tmp_path / "no-such-xpu-smi"))
    assert not probe.available()
    assert "not on PATH" in probe.unavailable_reason


def test_no_devices_listed_is_not_available() -> None:
    def run(command: list[str], timeout: float) -> str:
        return "Device ID,Device Name,Core Clock Rate,Memory Physical Size\n"

    probe = IntelProbe(binary=sys.executable, run=run)
    assert not probe.available()
    assert probe.unavailable_reason == f"{sys.executable} lists no device"
