"""Hygon DCUs from recorded hy-smi / DTK rocm-smi JSON (tests/fakes/hygon/SOURCES.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from anypu.devices._hygon import HygonProbe

FAKES = Path(__file__).parent.parent / "fakes" / "hygon"
MIB = 1 << 20


def _text(name: str) -> str:
    return (FAKES / name).read_text()


def test_dcu_and_hcu_labels_in_mib() -> None:
    (k100,) = HygonProbe.parse(_text("dtk_rocm_smi_k100ai_dtk24043.json"))
    assert (k100.index, k100.name) == (0, "DCU xxxx")  # name redacted in the recording
    assert k100.memory_total_bytes == 65520 * MIB and k100.memory_used_bytes == 2 * MIB
    assert k100.utilisation == 0.0
    (hcu,) = HygonProbe.parse(_text("dtk_rocm_smi_k100ai_hcu_gpustack_docstring.json"))
    assert hcu.name == "K100_AI" and hcu.utilisation == 0.0
    (z100,) = HygonProbe.parse(_text("dtk_rocm_smi_z100l_gpustack_docstring.json"))
    assert z100.name == "Z100L" and z100.memory_total_bytes == 32752 * MIB


def test_json_with_missing_commas_and_empty_keys_is_still_read() -> None:
    cards = HygonProbe.parse(_text("hy_smi_json_bw_2card_malformed.txt"))
    assert [c.index for c in cards] == [0, 1] and {c.name for c in cards} == {"BW"}
    assert cards[0].memory_used_bytes == 64169 * MIB and cards[1].memory_used_bytes == 64104 * MIB


def test_the_probe_describes_dcus_and_narrows_a_worker_with_hip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = _text("hy_smi_json_bw_2card_malformed.txt")
    probe = HygonProbe(binary=sys.executable, run=lambda command, timeout: text)
    assert probe.available()
    devices = probe.probe()
    assert [d.device_id for d in devices] == ["dcu0", "dcu1"]
    assert devices[1].torch_device == "cuda:1" and devices[1].vendor == "hygon"
    assert HygonProbe.slice_environment(devices[1], 0) == {"HIP_VISIBLE_DEVICES": "1"}
    assert HygonProbe.worker_torch_device(devices[1]) == "cuda:0"
    assert probe.readings()["dcu0"].memory_used_bytes == 64169 * MIB


def test_the_default_table_is_not_what_the_probe_reads() -> None:
    with pytest.raises(ValueError, match="not rocm-smi JSON"):
        HygonProbe.parse(_text("hy_smi_8dcu_busy_dtk24043.txt"))
