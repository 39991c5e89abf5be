"""EnflameProbe on recorded `efsmi` tables (tests/fakes/enflame/), through an injected runner."""

from __future__ import annotations

import sys

import pytest

from anypu.devices._enflame import EnflameProbe, parse_efsmi
from anypu.devices._tool import ToolDevice, mib
from tests.fakes import recorded

V1_2 = "enflame/efsmi_v1.2.0.301_s60.txt"
V1_4 = "enflame/efsmi_v1.4.0.505_s60_redacted.txt"
V1_6 = "enflame/efsmi_v1.6.3.12_s60g.txt"
QUERY = "enflame/efsmi_q_v1.4.3.4_s60_zstack_comment.txt"


def _probe(text: str, *, slices: int = 1) -> EnflameProbe:
    return EnflameProbe(binary=sys.executable, slices=slices, run=lambda command, timeout: text)


def _busy_v1_2() -> str:
    """The 1.2 recording with card 1 at work (its idle DUsed swapped for a busy one)."""
    text = recorded(V1_2)
    idle = "|   0.0%      C807J40510285 |"
    assert text.count(idle) == 1
    return text.replace(idle, "|  42.5%      C807J40510285 |")


def test_parse_v1_2_0_301_s60() -> None:
    assert parse_efsmi(recorded(V1_2)) == [
        ToolDevice(0, "S60", mib(49120), None, 0.0, "00:01:00.0"),
        ToolDevice(1, "S60", mib(42976), None, 0.0, "00:09:00.0"),
    ]


def test_default_fixture_is_the_v1_2_table() -> None:
    assert parse_efsmi(recorded("enflame/efsmi.txt")) == parse_efsmi(recorded(V1_2))


def test_parse_v1_4_0_505_with_redacted_serials_and_missing_power() -> None:
    assert parse_efsmi(recorded(V1_4)) == [
        ToolDevice(0, "Enflame S60", mib(49120), None, 0.0, "00:3d:00.0"),
        ToolDevice(1, "Enflame S60", mib(49120), None, 0.0, "00:3e:00.0"),
    ]


def test_parse_v1_6_3_12_s60g_newer_layout() -> None:
    # both blocks carry the same serial number (as published); the cards are still two
    assert parse_efsmi(recorded(V1_6)) == [
        ToolDevice(0, "Enflame S60G", mib(23552), None, 0.0, "00:2e:00.0"),
        ToolDevice(1, "Enflame S60G", mib(23552), None, 0.0, "00:2f:00.0"),
    ]


def test_parse_reads_dused_as_utilisation_and_no_memory_in_use() -> None:
    card1 = parse_efsmi(_busy_v1_2())[1]
    assert card1.utilisation == pytest.approx(0.425)
    assert card1.memory_used_bytes is None


def test_query_output_is_not_the_table() -> None:
    # `efsmi -q` (here an abridged comment block) is another command's output
    with pytest.raises(ValueError, match="efsmi"):
        parse_efsmi(recorded(QUERY))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "efsmi: command not found\n",
        "+------+\n| hello |\n+------+\n",
        recorded("cambricon/cnmon.txt"),
        recorded("mthreads/mthreads_gmi.txt"),
    ],
)
def test_parse_rejects_text_that_is_not_efsmi(text: str) -> None:
    with pytest.raises(ValueError, match="efsmi"):
        parse_efsmi(text)


def test_a_card_cut_short_is_an_error_not_a_missing_device() -> None:
    lines = recorded(V1_6).splitlines()
    cut = "\n".join(lines[: lines.index(next(line for line in lines if "00:2f:00.0" in line)) + 1])
    with pytest.raises(ValueError, match="card 1 .*second line"):
        parse_efsmi(cut)


def test_unreadable_memory_is_an_error() -> None:
    text = recorded(V1_2).replace("| 49120MiB Disable|", "| N/A      Disable|")
    with pytest.raises(ValueError, match="card 0 .*memory"):
        parse_efsmi(text)


def test_a_card_listed_twice_is_an_error() -> None:
    text = recorded(V1_6).replace("| 1      Enflame S60G", "| 0      Enflame S60G")
    with pytest.raises(ValueError, match="card 0 twice"):
        parse_efsmi(text)


def test_probe_describes_each_card() -> None:
    probe = _probe(recorded(V1_2))
    assert probe.available() and probe.unavailable_reason == ""
    devices = probe.probe()
    assert [d.device_id for d in devices] == ["gcu0", "gcu1"]
    assert [d.torch_device for d in devices] == ["gcu:0", "gcu:1"]
    gcu1 = devices[1]
    assert (gcu1.kind, gcu1.vendor, gcu1.model) == ("npu", "enflame", "S60")
    assert gcu1.memory_bytes == 42976 * 2**20
    # no memory in use in the table, so no memory_free_bytes; no sourced TFLOPS
    assert gcu1.extra == {
        "index": "1",
        "bus_id": "00:09:00.0",
        "tflops_precision": "fp16",
        "tflops_source": "default",
    }
    assert gcu1.tflops == 1.0
    assert EnflameProbe.describes(gcu1)


def test_probe_with_slices_shares_by_time() -> None:
    gcu0 = _probe(recorded(V1_6), slices=3).probe()[0]
    assert (gcu0.model, gcu0.slices, gcu0.sharing) == ("Enflame S60G", 3, "time")


def test_readings_carry_utilisation_only() -> None:
    probe = _probe(_busy_v1_2())
    readings = probe.readings()
    assert set(readings) == {"gcu0", "gcu1"}
    assert readings["gcu1"].utilisation == pytest.approx(0.425)
    assert readings["gcu0"].utilisation == 0.0
    assert readings["gcu0"].memory_used_bytes is None
    assert probe.utilisation() == {"gcu0": 0.0, "gcu1": pytest.approx(0.425)}


def test_slice_environment_narrows_to_the_card() -> None:
    gcu1 = _probe(recorded(V1_2)).probe()[1]
    assert EnflameProbe.slice_environment(gcu1, 0) == {
        "CUDA_VISIBLE_DEVICES": "",
        "TOPS_VISIBLE_DEVICES": "1",
    }
    assert EnflameProbe.worker_torch_device(gcu1) == "gcu:0"


def test_runner_receives_the_resolved_binary_and_timeout() -> None:
    calls: list[tuple[list[str], float]] = []

    def runner(command: list[str], timeout: float) -> str:
        calls.append((command, timeout))
        return recorded(V1_4)

    assert len(EnflameProbe(binary=sys.executable, timeout=3.0, run=runner).probe()) == 2
    assert calls == [([sys.executable], 3.0)]


def test_failing_tool_is_not_available() -> None:
    def failing(command: list[str], timeout: float) -> str:
        raise RuntimeError("`efsmi` exited with status 1: Failed to open device")

    probe = EnflameProbe(binary=sys.executable, run=failing)
    assert not probe.available()
    assert probe.unavailable_reason.startswith(f"{sys.executable} unusable: ")
    assert "Failed to open device" in probe.unavailable_reason
    assert probe.readings() == {} and probe.utilisation() == {}


def test_garbage_output_is_not_available_and_raises_when_probed() -> None:
    probe = _probe("Segmentation fault\n")
    assert not probe.available()
    assert "no card table" in probe.unavailable_reason
    with pytest.raises(ValueError, match="efsmi"):
        probe.probe()


def test_missing_binary_is_not_available() -> None:
    probe = EnflameProbe(binary="/nonexistent/efsmi")
    assert not probe.available()
    assert "not on PATH" in probe.unavailable_reason
