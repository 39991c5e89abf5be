"""Cambricon MLUs, read from the table that ``cnmon`` (run with no arguments) prints.

``cnmon`` frames its table in ``+---+`` rules and prints one two-line block per card,
its three columns split by ``|``.  The first line of a block reads
``<card> <vf> <name> <firmware>``, then the PCI bus id (driver 5.x) or ``Inited`` and
the card's driver version (driver 4.x, which has no bus id), then ``Util`` and
``Ecc-Error``; the second line reads fan, temperature and power, then ``Memory-Usage``
as ``<used> MiB/ <total> MiB``, then SR-IOV and compute mode (5.x) or *virtual* memory
(4.x, ``vMemory-Usage``, never the card's capacity).  The columns are found by the
header's labels (``Bus-Id``, ``Util``, ``Memory-Usage``) rather than by position, so
both layouts read the same way; the process table after the cards is not read.

Recorded outputs (driver 4.20.11, 5.10.10 and 5.10.13; MLU370-X4 and MLU370-X8) and
where each was copied from: ``tests/fakes/cambricon/SOURCES.md``.  No real recording of
``cnmon info`` or its JSON was found, so only the default table is parsed.

The card number is what ``MLU_VISIBLE_DEVICES`` takes and ``torch_mlu`` numbers
``mlu:N`` by; a worker narrowed to one card sees it as ``mlu:0``.
"""

from __future__ import annotations

import re
from typing import ClassVar

from anypu.devices._tool import ToolDevice, ToolProbe, mib

__all__ = ["CAMBRICON_TFLOPS", "CambriconProbe", "parse_cnmon"]

#: ``(name pattern, dense fp16 TFLOPS)`` per device as ``cnmon`` lists it.  Cambricon's
#: MLU370-X8 launch announcement (21 March 2022, as reported e.g. at
#: http://guangxilong.com/c/032129635H022.html) gives the card 96 TFLOPS fp16 (32 fp32,
#: 256 TOPS int8) from two MLU370 chips with 48 GB of LPDDR5 in all; ``cnmon`` lists
#: each X8 with ~24 GB (23374 MiB), i.e. one row per chip, so a row gets half the card's
#: figure.  That halving is an inference from the memory, the least certain entry here.
#: No figure for the MLU370-X4 or -S4 could be sourced: they get the default 1.0 and
#: ``tflops_source: default``.
CAMBRICON_TFLOPS: tuple[tuple[str, float], ...] = ((r"MLU370-X8", 48.0),)

_HEADER = re.compile(r"^Card\s+VF\s+Name\b")
_CARD = re.compile(r"^(\d+)\s+(\S+)\s+(\S+)\s+(\S+)$")  # card, VF ("/": none), name, firmware
_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")
_MEMORY = re.compile(r"^(\d+)\s*MiB\s*/\s*(\d+)\s*MiB$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _column(labels: list[str], label: str) -> int | None:
    """Which column's header holds ``label`` as a word of its own, or None."""
    for position, text in enumerate(labels):
        if label in text.split():
            return position
    return None


def _cell(cells: list[str], at: int | None) -> str:
    return cells[at] if at is not None and at < len(cells) else ""


def _utilisation(cell: str) -> float | None:
    words = cell.split()
    found = _PERCENT.match(words[0]) if words else None
    return min(1.0, max(0.0, float(found.group(1)) / 100.0)) if found else None


def parse_cnmon(text: str) -> list[ToolDevice]:
    """Every card in ``cnmon``'s default table, in table order.

    Raises ValueError when the text has no cnmon card table (not cnmon output), when a
    card's block is cut short or its memory is unreadable, or when a card is listed twice.
    """
    lines = [line for line in text.splitlines() if line.lstrip().startswith("|")]
    header = False
    bus_at = util_at = memory_at = None  # the columns, from the header's labels
    devices: list[ToolDevice] = []
    position = 0
    while position < len(lines):
        cells = _cells(lines[position])
        position += 1
        if cells[0].startswith("Processes:"):
            break  # the process table follows the cards
        if _HEADER.match(cells[0]):
            if position >= len(lines):
                raise ValueError("cnmon header is cut short: its second line is missing")
            header = True
            bus_at, util_at = _column(cells, "Bus-Id"), _column(cells, "Util")
            memory_at = _column(_cells(lines[position]), "Memory-Usage")
            position += 1
            continue
        card = _CARD.match(cells[0])
        if not header or card is None:
            continue
        index, name = int(card.group(1)), card.group(3)
        if len(cells) < 3:
            raise ValueError(f"cnmon card {index} ({name}): its first line is cut short")
        if position >= len(lines) or _CARD.match(_cells(lines[position])[0]):
            raise ValueError(f"cnmon card {index} ({name}) has no second line")
        memory = _MEMORY.match(_cell(_cells(lines[position]), memory_at))
        position += 1
        if memory is None:
            raise ValueError(f"cnmon card {index} ({name}): no 'used MiB/ total MiB' memory")
        if any(device.index == index for device in devices):
            raise ValueError(f"cnmon lists card {index} twice")
        bus_id = _cell(cells, bus_at)
        devices.append(
            ToolDevice(
                index=index,
                name=name,
                memory_total_bytes=mib(int(memory.group(2))),
                memory_used_bytes=mib(int(memory.group(1))),
                utilisation=_utilisation(_cell(cells, util_at)),
                bus_id=bus_id if _BUS_ID.match(bus_id) else "",
            )
        )
    if not header:
        raise ValueError("no card table found (expected the output of `cnmon`)")
    return devices


class CambriconProbe(ToolProbe):
    """Cambricon MLUs as ``mlu<N>`` / ``mlu:<N>``, from ``cnmon``'s table.

    A worker on a slice sees only its card (``MLU_VISIBLE_DEVICES`` set to its number,
    CUDA hidden), as ``mlu:0``; slices share it by time.
    """

    name = "cambricon"
    kind: ClassVar[str] = "npu"
    vendor: ClassVar[str] = "cambricon"
    binary: ClassVar[str] = "cnmon"
    arguments: ClassVar[tuple[str, ...]] = ()
    id_prefix: ClassVar[str] = "mlu"
    torch_type: ClassVar[str] = "mlu"
    visible_devices: ClassVar[tuple[str, ...]] = ("MLU_VISIBLE_DEVICES",)
    tflops_table: ClassVar[tuple[tuple[str, float], ...]] = CAMBRICON_TFLOPS
    tflops_precision: ClassVar[str] = "fp16"
    parse = staticmethod(parse_cnmon)
