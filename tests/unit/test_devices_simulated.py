"""Simulated devices from a devices file, including every mistake a user can make."""

from __future__ import annotations

from pathlib import Path

import pytest

from anypu.devices import DEVICE_KINDS, load_devices_file, parse_devices, parse_size
from anypu.errors import ConfigError

EXAMPLE = """\
devices:
  - {kind: gpu, vendor: nvidia, model: A100-SXM4-40GB, memory: 40GiB, tflops: 156}
  - {kind: npu, vendor: huawei, model: Ascend-910B, memory: 64GiB, tflops: 320}
"""

GOOD = {"kind": "gpu", "vendor": "nvidia", "model": "A100", "memory": "40GiB", "tflops": 156}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "devices.yaml"
    path.write_text(text)
    return path


def test_the_documented_example(tmp_path: Path) -> None:
    declared = load_devices_file(_write(tmp_path, EXAMPLE))
    assert declared.include_host is True
    gpu, npu = declared.devices
    assert (gpu.device_id, gpu.kind, gpu.vendor, gpu.model) == (
        "gpu0",
        "gpu",
        "nvidia",
        "A100-SXM4-40GB",
    )
    assert gpu.memory_bytes == 40 * 2**30
    assert gpu.tflops == 156.0
    assert gpu.simulated and gpu.torch_device == "cpu"
    assert gpu.describe() == "gpu nvidia A100-SXM4-40GB 40.0 GiB 156 TFLOPS (simulated on cpu)"
    assert (npu.device_id, npu.memory_bytes, npu.tflops) == ("npu0", 64 * 2**30, 320.0)
    assert gpu.extra["declared_in"] == str(tmp_path / "devices.yaml")


def test_optional_keys_count_slices_threads_and_include_host(tmp_path: Path) -> None:
    text = (
        "include_host: false\n"
        "devices:\n"
        "  - {kind: gpu, vendor: nvidia, model: T4, memory: 16GB, tflops: 8.1, count: 3, slices: 2, threads: 2}\n"
        "  - {kind: cpu, vendor: arm, model: Cortex-A78, memory: 8589934592, tflops: 0.2}\n"
    )
    declared = load_devices_file(_write(tmp_path, text))
    assert declared.include_host is False
    ids = [d.device_id for d in declared.devices]
    assert ids == ["gpu0", "gpu1", "gpu2", "cpu0"]
    t4 = declared.devices[0]
    assert (t4.memory_bytes, t4.slices, t4.threads, t4.sharing) == (16 * 10**9, 2, 2, "time")
    assert t4.slice_memory_bytes == 8 * 10**9
    assert declared.devices[3].memory_bytes == 8 * 2**30


def test_empty_device_list_is_allowed() -> None:
    assert parse_devices({"devices": []}).devices == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("40GiB", 40 * 2**30),
        ("512MiB", 512 * 2**20),
        ("8GB", 8 * 10**9),
        ("1.5TiB", int(1.5 * 2**40)),
        ("64 gib", 64 * 2**30),
        ("1073741824", 2**30),
        (1073741824, 2**30),
        (2.0**30, 2**30),
        ("100B", 100),
        ("3KiB", 3072),
    ],
)
def test_parse_size(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["40 gigs", "GiB", "-5GiB", "1e3GiB", "", True, None, 1.5, [1]])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="40GiB"):
        parse_size(text)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"(?s)nope\.yaml does not exist.*devices:"):
        load_devices_file(path)


def test_invalid_yaml_says_where(tmp_path: Path) -> None:
    path = _write(tmp_path, "devices:\n  - {kind: gpu, vendor: [\n")
    with pytest.raises(ConfigError, match=r"devices\.yaml: not valid YAML at line \d+, column \d+"):
        load_devices_file(path)


def test_a_directory_is_not_a_devices_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_devices_file(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must be a mapping with a 'devices' list"),
        ("- {kind: gpu}\n", "must be a mapping with a 'devices' list"),
        ("hosts: []\n", "must be a mapping with a 'devices' list"),
        (
            "devices: []\nextra: 1\n",
            "unknown top-level key 'extra'; allowed keys are devices, include_host",
        ),
        ("devices: {kind: gpu}\n", "'devices' must be a list"),
        ("devices: []\ninclude_host: maybe\n", "include_host must be true or false, got 'maybe'"),
    ],
)
def test_file_shape_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_devices_file(_write(tmp_path, text))
    assert str(tmp_path / "devices.yaml") in str(info.value)
    assert message in str(info.value)


def _entry_error(**changes: object) -> str:
    entry = {**GOOD, **changes}
    entry = {key: value for key, value in entry.items() if value is not _DROP}
    with pytest.raises(ConfigError) as info:
        parse_devices({"devices": [GOOD, entry]}, source="nodes/edge.yaml")
    return str(info.value)


_DROP = object()


@pytest.mark.parametrize(
    ("changes", "field", "hint"),
    [
        ({"colour": "red"}, "colour", "allowed keys are kind, vendor, model, memory, tflops"),
        ({"kind": _DROP}, "kind", "is required"),
        ({"tflops": _DROP}, "tflops", "is required"),
        ({"kind": "fpga"}, "kind", "must be one of " + ", ".join(DEVICE_KINDS) + ", got 'fpga'"),
        ({"kind": "GPU"}, "kind", "must be one of"),
        ({"vendor": ""}, "vendor", "non-empty name"),
        ({"model": None}, "model", "non-empty name"),
        ({"memory": "40 gigs"}, "memory", "expected a size like 40GiB, 512MiB, 8GB or plain bytes"),
        ({"memory": -1}, "memory", "between 1 byte and 1PiB"),
        ({"memory": 0}, "memory", "between 1 byte and 1PiB"),
        ({"memory": "4096TiB"}, "memory", "between 1 byte and 1PiB"),
        ({"memory": float("nan")}, "memory", "whole number of bytes"),
        ({"tflops": -3}, "tflops", "must be a number above 0"),
        ({"tflops": 0}, "tflops", "must be a number above 0"),
        ({"tflops": float("nan")}, "tflops", "must be a number above 0"),
        ({"tflops": float("inf")}, "tflops", "must be a number above 0"),
        ({"tflops": 5e9}, "tflops", "at most 1e+06"),
        ({"tflops": "fast"}, "tflops", "(e.g. 156)"),
        ({"tflops": True}, "tflops", "must be a number"),
        ({"slices": 0}, "slices", "whole number from 1 to 1024"),
        ({"slices": 2.5}, "slices", "whole number from 1 to 1024"),
        ({"count": -1}, "count", "whole number from 1 to 4096"),
        ({"count": True}, "count", "whole number from 1 to 4096"),
        ({"threads": 100000}, "threads", "whole number from 1 to 1024"),
    ],
)
def test_entry_errors_name_file_index_and_field(
    changes: dict[str, object], field: str, hint: str
) -> None:
    message = _entry_error(**changes)
    assert message.startswith(f"nodes/edge.yaml: devices[1].{field}: ")
    assert hint in message


def test_non_mapping_entry() -> None:
    with pytest.raises(ConfigError, match=r"x\.yaml: devices\[0\]: each entry must be a mapping"):
        parse_devices({"devices": ["gpu"]}, source="x.yaml")


def test_yaml_errors_from_a_real_file_name_the_entry(tmp_path: Path) -> None:
    text = EXAMPLE + "  - {kind: tpu, vendor: google, model: v5e, memory: 16GiB, tflops: NaN}\n"
    path = _write(tmp_path, text.replace("NaN", ".nan"))
    with pytest.raises(ConfigError, match=r"devices\.yaml: devices\[2\]\.tflops: must be a number"):
        load_devices_file(path)
