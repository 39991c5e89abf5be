"""Moore Threads GPUs, read from the table that ``mthreads-gmi`` (no arguments) prints.

The table is not framed on the left: under ``------`` rules and the version line, a
three-line header (``ID   Name |PCIe |%GPU  Mem`` …) is followed by one three-line group
per GPU, groups separated by ``+----+`` rules, each line split into three columns by
``|``.  A group's first line reads ``<id> <name>`` (the name has a space: ``MTT S80``),
the PCI bus id (8-digit domain), then the utilisation and memory as
``<used>MiB(<total>MiB)`` — used first, the total in brackets.  The second and third
lines (device type, lane width, temperature, MPC, ECC mode) are not needed.  The
process table that follows (``Processes:``) is not read.

Recorded outputs (mthreads-gmi 1.12.2, 1.14.0 and 2.4.1; MTT S80, S4000 and an 8-card
S5000) and where each was copied from: ``tests/fakes/mthreads/SOURCES.md``.  One of them
(the vendor FAQ's S4000) shows a faulty card whose used memory exceeds its total; it is
reported as printed.  No real recording of ``mthreads-gmi -q`` was found.

The GPU id is what ``MUSA_VISIBLE_DEVICES`` takes and ``torch_musa`` numbers
``musa:N`` by; a worker narrowed to one GPU sees it as ``musa:0``.
"""

from __future__ import annotations

import re
from typing import ClassVar

from anypu.devices._tool import ToolDevice, ToolProbe, mib

__all__ = ["MTHREADS_TFLOPS", "MooreThreadsProbe", "parse_mthreads_gmi"]

#: ``(name pattern, fp32 TFLOPS)``.  fp32, as for NVIDIA's GPUs, because it is the one
#: precision Moore Threads quotes for every card: MTT S80 14.4 and MTT S3000 15.2
#: (Moore Threads' November 2022 launch, as reported by VideoCardz / geektopia.es and
#: tomshw.it), MTT S4000 25 (its December 2023 launch, as reported by tweakpc.de,
#: io-tech.fi and Titan Computers, which also give 100 TFLOPS fp16/bf16).  No fp32
#: figure for the MTT S5000 was found (only a 1000 TFLOPS fp8 claim): it gets the
#: default 1.0 and ``tflops_source: default``.
MTHREADS_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bS80\b", 14.4),
    (r"\bS3000\b", 15.2),
    (r"\bS4000\b", 25.0),
)

_HEADER = re.compile(r"^ID\s+Name\b")
_GPU = re.compile(r"^(\d+)\s+(\S.*?)$")
_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")
_MEMORY = re.compile(r"(\d+)MiB\((\d+)MiB\)")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


def parse_mthreads_gmi(text: str) -> list[ToolDevice]:
    """Every GPU in ``mthreads-gmi``'s default table, in table order.

    Raises ValueError when the text has no GPU table (not mthreads-gmi output), when a
    GPU's memory is unreadable, or when a GPU id is listed twice.
    """
    header = False
    devices: list[ToolDevice] = []
    for line in text.splitlines():
        if line.strip().startswith("Processes:"):
            break  # the process table follows the GPUs
        columns = [column.strip() for column in line.split("|")]
        if _HEADER.match(columns[0]):
            header = True
            continue
        gpu = _GPU.match(columns[0])
        if not header or gpu is None:
            continue
        index, name = int(gpu.group(1)), gpu.group(2)
        if len(columns) < 3:
            raise ValueError(f"mthreads-gmi GPU {index} ({name}): its line is cut short")
        memory = _MEMORY.search(columns[2])
        if memory is None:
            raise ValueError(f"mthreads-gmi GPU {index} ({name}): no 'used(total)' memory")
        words = columns[2].split()
        busy = _PERCENT.match(words[0]) if words else None
        if any(device.index == index for device in devices):
            raise ValueError(f"mthreads-gmi lists GPU {index} twice")
        devices.append(
            ToolDevice(
                index=index,
                name=name,
                memory_total_bytes=mib(int(memory.group(2))),
                memory_used_bytes=mib(int(memory.group(1))),
                utilisation=(min(1.0, max(0.0, float(busy.group(1)) / 100.0)) if busy else None),
                bus_id=columns[1] if _BUS_ID.match(columns[1]) else "",
            )
        )
    if not header:
        raise ValueError("no GPU table found (expected the output of `mthreads-gmi`)")
    return devices


class MooreThreadsProbe(ToolProbe):
    """Moore Threads GPUs as ``gpu<N>`` / ``musa:<N>``, from ``mthreads-gmi``'s table.

    A worker on a slice sees only its GPU (``MUSA_VISIBLE_DEVICES`` set to its id, CUDA
    hidden), as ``musa:0``; slices share it by time.
    """

    name = "mthreads"
    kind: ClassVar[str] = "gpu"
    vendor: ClassVar[str] = "mthreads"
    binary: ClassVar[str] = "mthreads-gmi"
    arguments: ClassVar[tuple[str, ...]] = ()
    id_prefix: ClassVar[str] = "gpu"
    torch_type: ClassVar[str] = "musa"
    visible_devices: ClassVar[tuple[str, ...]] = ("MUSA_VISIBLE_DEVICES",)
    tflops_table: ClassVar[tuple[tuple[str, float], ...]] = MTHREADS_TFLOPS
    tflops_precision: ClassVar[str] = "fp32"
    parse = staticmethod(parse_mthreads_gmi)
