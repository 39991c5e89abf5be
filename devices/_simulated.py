"""Simulated devices declared in a YAML file (``anypu agent --devices devices.yaml``).

::

    include_host: true          # optional; false = offer only the devices below
    devices:
      - {kind: gpu, vendor: nvidia, model: A100-SXM4-40GB, memory: 40GiB, tflops: 156}
      - {kind: npu, vendor: huawei, model: Ascend-910B, memory: 64GiB, tflops: 320, count: 2}

Required keys per entry: ``kind`` (one of ``DEVICE_KINDS``), ``vendor``, ``model``,
``memory`` (``40GiB``, ``512MiB``, ``8GB``, ``1.5TiB`` or plain bytes) and ``tflops``
(what the device is *declared* to deliver; jobs actually run on the CPU).  Optional:
``slices`` (≥ 1), ``count`` (repeat the entry), ``threads`` (CPU threads per slice of
the worker that runs its jobs), ``seats`` (≥ 1: offer the device whole, shared by jobs
that reserve the memory and compute they need, up to ``seats`` of them at once; not
together with ``slices``), ``lacks`` (a list of operators its backend is to lack, such as
``[aten::tanh]``: a model calling one is refused there before it runs, and placed on
another kind, as on a real backend missing a kernel).

Simulated devices have ``simulated=True`` and torch device ``cpu``.  The host's real
devices (its CPU, and any GPU/NPU the probes find) are offered alongside them unless the
file says ``include_host: false`` — so one laptop can play a GPU node while still
offering its own CPU, or, with ``include_host: false``, several agents on one machine
can each pretend to be a different node without offering the same CPU many times.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from anypu.devices._model import DEVICE_KINDS, Device
from anypu.errors import ConfigError

__all__ = ["SimulatedDevices", "load_devices_file", "parse_devices", "parse_size"]

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")

# Bounds that catch typos (a missing unit, an extra zero run) rather than real hardware:
# no single device has a pebibyte of memory or an exaflop of dense throughput.
_MAX_MEMORY = 2**50
_MAX_TFLOPS = 1_000_000.0
_MAX_INT = {"slices": 1024, "count": 4096, "threads": 1024, "seats": 1024}

_REQUIRED = ("kind", "vendor", "model", "memory", "tflops")
_OPTIONAL = ("slices", "count", "threads", "seats", "lacks")
_TOP_LEVEL = ("devices", "include_host")
_EXAMPLE = "{kind: gpu, vendor: nvidia, model: A100-SXM4-40GB, memory: 40GiB, tflops: 156}"


@dataclass(frozen=True)
class SimulatedDevices:
    """What a devices file declares: the devices, and whether real ones are offered too."""

    devices: tuple[Device, ...]
    include_host: bool = True


def parse_size(value: object) -> int:
    """Bytes from ``40GiB``/``512MiB``/``8GB``/``1.5TiB``/``1073741824``.

    Raises ValueError (with what is accepted) for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 40GiB, got {value!r}")
    if isinstance(value, int):
        number: float = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(
                f"expected a whole number of bytes or a size like 40GiB, got {value!r}"
            )
        number = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"expected a size like 40GiB, 512MiB, 8GB or plain bytes, got {value!r}"
                " (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            )
        number = float(match.group(1)) * _UNITS[unit or ""]
    else:
        raise ValueError(f"expected a size like 40GiB, got {type(value).__name__} {value!r}")
    return int(number)


def _entry_error(source: str, index: int, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: devices[{index}].{key}: {problem}")


def _positive_int(source: str, index: int, key: str, value: Any) -> int:
    limit = _MAX_INT[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise _entry_error(
            source, index, key, f"must be a whole number from 1 to {limit}, got {value!r}"
        )
    return value


def _parse_entry(source: str, index: int, entry: Any) -> tuple[dict[str, Any], int]:
    """One entry's Device fields (without id) and its ``count``."""
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"{source}: devices[{index}]: each entry must be a mapping like {_EXAMPLE},"
            f" got {type(entry).__name__} {entry!r}"
        )
    unknown = sorted(str(key) for key in entry if key not in _REQUIRED + _OPTIONAL)
    if unknown:
        raise _entry_error(
            source,
            index,
            unknown[0],
            f"unknown key; allowed keys are {', '.join(_REQUIRED + _OPTIONAL)}",
        )
    missing = [key for key in _REQUIRED if key not in entry]
    if missing:
        raise _entry_error(
            source, index, missing[0], f"is required (a full entry looks like {_EXAMPLE})"
        )
    kind = entry["kind"]
    if kind not in DEVICE_KINDS:
        raise _entry_error(
            source, index, "kind", f"must be one of {', '.join(DEVICE_KINDS)}, got {kind!r}"
        )
    names: dict[str, str] = {}
    for key in ("vendor", "model"):
        value = entry[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, (str, int, float))
            or not str(value).strip()
        ):
            raise _entry_error(
                source, index, key, f"must be a non-empty name like 'nvidia', got {value!r}"
            )
        names[key] = str(value).strip()
    try:
        memory = parse_size(entry["memory"])
    except ValueError as exc:
        raise _entry_error(source, index, "memory", str(exc)) from None
    if not 1 <= memory <= _MAX_MEMORY:
        raise _entry_error(
            source, index, "memory", f"must be between 1 byte and 1PiB, got {entry['memory']!r}"
        )
    tflops = entry["tflops"]
    if (
        isinstance(tflops, bool)
        or not isinstance(tflops, (int, float))
        or not math.isfinite(tflops)
        or not 0 < tflops <= _MAX_TFLOPS
    ):
        raise _entry_error(
            source,
            index,
            "tflops",
            f"must be a number above 0 and at most {_MAX_TFLOPS:g} (e.g. 156), got {tflops!r}",
        )
    optional = {
        key: _positive_int(source, index, key, entry[key])
        for key in _OPTIONAL
        if key in entry and key != "lacks"
    }
    lacks = entry.get("lacks", [])
    if not isinstance(lacks, list) or not all(
        isinstance(op, str) and "::" in op and "," not in op for op in lacks
    ):
        raise _entry_error(
            source,
            index,
            "lacks",
            f"must be a list of operator names like [aten::tanh, aten::linear], got {lacks!r}",
        )
    if "seats" in optional and "slices" in optional:
        raise _entry_error(
            source,
            index,
            "seats",
            "and slices are two ways to share a device: fixed slices (slices: N) or"
            " demand-sized shares with N jobs at once (seats: N); give one",
        )
    fields = {
        "kind": kind,
        "vendor": names["vendor"],
        "model": names["model"],
        "memory_bytes": memory,
        "tflops": float(tflops),
        "slices": optional.get("seats", optional.get("slices", 1)),
        "threads": optional.get("threads", 1),
        "shared": "seats" in optional,
        "lacks": ",".join(op.strip() for op in lacks),
    }
    return fields, optional.get("count", 1)


def parse_devices(data: Any, source: str = "<devices>") -> SimulatedDevices:
    """Validate parsed YAML (``source`` names the file in errors) into simulated devices.

    Device ids are ``<kind><n>`` numbered per kind in file order; ``discover`` renumbers
    them past any real device of the same kind.
    """
    if not isinstance(data, Mapping) or "devices" not in data:
        raise ConfigError(
            f"{source}: the file must be a mapping with a 'devices' list, e.g.\n"
            f"devices:\n  - {_EXAMPLE}"
        )
    unknown = sorted(str(key) for key in data if key not in _TOP_LEVEL)
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key {unknown[0]!r}; allowed keys are "
            f"{', '.join(_TOP_LEVEL)}"
        )
    include_host = data.get("include_host", True)
    if not isinstance(include_host, bool):
        raise ConfigError(f"{source}: include_host must be true or false, got {include_host!r}")
    entries = data["devices"]
    if not isinstance(entries, list):
        raise ConfigError(
            f"{source}: 'devices' must be a list of entries like - {_EXAMPLE},"
            f" got {type(entries).__name__}"
        )
    devices: list[Device] = []
    per_kind: dict[str, int] = {}
    for index, entry in enumerate(entries):
        fields, count = _parse_entry(source, index, entry)
        lacks = fields.pop("lacks")
        extra = {"declared_in": source, "tflops_source": "declared"}
        if lacks:
            extra["lacks_operators"] = lacks
        for _ in range(count):
            number = per_kind.get(fields["kind"], 0)
            per_kind[fields["kind"]] = number + 1
            devices.append(
                Device(
                    device_id=f"{fields['kind']}{number}",
                    torch_device="cpu",
                    simulated=True,
                    sharing="exclusive"
                    if fields["slices"] == 1 and not fields["shared"]
                    else "time",
                    extra=dict(extra),
                    **fields,
                )
            )
    return SimulatedDevices(tuple(devices), include_host)


def load_devices_file(path: str | Path) -> SimulatedDevices:
    """Read and validate a devices file; every mistake is a ConfigError naming the file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"devices file {source} does not exist; pass the path of a YAML file such as\n"
            f"devices:\n  - {_EXAMPLE}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"devices file {source} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: not valid YAML{where}: {problem}") from None
    return parse_devices(data, source)
