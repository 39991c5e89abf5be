"""MetaxProbe and parse_mx_smi on recorded `mx-smi` outputs (tests/fakes/metax/SOURCES.md)."""

from __future__ import annotations

import sys

import pytest

from anypu.devices._metax import METAX_TFLOPS, MetaxProbe, parse_mx_smi
from anypu.devices._probe import Reading
from anypu.devices._tool import table_tflops
from tests.fakes import recorded

MIB = 2**20
V224 = "metax/mx_smi.txt"  # mx-smi 2.2.4, 8 x "MetaX C550"
V216 = "metax/mx_smi_2.1.6_mxc550.txt"  # mx-smi 2.1.6, 8 x "MXC550", older layout


def _probe(text: str, **options: int) -> MetaxProbe:
    return MetaxProbe(binary=sys.executable, run=lambda command, timeout: text, **options)


def test_parse_2_2_4_table() -> None:
    devices = parse_mx_smi(recorded(V224))
    assert [d.index for d in devices] == list(range(8))
    assert {d.name for d in devices} == {"MetaX C550"}
    assert [d.bus_id for d in devices] == [
        "0000:0f:00.0",
        "0000:34:00.0",
        "0000:48:00.0",
        "0000:5a:00.0",
        "0000:87:00.0",
        "0000:ae:00.0",
        "0000:c2:00.0",
        "0000:d7:00.0",
    ]
    assert {d.memory_total_bytes for d in devices} == {65536 * MIB}  # "858/65536 MiB"
    assert {d.memory_used_bytes for d in devices} == {858 * MIB}
    assert {d.utilisation for d in devices} == {0.0}  # "0%"


def test_parse_2_1_6_table_without_power_cap_or_state() -> None:
    devices = parse_mx_smi(recorded(V216))
    assert [d.index for d in devices] == list(range(8))
    assert {d.name for d in devices} == {"MXC550"}
    assert [d.bus_id for d in devices] == [
        "0000:2a:00.0",
        "0000:3a:00.0",
        "0000:4c:00.0",
        "0000:5c:00.0",
        "0000:aa:00.0",
        "0000:ba:00.0",
        "0000:ca:00.0",
        "0000:da:00.0",
    ]
    assert {d.memory_total_bytes for d in devices} == {65536 * MIB}
    assert {d.memory_used_bytes for d in devices} == {810 * MIB}  # "810/65536 MiB"
    assert {d.utilisation for d in devices} == {0.0}


def test_utilisation_is_a_fraction() -> None:
    text = recorded(V224).replace(
        "| 0000:5a:00.0        | 0%                   |",
        "| 0000:5a:00.0        | 57%                  |",
    )
    devices = parse_mx_smi(text)
    assert devices[3].utilisation == pytest.approx(0.57)
    assert devices[2].utilisation == 0.0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mx-smi: command not found\n",
        "+----+\n| hello |\n+----+\n",
        recorded("npu_smi_910b.txt"),
        recorded("iluvatar/ixsmi.txt"),
        recorded("kunlunxin/xpu_smi.txt"),
    ],
)
def test_parse_rejects_text_that_is_not_mx_smi(text: str) -> None:
    with pytest.raises(ValueError, match="mx-smi"):
        parse_mx_smi(text)


def test_an_unreadable_device_block_is_an_error_not_a_skip() -> None:
    text = recorded(V224).replace("| 858/65536 MiB       |", "| ???/65536 MiB       |", 1)
    with pytest.raises(ValueError, match="memory"):
        parse_mx_smi(text)


def test_fewer_devices_than_attached_is_an_error() -> None:
    lines = recorded(V224).splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("| 0    "))
    text = "".join(lines[:first] + lines[first + 3 :])  # device 0's two rows and rule gone
    with pytest.raises(ValueError, match="8 GPUs are attached but lists 7"):
        parse_mx_smi(text)


def test_probe_describes_every_gpu() -> None:
    probe = _probe(recorded(V224))
    assert probe.available(), probe.unavailable_reason
    devices = probe.probe()
    assert [d.device_id for d in devices] == [f"gpu{i}" for i in range(8)]
    assert [d.torch_device for d in devices] == [f"cuda:{i}" for i in range(8)]
    assert [d.extra["index"] for d in devices] == [str(i) for i in range(8)]
    gpu5 = devices[5]
    assert (gpu5.kind, gpu5.vendor, gpu5.model) == ("gpu", "metax", "MetaX C550")
    assert gpu5.memory_bytes == 64 * 2**30
    assert gpu5.extra["bus_id"] == "0000:ae:00.0"
    assert gpu5.extra["memory_free_bytes"] == str((65536 - 858) * MIB)
    # C550: MetaX publishes no per-precision figure, so the default (see METAX_TFLOPS).
    assert gpu5.tflops == 1.0
    assert gpu5.extra["tflops_source"] == "default"
    assert gpu5.extra["tflops_precision"] == "fp16"
    assert (gpu5.slices, gpu5.sharing) == (1, "exclusive")
    assert not gpu5.simulated
    assert probe.describes(gpu5)


def test_probe_runs_mx_smi_with_no_arguments() -> None:
    calls: list[tuple[list[str], float]] = []

    def run(command: list[str], timeout: float) -> str:
        calls.append((command, timeout))
        return recorded(V216)

    devices = MetaxProbe(binary=sys.executable, timeout=2.5, run=run).probe()
    assert [d.model for d in devices] == ["MXC550"] * 8
    assert calls == [([sys.executable], 2.5)]


def test_c500_is_in_the_tflops_table() -> None:
    text = recorded(V224).replace("MetaX C550", "MetaX C500")
    gpu0 = _probe(text, slices=2).probe()[0]
    assert gpu0.tflops == 280.0
    assert gpu0.extra["tflops_source"] == "table"
    assert (gpu0.slices, gpu0.sharing) == (2, "time")
    assert table_tflops("MXC500", METAX_TFLOPS) == 280.0
    assert table_tflops("MetaX C550", METAX_TFLOPS) is None
    assert table_tflops("MetaX C500X", METAX_TFLOPS) is None


def test_readings_carry_utilisation_and_memory_in_use() -> None:
    readings = _probe(recorded(V224)).readings()
    assert sorted(readings) == [f"gpu{i}" for i in range(8)]
    assert readings["gpu0"] == Reading(utilisation=0.0, memory_used_bytes=858 * MIB)
    assert _probe(recorded(V224)).utilisation() == {f"gpu{i}": 0.0 for i in range(8)}


def test_a_worker_is_narrowed_with_cuda_and_maca_variables() -> None:
    gpu3 = _probe(recorded(V224)).probe()[3]
    assert MetaxProbe.slice_environment(gpu3, 0) == {
        "CUDA_VISIBLE_DEVICES": "3",
        "MACA_VISIBLE_DEVICES": "3",
    }
    assert MetaxProbe.worker_torch_device(gpu3) == "cuda:0"


def test_failing_tool_is_not_available() -> None:
    def run(command: list[str], timeout: float) -> str:
        raise RuntimeError("`mx-smi` exited with status 1: failed to initialize mxsml")

    probe = MetaxProbe(binary=sys.executable, run=run)
    assert not probe.available()
    # The reason names the binary the probe was given (here the stand-in path).
    assert probe.unavailable_reason.startswith(f"{sys.executable} unusable:")
    assert "failed to initialize mxsml" in probe.unavailable_reason
    assert probe.readings() == {}
    assert probe.utilisation() == {}


def test_garbage_output_is_not_available() -> None:
    probe = _probe("garbage\n")
    assert not probe.available()
    assert "no device table" in probe.unavailable_reason
    with pytest.raises(ValueError):
        probe.probe()


def test_missing_binary_is_not_available() -> None:
    probe = MetaxProbe(binary="/nonexistent/mx-smi", run=lambda command, timeout: "")
    assert not probe.available()
    assert "not on PATH" in probe.unavailable_reason
