"""AMD GPUs from recorded amd-smi and rocm-smi output (tests/fakes/amd/SOURCES.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from anypu.devices._amd import AmdProbe, parse_amd_smi, parse_rocm_smi_json

FAKES = Path(__file__).parent.parent / "fakes" / "amd"
MIB = 1 << 20


def _text(name: str) -> str:
    return (FAKES / name).read_text()


def test_amd_smi_static_and_metric_are_joined_on_the_gpu_index() -> None:
    (gpu,) = parse_amd_smi(_text("amd_smi_static_rx6600.json"), _text("amd_smi_metric_rx6600.json"))
    assert gpu.index == 0 and gpu.name == "Navi 23 [Radeon RX 6600/6600 XT"
    assert gpu.memory_total_bytes == 8176 * MIB and gpu.memory_used_bytes == 202 * MIB
    assert gpu.utilisation == pytest.approx(0.01) and gpu.bus_id == "0000:0b:00.0"


def test_amd_smi_26_wraps_its_gpus_and_may_lack_a_bdf() -> None:
    (gpu,) = parse_amd_smi(_text("amd_smi_static_mi210.json"))
    assert gpu.name == "AMD Instinct MI210" and gpu.memory_total_bytes == 65520 * MIB
    assert gpu.memory_used_bytes is None and gpu.utilisation is None and gpu.bus_id == ""


def test_rocm_smi_json_in_bytes() -> None:
    (gpu,) = parse_rocm_smi_json(_text("rocm_smi_productname_use_meminfo_rx7900xt.json"))
    assert (gpu.index, gpu.name) == (0, "Radeon RX 7900 XT")
    assert gpu.memory_total_bytes == 21458059264 and gpu.memory_used_bytes == 27856896
    assert gpu.utilisation == 0.0
    (busy,) = parse_rocm_smi_json(_text("rocm_smi_rx7800xt_rocm624.json"))
    assert busy.utilisation == 1.0 and busy.memory_used_bytes == 11615076352


def test_not_amd_output_is_refused() -> None:
    with pytest.raises(ValueError, match="not amd-smi JSON"):
        parse_amd_smi("{}")
    with pytest.raises(ValueError, match="not amd-smi JSON"):
        parse_amd_smi("garbage")
    with pytest.raises(ValueError, match="not rocm-smi JSON"):
        parse_rocm_smi_json("GPU[0] : nothing")


def _probe(monkeypatch: pytest.MonkeyPatch, amd_smi: bool) -> AmdProbe:
    present = {"amd-smi": sys.executable} if amd_smi else {"rocm-smi": sys.executable}
    monkeypatch.setattr("anypu.devices._amd.shutil.which", present.get)
    outputs = {
        "static": _text("amd_smi_static_rx6600.json"),
        "metric": _text("amd_smi_metric_rx6600.json"),
        "--showproductname": _text("rocm_smi_productname_use_meminfo_rx7900xt.json"),
    }
    return AmdProbe(run=lambda command, timeout: outputs[command[1]])


def test_the_probe_prefers_amd_smi_and_falls_back_to_rocm_smi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (device,) = _probe(monkeypatch, amd_smi=True).probe()
    assert (device.device_id, device.torch_device, device.vendor) == ("gpu0", "cuda:0", "amd")
    assert device.memory_bytes == 8176 * MIB and device.extra["index"] == "0"
    assert device.extra["tflops_source"] == "default"  # Radeon: no comparable figure
    probe = _probe(monkeypatch, amd_smi=False)
    (older,) = probe.probe()
    assert older.model == "Radeon RX 7900 XT" and older.memory_bytes == 21458059264
    assert probe.readings()["gpu0"].memory_used_bytes == 27856896


def test_a_worker_is_narrowed_by_rocr_and_sees_its_gpu_as_cuda_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (device,) = _probe(monkeypatch, amd_smi=True).probe()
    environment = AmdProbe.slice_environment(device, 0)
    assert environment["ROCR_VISIBLE_DEVICES"] == "0" and environment["HIP_VISIBLE_DEVICES"] == "0"
    assert AmdProbe.worker_torch_device(device) == "cuda:0"


def test_no_tool_or_a_failing_tool_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("anypu.devices._amd.shutil.which", lambda name: None)
    probe = AmdProbe()
    assert not probe.available() and "neither amd-smi nor rocm-smi" in probe.unavailable_reason
    monkeypatch.setattr("anypu.devices._amd.shutil.which", lambda name: sys.executable)

    def broken(command: list[str], timeout: float) -> str:
        raise RuntimeError("`amd-smi static --json` exited with status 1: no GPU")

    failing = AmdProbe(run=broken)
    assert not failing.available() and "exited with status 1" in failing.unavailable_reason
    assert failing.readings() == {}
