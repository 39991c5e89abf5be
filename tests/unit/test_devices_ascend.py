"""AscendProbe on recorded `npu-smi info` outputs, run through a fake npu-smi executable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from anypu.devices import AscendProbe, parse_npu_smi_info
from tests.fakes import FAKES_DIR, recorded


def _fake_tool(tmp_path: Path, body: str) -> str:
    """An executable `npu-smi` stand-in whose behaviour is a shell snippet."""
    tool = tmp_path / "npu-smi"
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return str(tool)


def _printing(tmp_path: Path, recording: str) -> str:
    return _fake_tool(tmp_path, f'[ "$1" = info ] || exit 3\ncat "{FAKES_DIR / recording}"')


def test_parse_910b_table() -> None:
    chips = parse_npu_smi_info(recorded("npu_smi_910b.txt"))
    assert [c.npu_id for c in chips] == list(range(8))
    assert [c.logical_id for c in chips] == list(range(8))
    first = chips[0]
    assert (first.name, first.health, first.bus_id) == ("910B3", "OK", "0000:C1:00.0")
    assert first.memory_total_bytes == 65536 * 2**20  # HBM, not the empty DDR column
    assert first.memory_used_bytes == 31420 * 2**20  # "31420/ 65536": no space before '/'
    assert first.aicore_percent == 37.0
    assert chips[3].health == "Critical"
    assert chips[4].aicore_percent == 100.0


def test_parse_310p_table_with_two_chips_per_card() -> None:
    chips = parse_npu_smi_info(recorded("npu_smi_310p.txt"))
    assert [(c.npu_id, c.chip_id, c.logical_id) for c in chips] == [
        (1, 0, 0),
        (1, 1, 1),
        (2, 0, 2),
        (2, 1, 3),
    ]
    assert chips[1].memory_total_bytes == 43693 * 2**20  # DDR column: no HBM on 310P
    assert chips[1].aicore_percent == 12.0


@pytest.mark.parametrize("text", ["", "command not found\n", "+----+\n| hello |\n+----+\n"])
def test_parse_rejects_text_without_a_device_table(text: str) -> None:
    with pytest.raises(ValueError, match="npu-smi info"):
        parse_npu_smi_info(text)


def test_probe_runs_the_tool_and_skips_unhealthy_chips(tmp_path: Path) -> None:
    probe = AscendProbe(binary=_printing(tmp_path, "npu_smi_910b.txt"))
    assert probe.available()
    devices = probe.probe()
    assert [d.device_id for d in devices] == [
        "npu0",
        "npu1",
        "npu2",
        "npu4",
        "npu5",
        "npu6",
        "npu7",
    ]
    npu0 = devices[0]
    assert (npu0.kind, npu0.vendor, npu0.model, npu0.torch_device) == (
        "npu",
        "huawei",
        "Ascend910B3",
        "npu:0",
    )
    assert npu0.memory_bytes == 64 * 2**30
    assert npu0.tflops == 313.0
    assert npu0.extra["tflops_precision"] == "fp16"
    assert npu0.extra["memory_free_bytes"] == str((65536 - 31420) * 2**20)
    assert devices[2].extra["health"] == "Warning"
    assert not npu0.simulated


def test_310p_devices_use_the_logical_id(tmp_path: Path) -> None:
    devices = AscendProbe(binary=_printing(tmp_path, "npu_smi_310p.txt"), slices=2).probe()
    assert [d.torch_device for d in devices] == ["npu:0", "npu:1", "npu:2", "npu:3"]
    assert devices[3].extra["npu_id"] == "2" and devices[3].extra["chip_id"] == "1"
    assert devices[0].tflops == 70.0
    assert (devices[0].slices, devices[0].sharing) == (2, "time")


def test_utilisation_from_aicore_column(tmp_path: Path) -> None:
    probe = AscendProbe(binary=_printing(tmp_path, "npu_smi_910b.txt"))
    busy = probe.utilisation()
    assert busy["npu0"] == pytest.approx(0.37)
    assert busy["npu4"] == 1.0
    assert busy["npu1"] == 0.0


def test_missing_binary_is_not_available(tmp_path: Path) -> None:
    probe = AscendProbe(binary=str(tmp_path / "no-such-npu-smi"))
    assert not probe.available()
    assert "not on PATH" in probe.unavailable_reason
    assert probe.utilisation() == {}


def test_failing_tool_is_not_available(tmp_path: Path) -> None:
    tool = _fake_tool(tmp_path, 'echo "dcmi module initialize failed. ret is -8005" >&2\nexit 1')
    probe = AscendProbe(binary=tool)
    assert not probe.available()
    assert "exited with status 1" in probe.unavailable_reason
    assert "-8005" in probe.unavailable_reason


def test_hanging_tool_times_out(tmp_path: Path) -> None:
    tool = _fake_tool(tmp_path, "exec sleep 5")
    probe = AscendProbe(binary=tool, timeout=0.3)
    assert not probe.available()
    assert "timed out" in probe.unavailable_reason


def test_garbage_output_is_not_available(tmp_path: Path) -> None:
    probe = AscendProbe(binary=_fake_tool(tmp_path, "echo garbage"))
    assert not probe.available()
    assert "no device table" in probe.unavailable_reason


def test_all_chips_unhealthy_is_not_available(tmp_path: Path) -> None:
    text = (
        recorded("npu_smi_910b.txt").replace("| OK ", "| Alarm ").replace("| Warning ", "| Alarm ")
    )
    recording = tmp_path / "all_alarm.txt"
    recording.write_text(text)
    probe = AscendProbe(binary=_fake_tool(tmp_path, f'cat "{recording}"'))
    assert not probe.available()
    assert probe.unavailable_reason == "npu-smi lists no healthy NPU"


def test_injected_runner_receives_the_resolved_command(tmp_path: Path) -> None:
    tool = _printing(tmp_path, "npu_smi_310p.txt")
    calls: list[tuple[list[str], float]] = []

    def runner(command: list[str], timeout: float) -> str:
        calls.append((command, timeout))
        return recorded("npu_smi_310p.txt")

    assert len(AscendProbe(binary=tool, timeout=2.5, run_tool=runner).probe()) == 4
    assert calls == [([tool, "info"], 2.5)]


def test_readings_carry_aicore_and_hbm_in_use(tmp_path: Path) -> None:
    readings = AscendProbe(binary=_printing(tmp_path, "npu_smi_910b.txt")).readings()
    assert readings["npu0"].utilisation == pytest.approx(0.37)
    assert readings["npu0"].memory_used_bytes == 31420 * 1024 * 1024
    assert readings["npu4"].memory_used_bytes == 60122 * 1024 * 1024


def test_readings_carry_each_process_s_memory_from_the_process_table(tmp_path: Path) -> None:
    readings = AscendProbe(binary=_printing(tmp_path, "npu_smi_910b.txt")).readings()
    assert readings["npu0"].process_memory == {1652339: 28026 * 1024 * 1024}
    assert readings["npu4"].process_memory == {1652871: 56730 * 1024 * 1024}
    assert readings["npu1"].process_memory == {}  # "No running processes found in NPU 1"


def test_the_process_table_is_keyed_by_npu_and_chip() -> None:
    from anypu.devices._ascend import parse_npu_smi_processes

    text = recorded("npu_smi_310p.txt")
    assert parse_npu_smi_processes(text) == {}  # its process table lists none
    # Two processes on chip 1 of NPU 2, in the rows the 910B recording prints them in.
    rows = "| 2       1       | 4242   | python3.10   | 1024   |\n| 2  1  | 4243  | python3.10  | 512  |\n"
    assert parse_npu_smi_processes(text + rows) == {(2, 1): {4242: 1 << 30, 4243: 512 << 20}}
