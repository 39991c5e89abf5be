"""KunlunxinProbe and parse_xpu_smi on recorded `xpu_smi` outputs, both layouts
(tests/fakes/kunlunxin/SOURCES.md)."""

from __future__ import annotations

import sys

import pytest

from anypu.devices._kunlunxin import KUNLUNXIN_TFLOPS, KunlunxinProbe, parse_xpu_smi
from anypu.devices._probe import Reading
from anypu.devices._tool import table_tflops
from tests.fakes import recorded

MIB = 2**20
P800 = "kunlunxin/xpu_smi.txt"  # XRE 5.x: 8 x "P800 OAM", three rows per XPU
R300 = "kunlunxin/xpu_smi_xre4.31_r300.txt"  # XRE 4.31: DEVICES section, 2 x "R300"


def _probe(text: str) -> KunlunxinProbe:
    return KunlunxinProbe(binary=sys.executable, run=lambda command, timeout: text)


# -- XRE 5.x / P800 ------------------------------------------------------------------------


def test_parse_p800_table() -> None:
    devices = parse_xpu_smi(recorded(P800))
    assert [d.index for d in devices] == list(range(8))
    assert {d.name for d in devices} == {"P800 OAM"}  # "N/A" after it is Persistence-M
    assert [d.bus_id for d in devices] == [
        "00000000:03:00.0",
        "00000000:05:00.0",
        "00000000:63:00.0",
        "00000000:65:00.0",
        "00000000:83:00.0",
        "00000000:85:00.0",
        "00000000:A3:00.0",
        "00000000:A5:00.0",
    ]
    # HBM (the Memory-Usage row), not the third row's 96 MiB of L3 SRAM.
    assert {d.memory_total_bytes for d in devices} == {98304 * MIB}
    assert {d.memory_used_bytes for d in devices} == {0}
    assert {d.utilisation for d in devices} == {0.0}


def test_p800_memory_and_utilisation_come_from_the_hbm_row_not_l3() -> None:
    lines = recorded(P800).splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("|   0  P800"))
    assert "96MiB" in lines[first + 2]  # the L3 row of XPU 0
    lines[first + 1] = lines[first + 1].replace(
        "|      0MiB / 98304MiB |      0%      Default |",
        "|  51234MiB / 98304MiB |     88%      Default |",
    )
    lines[first + 2] = lines[first + 2].replace(
        "|      0MiB /    96MiB |", "|     42MiB /    96MiB |"
    )
    xpu0 = parse_xpu_smi("".join(lines))[0]
    assert xpu0.memory_used_bytes == 51234 * MIB
    assert xpu0.memory_total_bytes == 98304 * MIB
    assert xpu0.utilisation == pytest.approx(0.88)


def test_a_p800_block_missing_its_l3_row_is_an_error_not_a_skip() -> None:
    lines = recorded(P800).splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("|   3  P800"))
    del lines[first + 2]
    with pytest.raises(ValueError, match="does not match its header"):
        parse_xpu_smi("".join(lines))


# -- XRE 4.x / R300 ------------------------------------------------------------------------


def test_parse_xre4_devices_section() -> None:
    xpu0, xpu1 = parse_xpu_smi(recorded(R300))
    assert (xpu0.index, xpu0.name, xpu0.bus_id) == (0, "R300", "0000:53:00.0")
    assert (xpu1.index, xpu1.name, xpu1.bus_id) == (1, "R300", "0000:56:00.0")
    # Memory "0 / 32768 MB" (MiB), not L3 "0 / 63 MB".
    assert xpu0.memory_total_bytes == xpu1.memory_total_bytes == 32768 * MIB
    assert xpu0.memory_used_bytes == xpu1.memory_used_bytes == 0
    assert xpu0.utilisation == xpu1.utilisation == 0.0  # UseRate "0 %"


def test_xre4_utilisation_and_memory_in_use() -> None:
    text = recorded(R300).replace(
        "|     1 | 0000:56:00.0 | R300  | 02Kxxx | /dev/xpu1  |     0 % | 0 / 63 MB | 0 / 32768 MB |",
        "|     1 | 0000:56:00.0 | R300  | 02Kxxx | /dev/xpu1  |    64 % | 9 / 63 MB | 20480 / 32768 MB |",
    )
    xpu1 = parse_xpu_smi(text)[1]
    assert xpu1.utilisation == pytest.approx(0.64)
    assert xpu1.memory_used_bytes == 20480 * MIB


def test_an_unreadable_xre4_row_is_an_error_not_a_skip() -> None:
    text = recorded(R300).replace("| 0 / 32768 MB |", "| 0 / ? MB |", 1)
    with pytest.raises(ValueError, match="memory"):
        parse_xpu_smi(text)


# -- rejection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "xpu_smi: command not found\n",
        "Runtime Version: 4.31\nDriver Version: 4.0\n",
        "+----+\n| hello |\n+----+\n",
        recorded("metax/mx_smi.txt"),
        recorded("iluvatar/ixsmi.txt"),
        recorded("npu_smi_910b.txt"),
    ],
)
def test_parse_rejects_text_that_is_not_xpu_smi(text: str) -> None:
    with pytest.raises(ValueError, match="xpu_smi"):
        parse_xpu_smi(text)


# -- the probe -------------------------------------------------------------------------------


def test_probe_describes_every_p800() -> None:
    probe = _probe(recorded(P800))
    assert probe.available(), probe.unavailable_reason
    devices = probe.probe()
    assert [d.device_id for d in devices] == [f"xpu{i}" for i in range(8)]
    assert [d.torch_device for d in devices] == [f"cuda:{i}" for i in range(8)]
    assert [d.extra["index"] for d in devices] == [str(i) for i in range(8)]
    xpu6 = devices[6]
    assert (xpu6.kind, xpu6.vendor, xpu6.model) == ("npu", "kunlunxin", "P800 OAM")
    assert xpu6.memory_bytes == 96 * 2**30
    assert xpu6.extra["bus_id"] == "00000000:A3:00.0"
    assert xpu6.extra["memory_free_bytes"] == str(98304 * MIB)
    # Kunlunxin publishes no P800 data sheet, so the default (see KUNLUNXIN_TFLOPS).
    assert (xpu6.tflops, xpu6.extra["tflops_source"]) == (1.0, "default")
    assert xpu6.extra["tflops_precision"] == "fp16"
    assert probe.describes(xpu6)


def test_probe_on_xre4_uses_the_r300_figure() -> None:
    xpu0, xpu1 = _probe(recorded(R300)).probe()
    assert [xpu0.device_id, xpu1.device_id] == ["xpu0", "xpu1"]
    assert [xpu0.torch_device, xpu1.torch_device] == ["cuda:0", "cuda:1"]
    assert xpu1.memory_bytes == 32 * 2**30
    assert (xpu1.tflops, xpu1.extra["tflops_source"]) == (125.0, "table")


def test_probe_runs_xpu_smi_with_no_arguments() -> None:
    assert KunlunxinProbe.binary == "xpu_smi"
    calls: list[tuple[list[str], float]] = []

    def run(command: list[str], timeout: float) -> str:
        calls.append((command, timeout))
        return recorded(P800)

    assert len(KunlunxinProbe(binary=sys.executable, timeout=3.0, run=run).probe()) == 8
    assert calls == [([sys.executable], 3.0)]


def test_readings_carry_utilisation_and_hbm_in_use() -> None:
    readings = _probe(recorded(P800)).readings()
    assert sorted(readings) == [f"xpu{i}" for i in range(8)]
    assert readings["xpu7"] == Reading(utilisation=0.0, memory_used_bytes=0)
    assert _probe(recorded(R300)).readings() == {
        "xpu0": Reading(utilisation=0.0, memory_used_bytes=0),
        "xpu1": Reading(utilisation=0.0, memory_used_bytes=0),
    }


def test_a_worker_is_narrowed_with_xpu_and_cuda_variables() -> None:
    xpu5 = _probe(recorded(P800)).probe()[5]
    assert KunlunxinProbe.slice_environment(xpu5, 0) == {
        "XPU_VISIBLE_DEVICES": "5",
        "CUDA_VISIBLE_DEVICES": "5",
    }
    assert KunlunxinProbe.worker_torch_device(xpu5) == "cuda:0"


def test_failing_tool_is_not_available() -> None:
    def run(command: list[str], timeout: float) -> str:
        raise RuntimeError("`xpu_smi` exited with status 1: open /dev/xpuctrl failed")

    probe = KunlunxinProbe(binary=sys.executable, run=run)
    assert not probe.available()
    assert "unusable" in probe.unavailable_reason
    assert "/dev/xpuctrl failed" in probe.unavailable_reason
    assert probe.readings() == {}


def test_garbage_output_is_not_available() -> None:
    probe = _probe("garbage\n")
    assert not probe.available()
    assert "no device table" in probe.unavailable_reason
    with pytest.raises(ValueError):
        probe.probe()


def test_tflops_table_patterns() -> None:
    assert table_tflops("R300", KUNLUNXIN_TFLOPS) == 125.0
    assert table_tflops("R200", KUNLUNXIN_TFLOPS) == 128.0
    assert table_tflops("R200-8F", KUNLUNXIN_TFLOPS) == 128.0
    for unsourced in ("R300+", "P800 OAM", "P800"):
        assert table_tflops(unsourced, KUNLUNXIN_TFLOPS) is None
