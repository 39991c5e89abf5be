"""AMD GPUs (ROCm), read from ``amd-smi`` (ROCm 6+), or ``rocm-smi`` where it is older.

``amd-smi static --json`` names each GPU (``asic.market_name``, ``bus.bdf``, ``vram.size``)
and ``amd-smi metric --json`` reads it (``usage.gfx_activity``, ``mem_usage.used_vram``);
the two are joined on ``gpu``.  Before amd-smi 26 the documents are bare lists, from 26 on
``{"gpu_data": [...]}``; numbers are ``{"value": N, "unit": "MB"}`` (MiB in fact) or
``"N/A"``.  ``rocm-smi --showproductname --showuse --showmeminfo vram --json`` prints
``{"card<N>": {label: text}}``; ``parse_rocm_smi_json`` reads it, and Hygon's fork of it
too (``_hygon``), tolerating the empty keys and missing commas that fork prints.
Recorded outputs and their sources: ``tests/fakes/amd/SOURCES.md``.

PyTorch on ROCm calls its devices ``cuda:N``.  A worker is narrowed to one GPU with
``ROCR_VISIBLE_DEVICES`` (what AMD recommends on Linux); HIP then numbers the GPUs it
leaves from 0, so ``HIP_VISIBLE_DEVICES`` and ``CUDA_VISIBLE_DEVICES`` are ``0``.
"""

from __future__ import annotations

import json
import re
import shutil
from typing import Any, ClassVar

from anypu.devices._model import Device
from anypu.devices._probe import physical_index
from anypu.devices._tool import ToolDevice, ToolProbe, mib

__all__ = ["AMD_TFLOPS", "AmdProbe", "parse_amd_smi", "parse_rocm_smi_json"]

#: Dense fp16 TFLOPS (matrix cores), from AMD's Instinct data sheets: MI300X 1307.4,
#: MI300A 980.6, MI250X 383, MI250 362.1, MI210 181, MI100 184.6. Radeon cards are not
#: listed (AMD quotes them with dual-issue rates that are not comparable): they get the
#: default and say so.
AMD_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"MI300X", 1307.4),
    (r"MI300A", 980.6),
    (r"MI250X", 383.0),
    (r"MI250", 362.1),
    (r"MI210", 181.0),
    (r"MI100", 184.6),
)

_CARD = re.compile(r'"card(\d+)"\s*:\s*\{(.*?)\}', re.DOTALL)
_PAIR = re.compile(r'"([^"]*)"\s*:\s*"([^"]*)"')


def _gpus(document: Any) -> list[dict[str, Any]]:
    if isinstance(document, dict) and isinstance(document.get("gpu_data"), list):
        document = document["gpu_data"]
    if not isinstance(document, list) or not all(isinstance(g, dict) for g in document):
        raise ValueError("not amd-smi JSON: expected a list of GPUs or {'gpu_data': [...]}")
    return document


def _number(node: Any, *path: str) -> float | None:
    """``node[path…].value`` as a number; None where amd-smi says N/A or has no field."""
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    value = node.get("value") if isinstance(node, dict) else node
    if not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:  # "N/A"
        return None


def parse_amd_smi(static_json: str, metric_json: str = "") -> list[ToolDevice]:
    """GPUs from ``amd-smi static --json``, with readings joined from ``amd-smi metric
    --json`` when given (by ``gpu``); total memory from ``vram.size``, else the metric's
    ``mem_usage.total_vram``."""
    try:
        static = _gpus(json.loads(static_json))
        metric = _gpus(json.loads(metric_json)) if metric_json else []
    except json.JSONDecodeError as error:
        raise ValueError(f"not amd-smi JSON: {error}") from None
    readings = {g.get("gpu"): g for g in metric}
    devices = []
    for gpu in static:
        if not isinstance(gpu.get("gpu"), int):
            raise ValueError("amd-smi JSON lists a GPU without its index ('gpu')")
        read = readings.get(gpu["gpu"], {})
        total = _number(gpu, "vram", "size") or _number(read, "mem_usage", "total_vram")
        used = _number(read, "mem_usage", "used_vram")
        busy = _number(read, "usage", "gfx_activity")
        asic = gpu.get("asic", {})
        bus = gpu.get("bus", {})
        devices.append(
            ToolDevice(
                index=gpu["gpu"],
                name=str(asic.get("market_name") or "AMD GPU"),
                memory_total_bytes=mib(total or 0),
                memory_used_bytes=mib(used) if used is not None else None,
                utilisation=min(1.0, busy / 100) if busy is not None else None,
                bus_id=str(bus.get("bdf", "")) if isinstance(bus, dict) else "",
            )
        )
    return devices


def _first(fields: dict[str, str], *labels: str) -> str | None:
    for label in labels:
        value = fields.get(label)
        if value not in (None, "", "N/A"):
            return value
    return None


def parse_rocm_smi_json(text: str) -> list[ToolDevice]:
    """GPUs from ``rocm-smi … --json`` (and Hygon's ``hy-smi … --json``): AMD labels in
    bytes (``VRAM Total Memory (B)``), Hygon's in MiB (``vram Total Memory (MiB)``);
    utilisation from ``GPU``/``DCU``/``HCU use (%)``. Read pair by pair rather than with
    ``json.loads``: Hygon's builds print empty keys and drop commas."""
    cards = _CARD.findall(text)
    if not cards:
        raise ValueError('not rocm-smi JSON: no "card<N>" object found')
    devices = []
    for index, body in cards:
        fields = dict(_PAIR.findall(body))
        total = _first(fields, "VRAM Total Memory (B)")
        used = _first(fields, "VRAM Total Used Memory (B)")
        total_mib = _first(fields, "vram Total Memory (MiB)") or 0
        total_bytes = int(total) if total else mib(float(total_mib))
        used_bytes: int | None = int(used) if used else None
        if used_bytes is None and (used_mib := _first(fields, "vram Total Used Memory (MiB)")):
            used_bytes = mib(float(used_mib))
        busy = _first(fields, "GPU use (%)", "DCU use (%)", "HCU use (%)")
        bus = _first(fields, "PCI Bus") or ""
        devices.append(
            ToolDevice(
                index=int(index),
                name=_first(fields, "Card Series", "Device Name", "Card Model") or "GPU",
                memory_total_bytes=total_bytes,
                memory_used_bytes=used_bytes,
                utilisation=min(1.0, float(busy) / 100) if busy is not None else None,
                bus_id=bus.split()[0] if bus else "",
            )
        )
    return devices


class AmdProbe(ToolProbe):
    """AMD GPUs as ``gpu<N>`` / ``cuda:<N>``: amd-smi where installed, else rocm-smi."""

    name = "amd"
    kind: ClassVar[str] = "gpu"
    vendor: ClassVar[str] = "amd"
    binary: ClassVar[str] = "amd-smi"
    fallback: ClassVar[str] = "rocm-smi"
    id_prefix: ClassVar[str] = "gpu"
    torch_type: ClassVar[str] = "cuda"
    tflops_table = AMD_TFLOPS
    tflops_precision: ClassVar[str] = "fp16"

    def _devices(self) -> list[ToolDevice]:
        path = shutil.which(self._binary)
        if path is not None:
            static = self._run([path, "static", "--json"], self._timeout)
            metric = self._run([path, "metric", "--json"], self._timeout)
            return parse_amd_smi(static, metric)
        older = shutil.which(self.fallback)
        if older is None:
            raise FileNotFoundError(f"neither {self._binary} nor {self.fallback} is on PATH")
        arguments = ["--showproductname", "--showuse", "--showmeminfo", "vram", "--json"]
        return parse_rocm_smi_json(self._run([older, *arguments], self._timeout))

    @classmethod
    def slice_environment(cls, device: Device, slice_index: int) -> dict[str, str]:
        return {
            "ROCR_VISIBLE_DEVICES": str(physical_index(device)),
            "HIP_VISIBLE_DEVICES": "0",
            "CUDA_VISIBLE_DEVICES": "0",
        }
