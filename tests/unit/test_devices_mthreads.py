"""MooreThreadsProbe on recorded `mthreads-gmi` tables (tests/fakes/mthreads/), through an
injected runner."""

from __future__ import annotations

import sys

import pytest

from anypu.devices._mthreads import MooreThreadsProbe, parse_mthreads_gmi
from anypu.devices._tool import ToolDevice, mib
from tests.fakes import recorded

S80 = "mthreads/mthreads_gmi_v1.14.0_s80.txt"
S4000_FAQ = "mthreads/mthreads_gmi_v1.12.2_s4000_faq.txt"
S5000 = "mthreads/mthreads_gmi_v2.4.1_s5000_8card.txt"


def _probe(text: str, *, slices: int = 1) -> MooreThreadsProbe:
    return MooreThreadsProbe(
        binary=sys.executable, slices=slices, run=lambda command, timeout: text
    )


def _busy_s5000() -> str:
    """The S5000 recording with GPU 5 at work (its idle values swapped for busy ones)."""
    text = recorded(S5000)
    idle = "|00000000:ba:00.0    |0%    0MiB(81920MiB)"
    assert text.count(idle) == 1
    return text.replace(idle, "|00000000:ba:00.0    |63%   40960MiB(81920MiB)")


def test_parse_v1_14_0_s80() -> None:
    assert parse_mthreads_gmi(recorded(S80)) == [
        ToolDevice(0, "MTT S80", mib(16384), mib(2), 0.0, "00000000:04:00.0"),
    ]


def test_default_fixture_is_the_s80_table() -> None:
    assert parse_mthreads_gmi(recorded("mthreads/mthreads_gmi.txt")) == parse_mthreads_gmi(
        recorded(S80)
    )


def test_parse_v1_12_2_s4000_fault_example_as_printed() -> None:
    # The vendor FAQ's IOMMU fault: 32768MiB total on a 48 GB card, more used than total;
    # the paste ends after the card block. The parser reports what the tool printed.
    assert parse_mthreads_gmi(recorded(S4000_FAQ)) == [
        ToolDevice(0, "MTT S4000", mib(32768), mib(44302), 0.88, "00000000:08:00.0"),
    ]


def test_parse_v2_4_1_s5000_eight_cards_with_the_perf_column() -> None:
    buses = ["18", "3a", "4b", "5c", "9a", "ba", "ca", "da"]
    assert parse_mthreads_gmi(recorded(S5000)) == [
        ToolDevice(index, "MTT S5000", mib(81920), 0, 0.0, f"00000000:{bus}:00.0")
        for index, bus in enumerate(buses)
    ]


def test_parse_reads_utilisation_and_memory_in_use() -> None:
    gpu5 = parse_mthreads_gmi(_busy_s5000())[5]
    assert gpu5.index == 5
    assert gpu5.utilisation == pytest.approx(0.63)
    assert gpu5.memory_used_bytes == mib(40960)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mthreads-gmi: command not found\n",
        "0    MTT S80        |00000000:04:00.0    |0%    2MiB(16384MiB)\n",  # no header
        recorded("cambricon/cnmon.txt"),
        recorded("enflame/efsmi.txt"),
    ],
)
def test_parse_rejects_text_that_is_not_mthreads_gmi(text: str) -> None:
    with pytest.raises(ValueError, match="mthreads-gmi"):
        parse_mthreads_gmi(text)


def test_unreadable_memory_is_an_error_not_a_missing_gpu() -> None:
    text = recorded(S80).replace("2MiB(16384MiB)", "N/A")
    with pytest.raises(ValueError, match="GPU 0 .*memory"):
        parse_mthreads_gmi(text)


def test_a_gpu_line_cut_short_is_an_error() -> None:
    text = recorded(S80).replace("|0%    2MiB(16384MiB)", "")
    with pytest.raises(ValueError, match="GPU 0 .*cut short"):
        parse_mthreads_gmi(text)


def test_a_gpu_listed_twice_is_an_error() -> None:
    text = recorded(S5000).replace("1    MTT S5000", "0    MTT S5000")
    with pytest.raises(ValueError, match="GPU 0 twice"):
        parse_mthreads_gmi(text)


def test_process_rows_are_not_gpus() -> None:
    text = recorded(S80).replace(
        "   No running processes found",
        "0    4242      python3                              1024MiB",
    )
    assert len(parse_mthreads_gmi(text)) == 1


def test_probe_describes_each_gpu() -> None:
    probe = _probe(recorded(S5000))
    assert probe.available() and probe.unavailable_reason == ""
    devices = probe.probe()
    assert [d.device_id for d in devices] == [f"gpu{i}" for i in range(8)]
    assert [d.torch_device for d in devices] == [f"musa:{i}" for i in range(8)]
    gpu3 = devices[3]
    assert (gpu3.kind, gpu3.vendor, gpu3.model) == ("gpu", "mthreads", "MTT S5000")
    assert gpu3.memory_bytes == 81920 * 2**20
    assert gpu3.extra == {
        "index": "3",
        "bus_id": "00000000:5c:00.0",
        "memory_free_bytes": str(81920 * 2**20),
        "tflops_precision": "fp32",
        "tflops_source": "default",  # no sourced S5000 figure
    }
    assert gpu3.tflops == 1.0
    assert MooreThreadsProbe.describes(gpu3)


def test_probe_takes_tflops_from_the_table() -> None:
    s80 = _probe(recorded(S80)).probe()[0]
    assert (s80.tflops, s80.extra["tflops_source"]) == (14.4, "table")
    assert s80.extra["memory_free_bytes"] == str((16384 - 2) * 2**20)
    s4000 = _probe(recorded(S4000_FAQ), slices=2).probe()[0]
    assert s4000.tflops == 25.0
    assert (s4000.slices, s4000.sharing) == (2, "time")


def test_readings_carry_utilisation_and_memory_in_use() -> None:
    probe = _probe(_busy_s5000())
    readings = probe.readings()
    assert set(readings) == {f"gpu{i}" for i in range(8)}
    assert readings["gpu5"].utilisation == pytest.approx(0.63)
    assert readings["gpu5"].memory_used_bytes == 40960 * 2**20
    assert readings["gpu0"].utilisation == 0.0
    assert readings["gpu0"].memory_used_bytes == 0
    assert probe.utilisation()["gpu5"] == pytest.approx(0.63)


def test_slice_environment_narrows_to_the_gpu() -> None:
    gpu6 = _probe(recorded(S5000)).probe()[6]
    assert MooreThreadsProbe.slice_environment(gpu6, 0) == {
        "CUDA_VISIBLE_DEVICES": "",
        "MUSA_VISIBLE_DEVICES": "6",
    }
    assert MooreThreadsProbe.worker_torch_device(gpu6) == "musa:0"


def test_runner_receives_the_resolved_binary_and_timeout() -> None:
    calls: list[tuple[list[str], float]] = []

    def runner(command: list[str], timeout: float) -> str:
        calls.append((command, timeout))
        return recorded(S80)

    assert len(MooreThreadsProbe(binary=sys.executable, timeout=4.0, run=runner).probe()) == 1
    assert calls == [([sys.executable], 4.0)]


def test_failing_tool_is_not_available() -> None:
    def failing(command: list[str], timeout: float) -> str:
        raise RuntimeError("`mthreads-gmi` exited with status 255: Failed to initialize MTML")

    probe = MooreThreadsProbe(binary=sys.executable, run=failing)
    assert not probe.available()
    assert probe.unavailable_reason.startswith(f"{sys.executable} unusable: ")
    assert "Failed to initialize MTML" in probe.unavailable_reason
    assert probe.readings() == {} and probe.utilisation() == {}


def test_garbage_output_is_not_available_and_raises_when_probed() -> None:
    probe = _probe("Segmentation fault\n")
    assert not probe.available()
    assert "no GPU table" in probe.unavailable_reason
    with pytest.raises(ValueError, match="mthreads-gmi"):
        probe.probe()


def test_missing_binary_is_not_available() -> None:
    probe = MooreThreadsProbe(binary="/nonexistent/mthreads-gmi")
    assert not probe.available()
    assert "not on PATH" in probe.unavailable_reason
