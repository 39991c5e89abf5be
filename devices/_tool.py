"""Vendors read from the management tool their driver ships (``cnmon``, ``mx-smi``, …).

Most accelerators have no Python binding anyone can rely on being installed, but every
driver install ships a command-line tool that lists its devices.  ``ToolProbe`` is what
such a vendor has in common: run the tool (only when its binary is on ``PATH``, with a
timeout, since a wedged driver can make it hang), turn its output into ``ToolDevice``
rows with a pure parser tested on recorded outputs (``tests/fakes/<vendor>/``, each with
its source), and from those rows describe devices, read utilisation and memory on every
heartbeat, and narrow a worker to one device with the vendor runtime's variables.

A vendor is one small subclass in a module of its own: its kind, vendor name, binary
and arguments, its runtime's visible-devices variables and torch device name, a TFLOPS
table with its precision, and ``parse``.  A vendor whose tool needs more than one call
overrides ``read``.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from anypu.devices._model import Device
from anypu.devices._probe import Probe, Reading, allocator_cap, physical_index, utilisation_of

__all__ = [
    "RunTool",
    "ToolDevice",
    "ToolProbe",
    "check_smi_blocks",
    "checked_smi_table",
    "locate_column",
    "mib",
    "run_tool",
    "smi_device_table",
    "table_cells",
    "table_tflops",
]

log = logging.getLogger(__name__)

#: ``(command, timeout) -> stdout``: how a probe runs its tool (tests pass a fake).
RunTool = Callable[[list[str], float], str]

_MIB = 1 << 20


def mib(value: float) -> int:
    """Bytes in ``value`` MiB (the unit most of these tools print)."""
    return int(value * _MIB)


def run_tool(command: list[str], timeout: float) -> str:
    """Run a vendor tool; its stdout, or RuntimeError naming the exit status and last line."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(
            f"`{' '.join(command)}` exited with status {result.returncode}"
            + (f": {detail[-1]}" if detail else "")
        )
    return result.stdout


def table_tflops(name: str, table: tuple[tuple[str, float], ...]) -> float | None:
    """The first ``(pattern, tflops)`` of ``table`` whose pattern is found in ``name``."""
    for pattern, tflops in table:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return tflops
    return None


def table_cells(line: str) -> list[str]:
    """The ``|``-separated cells of one table line, stripped."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


#: The header rows, and each device's block of rows, of an nvidia-smi-style table.
SmiTable = tuple[list[list[str]], list[list[list[str]]]]


def smi_device_table(text: str) -> SmiTable | None:
    """The device table of an nvidia-smi-style tool (``mx-smi``, ``ixsmi``, Kunlunxin's
    ``xpu_smi``): the header rows above the ``|===`` rule (the one naming a Bus-Id, not
    the process table's) and the blocks of rows between ``+---`` rules below it; None
    when the text has no such table."""
    lines = text.splitlines()
    for at, line in enumerate(lines):
        if not line.startswith("|="):
            continue
        header: list[list[str]] = []
        for above in reversed(lines[:at]):
            if not above.startswith("|") or above.startswith("|-"):
                break
            header.insert(0, table_cells(above))
        if not any("bus-id" in cell.lower() for row in header for cell in row):
            continue  # the process table's header, not the device table's
        blocks: list[list[list[str]]] = []
        block: list[list[str]] = []
        for below in lines[at + 1 :]:
            if below.startswith(("+-", "|-")):
                if block:
                    blocks.append(block)
                block = []
            elif below.startswith("|"):
                block.append(table_cells(below))
            else:
                break  # a blank line ends the device table
        if block:
            blocks.append(block)
        return header, blocks
    return None


def checked_smi_table(text: str, tool: str) -> SmiTable:
    """``smi_device_table`` of ``tool``'s output, every block checked to have the header's
    shape (a row for each header row, a cell for each header cell); ValueError otherwise."""
    table = smi_device_table(text)
    if table is None or not table[0] or not table[0][0]:
        raise ValueError(f"no device table found (expected the output of `{tool}`)")
    check_smi_blocks(*table, tool)
    return table


def check_smi_blocks(header: list[list[str]], blocks: list[list[list[str]]], tool: str) -> None:
    for block in blocks:
        if len(block) != len(header) or any(
            len(r) != len(h) for r, h in zip(block, header, strict=True)
        ):
            raise ValueError(f"{tool} device block does not match its header: {block}")


def locate_column(header: list[list[str]], label: str, tool: str) -> tuple[int, int]:
    """Row and cell of the header cell naming ``label`` (lower case); ValueError naming
    ``tool`` when there is none."""
    for row, cells in enumerate(header):
        for cell, text in enumerate(cells):
            if label in text.lower():
                return row, cell
    raise ValueError(f"{tool} device table has no {label!r} column: {header}")


@dataclass(frozen=True)
class ToolDevice:
    """One device as its vendor's tool lists it.  ``index`` is the number the vendor's
    runtime knows it by (its visible-devices variable takes it); None: not printed."""

    index: int
    name: str
    memory_total_bytes: int
    memory_used_bytes: int | None = None
    utilisation: float | None = None  # 0..1
    bus_id: str = ""


class ToolProbe(Probe):
    """A vendor whose devices are listed by a tool: see the module docstring."""

    binary: ClassVar[str] = ""
    arguments: ClassVar[tuple[str, ...]] = ()
    #: Device ids are ``<id_prefix><index>``; the torch device ``<torch_type>:<index>``.
    id_prefix: ClassVar[str] = "gpu"
    torch_type: ClassVar[str] = "cuda"
    #: The runtime's variables that narrow a process to devices, each set to the index.
    visible_devices: ClassVar[tuple[str, ...]] = ()
    #: ``(name pattern, dense TFLOPS)``, first match wins; and the precision it is in.
    tflops_table: ClassVar[tuple[tuple[str, float], ...]] = ()
    tflops_precision: ClassVar[str] = "fp16"

    def __init__(
        self,
        *,
        binary: str | None = None,
        timeout: float = 10.0,
        slices: int = 1,
        run: RunTool = run_tool,
    ) -> None:
        super().__init__()
        if slices < 1:
            raise ValueError(f"{type(self).__name__} slices must be at least 1, got {slices}")
        self._binary = binary or self.binary
        self._timeout = timeout
        self._slices = slices
        self._run = run

    # -- what a vendor module provides -----------------------------------------------

    @staticmethod
    def parse(text: str) -> list[ToolDevice]:
        """Every device in the tool's output; ValueError when it is not that tool's output."""
        raise NotImplementedError

    def read(self, path: str) -> list[ToolDevice]:
        """Run the tool at ``path`` and parse what it prints (override for several calls)."""
        return self.parse(self._run([path, *self.arguments], self._timeout))

    # -- the probe ---------------------------------------------------------------------

    def _devices(self) -> list[ToolDevice]:
        path = shutil.which(self._binary)
        if path is None:
            raise FileNotFoundError(f"{self._binary} is not on PATH")
        return self.read(path)

    def available(self) -> bool:
        try:
            found = self._devices()
        except (OSError, ValueError, KeyError, RuntimeError, subprocess.TimeoutExpired) as exc:
            self.unavailable_reason = f"{self._binary} unusable: {exc}"
            return False
        if not found:
            self.unavailable_reason = f"{self._binary} lists no device"
            return False
        self.unavailable_reason = ""
        return True

    def probe(self) -> list[Device]:
        devices = []
        for row in self._devices():
            known = table_tflops(row.name, self.tflops_table)
            extra = {
                "index": str(row.index),
                "tflops_precision": self.tflops_precision,
                "tflops_source": "table" if known is not None else "default",
            }
            if row.bus_id:
                extra["bus_id"] = row.bus_id
            if row.memory_used_bytes is not None and row.memory_total_bytes:
                free = max(0, row.memory_total_bytes - row.memory_used_bytes)
                extra["memory_free_bytes"] = str(free)
            devices.append(
                Device(
                    device_id=f"{self.id_prefix}{row.index}",
                    kind=self.kind,
                    vendor=self.vendor,
                    model=row.name,
                    memory_bytes=row.memory_total_bytes,
                    tflops=known if known is not None else 1.0,
                    torch_device=f"{self.torch_type}:{row.index}",
                    slices=self._slices,
                    sharing="exclusive" if self._slices == 1 else self.shared_sharing,
                    extra=extra,
                )
            )
        return devices

    def readings(self) -> dict[str, Reading]:
        try:
            rows = self._devices()
        except (OSError, ValueError, KeyError, RuntimeError, subprocess.TimeoutExpired) as exc:
            log.debug("%s failed during a reading: %s", self._binary, exc)
            return {}
        return {
            f"{self.id_prefix}{row.index}": Reading(
                utilisation=row.utilisation, memory_used_bytes=row.memory_used_bytes
            )
            for row in rows
        }

    def utilisation(self) -> dict[str, float]:
        return utilisation_of(self.readings())

    # -- the vendor's slice behaviour --------------------------------------------------

    @classmethod
    def slice_environment(cls, device: Device, slice_index: int) -> dict[str, str]:
        # CUDA's too, so a CUDA-compatible runtime never sees another vendor's devices.
        index = str(physical_index(device))
        return {"CUDA_VISIBLE_DEVICES": "", **dict.fromkeys(cls.visible_devices, index)}

    @classmethod
    def worker_torch_device(cls, device: Device) -> str:
        return f"{cls.torch_type}:0"

    @classmethod
    def apply_job_limit(cls, device: Device, memory_bytes: int) -> str:
        """The vendor's torch backend's allocator cap (``torch.<torch_type>``: ROCm's
        ``cuda``, ``mlu``, ``musa``, ``xpu``…) at what the seat holds plus the job's
        reservation, where the backend offers ``set_per_process_memory_fraction``."""
        return allocator_cap(cls.torch_type, device, memory_bytes)
