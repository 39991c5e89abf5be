"""AppleProbe and its parsers: the recorded system_profiler JSON (tests/fakes/apple/SOURCES.md)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import pytest

from anypu.devices._apple import (
    AppleGpu,
    AppleProbe,
    apple_tflops,
    parse_displays,
    parse_memsize,
)
from tests.fakes import recorded

# No recording of `sysctl -n hw.memsize` exists (SOURCES.md): this is the documented
# format, one byte count, with the 16 GiB value reported in jech/storrent issue 9.
MEMSIZE = "17179869184\n"
DISPLAYS = recorded("apple/system_profiler_displays.json")


def _runner(
    displays: str = DISPLAYS, memsize: str = MEMSIZE, calls: list[list[str]] | None = None
) -> Callable[[list[str], float], str]:
    def run(command: list[str], timeout: float) -> str:
        assert command[0] == sys.executable
        if calls is not None:
            calls.append(command[1:])
        if command[1:] == ["SPDisplaysDataType", "-json"]:
            return displays
        if command[1:] == ["-n", "hw.memsize"]:
            return memsize
        raise RuntimeError(f"unexpected command {command}")

    return run


def _mac(
    run: Callable[[list[str], float], str] | None = None,
    mps: bool = True,
    slices: int = 1,
) -> AppleProbe:
    return AppleProbe(
        slices=slices,
        run=run or _runner(),
        platform="darwin",
        mps_available=lambda: mps,
        system_profiler=sys.executable,
        sysctl=sys.executable,
    )


def test_parse_displays_of_an_m3_max() -> None:
    assert parse_displays(DISPLAYS) == [
        AppleGpu(model="Apple M3 Max", cores=40, vendor="sppci_vendor_Apple")
    ]


def test_parse_displays_reads_sppci_model_not_name() -> None:
    # Older macOS builds on M1 put "kHW_AppleM1Item" in _name (exelban/stats issue 394).
    entry = json.loads(DISPLAYS)["SPDisplaysDataType"][0]
    entry.update(_name="kHW_AppleM1Item", sppci_model="Apple M1", sppci_cores="8")
    (gpu,) = parse_displays(json.dumps({"SPDisplaysDataType": [entry]}))
    assert (gpu.model, gpu.cores) == ("Apple M1", 8)


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[]", '{"SPHardwareDataType": []}', '{"SPDisplaysDataType": [{}]}'],
)
def test_parse_displays_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="SPDisplaysDataType"):
        parse_displays(text)


def test_parse_memsize() -> None:
    # Documented forms only: `sysctl -n hw.memsize` and `sysctl hw.memsize`.
    assert parse_memsize(MEMSIZE) == 16 * 2**30
    assert parse_memsize("hw.memsize: 17179869184\n") == 16 * 2**30


@pytest.mark.parametrize("text", ["", "0", "-5", "16 GB", "sysctl: unknown oid 'hw.memsize'"])
def test_parse_memsize_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="hw.memsize"):
        parse_memsize(text)


def test_tflops_table_scales_the_m1_figures_by_cores() -> None:
    assert apple_tflops("Apple M1", 8) == 2.6
    assert apple_tflops("Apple M1 Pro", 16) == 5.2
    assert apple_tflops("Apple M1 Max", 32) == 10.4
    assert apple_tflops("Apple M1", 7) == 2.275
    assert apple_tflops("Apple M1", None) is None
    assert apple_tflops("Apple M3 Max", 40) is None  # no Apple figure found


def test_not_macos_is_not_available() -> None:
    probe = AppleProbe(platform="linux", mps_available=lambda: True)
    assert not probe.available()
    assert probe.unavailable_reason == "not macOS (platform is linux)"


def test_this_machine_is_not_a_mac_by_default() -> None:
    if sys.platform == "darwin":
        pytest.skip("runs on macOS")
    probe = AppleProbe()
    assert not probe.available()
    assert "not macOS" in probe.unavailable_reason


def test_mac_without_mps_is_not_available() -> None:
    probe = _mac(mps=False)
    assert not probe.available()
    assert probe.unavailable_reason == "MPS is not available"


def test_mac_with_mps_offers_one_mps_device() -> None:
    calls: list[list[str]] = []
    probe = _mac(run=_runner(calls=calls))
    assert probe.available(), probe.unavailable_reason
    (gpu,) = probe.probe()
    assert calls[-2:] == [["SPDisplaysDataType", "-json"], ["-n", "hw.memsize"]]
    assert (gpu.device_id, gpu.kind, gpu.vendor, gpu.model, gpu.torch_device) == (
        "gpu0",
        "gpu",
        "apple",
        "Apple M3 Max",
        "mps",
    )
    assert gpu.memory_bytes == 17179869184
    assert gpu.extra["cores"] == "40"
    assert gpu.extra["memory"] == "unified"
    assert (gpu.tflops, gpu.extra["tflops_source"]) == (1.0, "default")
    assert gpu.extra["tflops_precision"] == "fp32"
    assert (gpu.slices, gpu.sharing) == (1, "exclusive")
    assert AppleProbe.describes(gpu)


def test_slices_share_by_time_and_workers_need_no_environment() -> None:
    (gpu,) = _mac(slices=3).probe()
    assert (gpu.slices, gpu.sharing) == (3, "time")
    assert AppleProbe.slice_environment(gpu, 2) == {}
    assert AppleProbe.worker_torch_device(gpu) == "mps"


def test_no_utilisation_is_reported() -> None:
    probe = _mac()
    probe.probe()
    assert probe.utilisation() == {}
    assert probe.readings() == {}


def test_failing_tool_is_not_available() -> None:
    def run(command: list[str], timeout: float) -> str:
        raise RuntimeError("`system_profiler SPDisplaysDataType -json` exited with status 1")

    probe = _mac(run=run)
    assert not probe.available()
    assert "exited with status 1" in probe.unavailable_reason


def test_garbage_output_is_not_available() -> None:
    probe = _mac(run=_runner(displays="garbage"))
    assert not probe.available()
    assert "SPDisplaysDataType" in probe.unavailable_reason
    with pytest.raises(ValueError):
        probe.probe()


def test_a_mac_with_only_an_amd_gpu_is_not_available() -> None:
    amd = {"SPDisplaysDataType": [{"sppci_model": "AMD Radeon Pro 5500M"}]}
    probe = _mac(run=_runner(displays=json.dumps(amd)))
    assert not probe.available()
    assert "no Apple-silicon GPU" in probe.unavailable_reason


def test_missing_tool_is_not_available() -> None:
    probe = AppleProbe(
        platform="darwin",
        mps_available=lambda: True,
        system_profiler="no-such-system-profiler",
    )
    assert not probe.available()
    assert "not on PATH" in probe.unavailable_reason
