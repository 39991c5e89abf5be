"""Huawei Ascend NPUs, read from the text table that ``npu-smi info`` prints.

There is no stable Python binding for the Ascend driver's management API, and
``npu-smi`` ships with every driver install, so its table is parsed.  The parser is a
pure function of the text (tested on recorded outputs); the probe only runs the tool,
and only when the binary is on ``PATH``.

The table comes in two shapes: one chip per NPU with an ``HBM-Usage`` column (910
series), and several chips per NPU with a ``Chip Device`` pair whose second number is the
logical device id (310P cards).  The logical id is what ``ASCEND_RT_VISIBLE_DEVICES``
and ``torch_npu``'s ``npu:N`` use; where the table does not print it, chips are
numbered in the order listed, which is how the runtime enumerates them.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import ClassVar

from anypu.devices._model import Device
from anypu.devices._probe import Probe, Reading, allocator_cap, physical_index
from anypu.devices._tool import RunTool, run_tool

__all__ = [
    "ASCEND_TFLOPS",
    "AscendProbe",
    "NpuChip",
    "ascend_tflops",
    "parse_npu_smi_info",
    "parse_npu_smi_processes",
]

log = logging.getLogger(__name__)

#: ``(name pattern, dense fp16 TFLOPS)``; first match wins.  Ascend's cube units compute
#: in fp16 and Huawei quotes only fp16/int8 figures, so unlike the NVIDIA table this one
#: is fp16 (``extra["tflops_precision"]`` says so).  Sources: Huawei's Ascend 910 launch
#: specification (256 TFLOPS fp16), the Atlas 300I Pro / Duo data sheets (70 TFLOPS fp16
#: per 310P chip), the Ascend 310 specification (8 TFLOPS fp16).  Huawei publishes no
#: per-variant sheet for the 910B; its figures are those given in Atlas 800T A2 partner
#: listings and are the least certain entries here.
ASCEND_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"^910B1$", 414.0),
    (r"^910B2", 376.0),
    (r"^910B3$", 313.0),
    (r"^910B4", 280.0),
    (r"^910B", 280.0),
    (r"^910", 256.0),
    (r"^310P", 70.0),
    (r"^310", 8.0),
)

#: Health states in which a chip still takes work; others (Alarm, Critical, …) are skipped.
_USABLE_HEALTH = frozenset({"OK", "Warning"})

_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")
_USAGE_PAIR = re.compile(r"(\d+)\s*/\s*(\d+)")
_MIB = 1024 * 1024


@dataclass(frozen=True)
class NpuChip:
    """One row pair of ``npu-smi info``: a chip and what the table says about it."""

    npu_id: int
    chip_id: int
    logical_id: int
    name: str
    health: str
    bus_id: str
    aicore_percent: float | None
    memory_used_bytes: int
    memory_total_bytes: int


def ascend_tflops(name: str) -> float | None:
    for pattern, tflops in ASCEND_TFLOPS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return tflops
    return None


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _usage_labels(header: str) -> list[str]:
    """Usage columns of the chip row in order, e.g. ``["Memory", "HBM"]``."""
    return re.findall(r"(\w+)-Usage", header)


def parse_npu_smi_info(text: str) -> list[NpuChip]:
    """Every chip listed in ``npu-smi info`` output, in table order.

    Raises ValueError when the text has no device table at all (not npu-smi output).
    """
    chips: list[NpuChip] = []
    usage_labels: list[str] | None = None
    current: tuple[int, str, str] | None = None  # npu id, name, health of the name row
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = _cells(line)
        if "Process id" in line:
            break  # the process table follows the device table
        if cells[0].startswith("Chip") and len(cells) >= 3:
            usage_labels = _usage_labels(cells[2])
            continue
        if usage_labels is None or len(cells) < 3:
            continue
        first = cells[0].split()
        if _BUS_ID.match(cells[1]) and first and first[0].isdigit():
            if current is None:
                continue
            chip_id = int(first[0])
            logical = int(first[1]) if len(first) > 1 and first[1].isdigit() else len(chips)
            values = cells[2].split()
            aicore = float(values[0]) if values and _is_number(values[0]) else None
            pairs = [(int(u), int(t)) for u, t in _USAGE_PAIR.findall(cells[2])]
            used, total = _pick_memory(usage_labels, pairs)
            npu_id, name, health = current
            chips.append(
                NpuChip(npu_id, chip_id, logical, name, health, cells[1], aicore, used, total)
            )
        elif len(first) >= 2 and first[0].isdigit():
            current = (int(first[0]), first[1], cells[1])
    if usage_labels is None:
        raise ValueError("no device table found (expected the output of `npu-smi info`)")
    return chips


def parse_npu_smi_processes(text: str) -> dict[tuple[int, int], dict[int, int]]:
    """The process table of ``npu-smi info``: ``(npu id, chip id)`` -> process id -> bytes
    of device memory it holds ("Process memory(MB)", MiB in fact). Chips without
    processes ("No running processes found in NPU 1") are absent."""
    processes: dict[tuple[int, int], dict[int, int]] = {}
    in_table = False
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        if "Process id" in line:
            in_table = True
            continue
        cells = _cells(line)
        if not in_table or len(cells) < 4:
            continue
        where, pid, memory = cells[0].split(), cells[1], cells[3]
        if len(where) == 2 and all(w.isdigit() for w in where) and pid.isdigit():
            if memory.isdigit():
                chip = processes.setdefault((int(where[0]), int(where[1])), {})
                chip[int(pid)] = chip.get(int(pid), 0) + int(memory) * 1024 * 1024
    return processes


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _pick_memory(labels: list[str], pairs: list[tuple[int, int]]) -> tuple[int, int]:
    """``(used, total)`` bytes: on-package HBM when the chip has it, else DDR memory."""
    by_label = dict(zip(labels, pairs, strict=False))
    for label in ("HBM", "Memory"):
        used, total = by_label.get(label, (0, 0))
        if total > 0:
            return used * _MIB, total * _MIB
    return 0, 0


class AscendProbe(Probe):
    """Ascend NPUs as ``npu<N>`` with torch device ``npu:<logical id>``.

    ``binary`` is the ``npu-smi`` command (name on ``PATH`` or a path); ``timeout`` caps
    each run, since a wedged driver can make the tool hang.  Chips whose health is
    neither OK nor Warning are left out (and logged).

    A worker on a slice sees only its NPU (``ASCEND_RT_VISIBLE_DEVICES`` narrowed to
    the logical id), as ``npu:0``; slices share it by time.
    """

    name = "ascend"
    kind: ClassVar[str] = "npu"
    vendor: ClassVar[str] = "huawei"

    @classmethod
    def slice_environment(cls, device: Device, slice_index: int) -> dict[str, str]:
        return {"ASCEND_RT_VISIBLE_DEVICES": str(physical_index(device))}

    @classmethod
    def worker_torch_device(cls, device: Device) -> str:
        return "npu:0"

    @classmethod
    def apply_job_limit(cls, device: Device, memory_bytes: int) -> str:
        """``torch_npu``'s allocator cap at what the seat holds plus the job's reservation
        (its twin of CUDA's ``set_per_process_memory_fraction``); without ``torch_npu``,
        nothing."""
        return allocator_cap("npu", device, memory_bytes)

    def __init__(
        self,
        *,
        binary: str = "npu-smi",
        timeout: float = 10.0,
        slices: int = 1,
        run_tool: RunTool = run_tool,
    ) -> None:
        super().__init__()
        if slices < 1:
            raise ValueError(f"AscendProbe slices must be at least 1, got {slices}")
        self._binary = binary
        self._timeout = timeout
        self._slices = slices
        self._run_tool = run_tool

    def _info(self) -> str:
        path = shutil.which(self._binary)
        if path is None:
            raise FileNotFoundError(f"{self._binary} is not on PATH")
        return self._run_tool([path, "info"], self._timeout)

    def _chips(self) -> list[NpuChip]:
        return parse_npu_smi_info(self._info())

    def available(self) -> bool:
        try:
            chips = self._chips()
        except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
            self.unavailable_reason = f"npu-smi unusable: {exc}"
            return False
        if not any(chip.health in _USABLE_HEALTH for chip in chips):
            self.unavailable_reason = "npu-smi lists no healthy NPU"
            return False
        self.unavailable_reason = ""
        return True

    def probe(self) -> list[Device]:
        devices: list[Device] = []
        for chip in self._chips():
            if chip.health not in _USABLE_HEALTH:
                log.warning(
                    "skipping NPU %d chip %d (%s): health is %s",
                    chip.npu_id,
                    chip.chip_id,
                    chip.bus_id,
                    chip.health,
                )
                continue
            known = ascend_tflops(chip.name)
            devices.append(
                Device(
                    device_id=f"npu{chip.logical_id}",
                    kind="npu",
                    vendor="huawei",
                    model=f"Ascend{chip.name}",
                    memory_bytes=chip.memory_total_bytes,
                    tflops=known if known is not None else 1.0,
                    torch_device=f"npu:{chip.logical_id}",
                    slices=self._slices,
                    threads=1,
                    sharing="exclusive" if self._slices == 1 else "time",
                    extra={
                        "index": str(chip.logical_id),
                        "npu_id": str(chip.npu_id),
                        "chip_id": str(chip.chip_id),
                        "bus_id": chip.bus_id,
                        "health": chip.health,
                        "memory_free_bytes": str(chip.memory_total_bytes - chip.memory_used_bytes),
                        "tflops_precision": "fp16",
                        "tflops_source": "table" if known is not None else "default",
                    },
                )
            )
        return devices

    def readings(self) -> dict[str, Reading]:
        """AI Core busy percentage, memory used and memory per process for each chip,
        from one ``npu-smi info`` (its device table and its process table)."""
        try:
            text = self._info()
            chips = parse_npu_smi_info(text)
        except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
            log.debug("npu-smi failed during a reading: %s", exc)
            return {}
        processes = parse_npu_smi_processes(text)
        return {
            f"npu{chip.logical_id}": Reading(
                utilisation=(
                    min(1.0, max(0.0, chip.aicore_percent / 100.0))
                    if chip.aicore_percent is not None
                    else None
                ),
                memory_used_bytes=chip.memory_used_bytes if chip.memory_total_bytes else None,
                process_memory=processes.get((chip.npu_id, chip.chip_id), {}),
            )
            for chip in chips
        }

    def utilisation(self) -> dict[str, float]:
        """AI Core busy percentage per chip; empty if the tool fails this time."""
        try:
            chips = self._chips()
        except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
            log.debug("npu-smi failed during a utilisation read: %s", exc)
            return {}
        return {
            f"npu{chip.logical_id}": min(1.0, max(0.0, chip.aicore_percent / 100.0))
            for chip in chips
            if chip.aicore_percent is not None
        }
