"""CambriconProbe on recorded `cnmon` tables (tests/fakes/cambricon/), through an injected runner."""

from __future__ import annotations

import sys

import pytest

from anypu.devices._cambricon import CambriconProbe, parse_cnmon
from anypu.devices._tool import ToolDevice, mib
from tests.fakes import recorded

X8 = "cambricon/cnmon_v5.10.13_mlu370-x8.txt"
X4_V5 = "cambricon/cnmon_v5.10.10_mlu370-x4.txt"
X4_V4 = "cambricon/cnmon_v4.20.11_mlu370-x4.txt"


def _probe(text: str, *, slices: int = 1) -> CambriconProbe:
    return CambriconProbe(binary=sys.executable, slices=slices, run=lambda command, timeout: text)


def _busy_x8() -> str:
    """The X8 recording with card 1 at work (its idle values swapped for busy ones)."""
    text = recorded(X8)
    idle_util = "| 0%                N/A |\n|  0%   39C"
    idle_memory = "|     0 MiB/ 23374 MiB | N/A           Default |\n+"
    assert text.count(idle_util) == 1 and text.count(idle_memory) == 2
    text = text.replace(idle_util, "| 57%               N/A |\n|  0%   39C")
    head, _, tail = text.rpartition(idle_memory)
    return head + "| 12000 MiB/ 23374 MiB | N/A           Default |\n+" + tail


def test_parse_v5_10_13_mlu370_x8() -> None:
    assert parse_cnmon(recorded(X8)) == [
        ToolDevice(0, "MLU370-X8", mib(23374), 0, 0.0, "0000:39:00.0"),
        ToolDevice(1, "MLU370-X8", mib(23374), 0, 0.0, "0000:3D:00.0"),
    ]


def test_default_fixture_is_the_v5_10_13_table() -> None:
    assert parse_cnmon(recorded("cambricon/cnmon.txt")) == parse_cnmon(recorded(X8))


def test_parse_v5_10_10_mlu370_x4_with_its_uneven_ecc_cell() -> None:
    assert parse_cnmon(recorded(X4_V5)) == [
        ToolDevice(0, "MLU370-X4", mib(23308), 0, 0.0, "0000:1B:00.0"),
        ToolDevice(1, "MLU370-X4", mib(23308), 0, 0.0, "0000:36:00.0"),
    ]


def test_parse_v4_20_11_has_no_bus_id_and_ignores_virtual_memory() -> None:
    devices = parse_cnmon(recorded(X4_V4))
    assert devices == [ToolDevice(index, "MLU370-X4", mib(23308), 0, 0.0, "") for index in range(3)]
    # the third column is vMemory-Usage ("10240 MiB/1048576 MiB"), never the capacity
    assert all(d.memory_total_bytes != mib(1048576) for d in devices)


def test_parse_reads_utilisation_and_memory_in_use() -> None:
    busy = parse_cnmon(_busy_x8())[1]
    assert busy.utilisation == pytest.approx(0.57)
    assert busy.memory_used_bytes == mib(12000)
    assert busy.memory_total_bytes == mib(23374)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "cnmon: command not found\n",
        "+------+\n| hello |\n+------+\n",
        "Card  VF  Name\n0  /  MLU370-X8  v1.1.6\n",  # not framed: not cnmon's table
        recorded("mthreads/mthreads_gmi.txt"),
        recorded("enflame/efsmi.txt"),
    ],
)
def test_parse_rejects_text_that_is_not_cnmon(text: str) -> None:
    with pytest.raises(ValueError, match="cnmon"):
        parse_cnmon(text)


def test_a_card_cut_short_is_an_error_not_a_missing_device() -> None:
    lines = recorded(X8).splitlines()
    cut = "\n".join(lines[: lines.index(next(line for line in lines if "0000:3D" in line)) + 1])
    with pytest.raises(ValueError, match="card 1"):
        parse_cnmon(cut)


def test_unreadable_memory_is_an_error() -> None:
    text = recorded(X8).replace("    0 MiB/ 23374 MiB", "         N/A        ", 1)
    with pytest.raises(ValueError, match="card 0 .*memory"):
        parse_cnmon(text)


def test_a_card_listed_twice_is_an_error() -> None:
    text = recorded(X8).replace("| 1     /   MLU370-X8", "| 0     /   MLU370-X8")
    with pytest.raises(ValueError, match="card 0 twice"):
        parse_cnmon(text)


def test_header_without_cards_lists_nothing() -> None:
    lines = recorded(X8).splitlines()
    header_only = "\n".join(lines[:6])  # the frame, title and header, no card block
    assert parse_cnmon(header_only) == []
    probe = _probe(header_only)
    assert not probe.available()
    assert probe.unavailable_reason == f"{sys.executable} lists no device"


def test_probe_describes_each_card() -> None:
    probe = _probe(recorded(X8))
    assert probe.available() and probe.unavailable_reason == ""
    devices = probe.probe()
    assert [d.device_id for d in devices] == ["mlu0", "mlu1"]
    assert [d.torch_device for d in devices] == ["mlu:0", "mlu:1"]
    mlu1 = devices[1]
    assert (mlu1.kind, mlu1.vendor, mlu1.model) == ("npu", "cambricon", "MLU370-X8")
    assert mlu1.memory_bytes == 23374 * 2**20
    assert mlu1.extra == {
        "index": "1",
        "bus_id": "0000:3D:00.0",
        "memory_free_bytes": str(23374 * 2**20),
        "tflops_precision": "fp16",
        "tflops_source": "table",
    }
    assert mlu1.tflops == 48.0
    assert (mlu1.slices, mlu1.sharing, mlu1.simulated) == (1, "exclusive", False)
    assert CambriconProbe.describes(mlu1)


def test_probe_of_the_v4_layout_and_an_unlisted_model() -> None:
    devices = _probe(recorded(X4_V4), slices=2).probe()
    assert [d.device_id for d in devices] == ["mlu0", "mlu1", "mlu2"]
    mlu2 = devices[2]
    assert mlu2.extra["index"] == "2" and "bus_id" not in mlu2.extra
    assert mlu2.memory_bytes == 23308 * 2**20
    assert (mlu2.tflops, mlu2.extra["tflops_source"]) == (1.0, "default")
    assert (mlu2.slices, mlu2.sharing) == (2, "time")


def test_readings_carry_utilisation_and_memory_in_use() -> None:
    probe = _probe(_busy_x8())
    readings = probe.readings()
    assert set(readings) == {"mlu0", "mlu1"}
    assert readings["mlu0"].utilisation == 0.0
    assert readings["mlu0"].memory_used_bytes == 0
    assert readings["mlu1"].utilisation == pytest.approx(0.57)
    assert readings["mlu1"].memory_used_bytes == 12000 * 2**20
    assert probe.utilisation() == {"mlu0": 0.0, "mlu1": pytest.approx(0.57)}


def test_slice_environment_narrows_to_the_card() -> None:
    mlu1 = _probe(recorded(X8)).probe()[1]
    assert CambriconProbe.slice_environment(mlu1, 0) == {
        "CUDA_VISIBLE_DEVICES": "",
        "MLU_VISIBLE_DEVICES": "1",
    }
    assert CambriconProbe.worker_torch_device(mlu1) == "mlu:0"


def test_runner_receives_the_resolved_binary_and_timeout() -> None:
    calls: list[tuple[list[str], float]] = []

    def runner(command: list[str], timeout: float) -> str:
        calls.append((command, timeout))
        return recorded(X8)

    assert len(CambriconProbe(binary=sys.executable, timeout=2.5, run=runner).probe()) == 2
    assert calls == [([sys.executable], 2.5)]


def test_failing_tool_is_not_available() -> None:
    def failing(command: list[str], timeout: float) -> str:
        raise RuntimeError("`cnmon` exited with status 1: cndev init failed")

    probe = CambriconProbe(binary=sys.executable, run=failing)
    assert not probe.available()
    assert probe.unavailable_reason.startswith(f"{sys.executable} unusable: ")
    assert "cndev init failed" in probe.unavailable_reason
    assert probe.readings() == {} and probe.utilisation() == {}


def test_garbage_output_is_not_available_and_raises_when_probed() -> None:
    probe = _probe("Segmentation fault\n")
    assert not probe.available()
    assert "no card table" in probe.unavailable_reason
    with pytest.raises(ValueError, match="cnmon"):
        probe.probe()


def test_missing_binary_is_not_available() -> None:
    probe = CambriconProbe(binary="/nonexistent/cnmon")
    assert not probe.available()
    assert "not on PATH" in probe.unavailable_reason
