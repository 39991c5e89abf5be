"""IluvatarProbe, parse_ixsmi_csv and parse_ixsmi_table on recorded `ixsmi` outputs
(tests/fakes/iluvatar/SOURCES.md)."""

from __future__ import annotations

import sys

import pytest

from anypu.devices._iluvatar import (
    ILUVATAR_TFLOPS,
    QUERY_FIELDS,
    IluvatarProbe,
    parse_ixsmi_csv,
    parse_ixsmi_table,
)
from anypu.devices._probe import Reading
from anypu.devices._tool import table_tflops
from tests.fakes import recorded

MIB = 2**20
CSV = "iluvatar/ixsmi_query_gpu_noheader.csv"  # MR-V50 + MR-V100
TABLE_430 = "iluvatar/ixsmi.txt"  # IX-ML 4.3.0, 16 x BI-V150, fan N/A
TABLE_410 = "iluvatar/ixsmi_4.1.0_bi150.txt"  # IX-ML 4.1.0, 16 x BI-V150, fan 0%
TABLE_L = "iluvatar/ixsmi_l_1gpu_bi150s.txt"  # `ixsmi -l`, IX-ML 4.0.0, 1 x BI-V150S

#: The bus ids of both 16-chip recordings (the same server model, 8 boards of 2 chips).
BI_V150_BUS_IDS = [
    f"00000000:{bus}:00.0" for bus in "13 16 1C 1F 27 2A 34 37 3D 40 48 4B 54 57 64 67".split()
]


def _probe(text: str) -> IluvatarProbe:
    return IluvatarProbe(binary=sys.executable, run=lambda command, timeout: text)


# -- the CSV query -------------------------------------------------------------------------


def test_probe_runs_the_recorded_query() -> None:
    assert IluvatarProbe.arguments == (
        "--format=csv,noheader",
        "--query-gpu=index,name,memory.total,memory.used,utilization.gpu,temperature.gpu",
    )
    calls: list[tuple[list[str], float]] = []

    def run(command: list[str], timeout: float) -> str:
        calls.append((command, timeout))
        return recorded(CSV)

    assert len(IluvatarProbe(binary=sys.executable, timeout=4.0, run=run).probe()) == 2
    assert calls == [([sys.executable, *IluvatarProbe.arguments], 4.0)]
    assert QUERY_FIELDS[:2] == ("index", "name")


def test_parse_csv() -> None:
    mr_v50, mr_v100 = parse_ixsmi_csv(recorded(CSV))
    assert (mr_v50.index, mr_v50.name) == (0, "Iluvatar MR-V50")
    assert mr_v50.memory_total_bytes == 16384 * MIB
    assert mr_v50.memory_used_bytes == 116 * MIB
    assert mr_v50.utilisation == 0.0
    assert (mr_v100.index, mr_v100.name) == (1, "Iluvatar MR-V100")
    assert mr_v100.memory_total_bytes == 32768 * MIB
    assert mr_v100.memory_used_bytes == 27996 * MIB
    assert mr_v100.utilisation == 0.0
    assert mr_v50.bus_id == mr_v100.bus_id == ""  # the recorded query names no bus id


def test_csv_utilisation_is_a_fraction_and_unreported_fields_are_none() -> None:
    text = recorded(CSV).replace("27996 MiB, 0 %", "27996 MiB, 83 %")
    assert parse_ixsmi_csv(text)[1].utilisation == pytest.approx(0.83)
    text = recorded(CSV).replace("116 MiB, 0 %", "[N/A], [N/A]")
    mr_v50 = parse_ixsmi_csv(text)[0]
    assert (mr_v50.memory_used_bytes, mr_v50.utilisation) == (None, None)
    assert mr_v50.memory_total_bytes == 16384 * MIB


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "No devices were found\n",
        "index, name, memory.total [MiB], memory.used [MiB], utilization.gpu [%], "
        "temperature.gpu\n",  # a header row: the probe asks for noheader
        "0, Iluvatar MR-V50, 16384 MiB, 116 MiB\n",  # fields missing
        "0, Iluvatar MR-V50, lots, 116 MiB, 0 %, 30 C\n",
        recorded(TABLE_430),
    ],
)
def test_parse_csv_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ixsmi_csv(text)


def test_one_bad_row_fails_the_whole_read() -> None:
    text = recorded(CSV) + "2, Iluvatar MR-V100, 32768 MiB, ?, 0 %, 31 C\n"
    with pytest.raises(ValueError, match="memory.used"):
        parse_ixsmi_csv(text)


def test_probe_describes_every_gpu() -> None:
    probe = _probe(recorded(CSV))
    assert probe.available(), probe.unavailable_reason
    mr_v50, mr_v100 = probe.probe()
    assert [mr_v50.device_id, mr_v100.device_id] == ["gpu0", "gpu1"]
    assert [mr_v50.torch_device, mr_v100.torch_device] == ["cuda:0", "cuda:1"]
    assert [mr_v50.extra["index"], mr_v100.extra["index"]] == ["0", "1"]
    assert (mr_v100.kind, mr_v100.vendor, mr_v100.model) == ("gpu", "iluvatar", "Iluvatar MR-V100")
    assert mr_v50.memory_bytes == 16 * 2**30
    assert mr_v100.memory_bytes == 32 * 2**30
    assert mr_v100.extra["memory_free_bytes"] == str((32768 - 27996) * MIB)
    assert "bus_id" not in mr_v100.extra
    assert (mr_v100.tflops, mr_v100.extra["tflops_source"]) == (96.0, "table")
    assert (mr_v50.tflops, mr_v50.extra["tflops_source"]) == (1.0, "default")
    assert mr_v50.extra["tflops_precision"] == "fp16"
    assert probe.describes(mr_v100)


def test_readings_carry_utilisation_and_memory_in_use() -> None:
    readings = _probe(recorded(CSV)).readings()
    assert readings == {
        "gpu0": Reading(utilisation=0.0, memory_used_bytes=116 * MIB),
        "gpu1": Reading(utilisation=0.0, memory_used_bytes=27996 * MIB),
    }


def test_a_worker_is_narrowed_with_cuda_visible_devices() -> None:
    gpu1 = _probe(recorded(CSV)).probe()[1]
    assert IluvatarProbe.slice_environment(gpu1, 0) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert IluvatarProbe.worker_torch_device(gpu1) == "cuda:0"


def test_failing_tool_is_not_available() -> None:
    def run(command: list[str], timeout: float) -> str:
        raise RuntimeError("`ixsmi` exited with status 255: Failed to initialize IXML")

    probe = IluvatarProbe(binary=sys.executable, run=run)
    assert not probe.available()
    assert "unusable" in probe.unavailable_reason
    assert "Failed to initialize IXML" in probe.unavailable_reason
    assert probe.readings() == {}


def test_garbage_output_is_not_available() -> None:
    probe = _probe("garbage\n")
    assert not probe.available()
    assert "unreadable line 'garbage'" in probe.unavailable_reason
    with pytest.raises(ValueError):
        probe.probe()


def test_tflops_table_patterns() -> None:
    assert table_tflops("Iluvatar MR-V100", ILUVATAR_TFLOPS) == 96.0
    for unsourced in ("Iluvatar MR-V50", "Iluvatar BI-V150", "Iluvatar BI-V150S", "BI-V100"):
        assert table_tflops(unsourced, ILUVATAR_TFLOPS) is None


# -- the default table ---------------------------------------------------------------------


@pytest.mark.parametrize(("recording", "used_mib"), [(TABLE_430, 64), (TABLE_410, 116)])
def test_parse_16_chip_tables(recording: str, used_mib: int) -> None:
    devices = parse_ixsmi_table(recorded(recording))
    assert [d.index for d in devices] == list(range(16))
    assert {d.name for d in devices} == {"Iluvatar BI-V150"}
    assert [d.bus_id for d in devices] == BI_V150_BUS_IDS
    assert {d.memory_total_bytes for d in devices} == {32768 * MIB}
    assert {d.memory_used_bytes for d in devices} == {used_mib * MIB}
    assert {d.utilisation for d in devices} == {0.0}


def test_parse_ixsmi_l_single_gpu_without_timestamp() -> None:
    (device,) = parse_ixsmi_table(recorded(TABLE_L))
    assert (device.index, device.name, device.bus_id) == (
        0,
        "Iluvatar BI-V150S",
        "00000000:8A:00.0",
    )
    assert device.memory_total_bytes == 32768 * MIB
    assert device.memory_used_bytes == 114 * MIB
    assert device.utilisation == 0.0


def test_table_utilisation_is_the_first_value_of_its_cell() -> None:
    text = recorded(TABLE_430).replace(
        "| N/A  34C   P0    106W / 350W  | 64MiB / 32768MiB     | 0%        Default    |",
        "| N/A  34C   P0    106W / 350W  | 9000MiB / 32768MiB   | 75%       Default    |",
        1,
    )
    devices = parse_ixsmi_table(text)
    assert devices[3].utilisation == pytest.approx(0.75)
    assert devices[3].memory_used_bytes == 9000 * MIB
    assert devices[2].utilisation == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ixsmi: command not found\n",
        recorded(CSV),
        recorded("metax/mx_smi.txt"),
        recorded("kunlunxin/xpu_smi.txt"),
    ],
)
def test_parse_table_rejects_text_that_is_not_ixsmi(text: str) -> None:
    with pytest.raises(ValueError, match="ixsmi"):
        parse_ixsmi_table(text)


def test_an_unreadable_table_block_is_an_error_not_a_skip() -> None:
    text = recorded(TABLE_L).replace("| 114MiB / 32768MiB    |", "| 114MiB / ???MiB      |")
    with pytest.raises(ValueError, match="memory"):
        parse_ixsmi_table(text)
