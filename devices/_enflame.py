"""Enflame GCUs, read from the table that ``efsmi`` (no arguments) prints.

Under the banner (``Enflame System Management Interface``) and the version line, a
two-line header (``DEV NAME | FW VER | BUS-ID ECC`` and ``TEMP … | Mem GCU Virt | DUsed
SN``) is followed by one two-line block per card, each line split into three columns by
``|``.  A block's first line reads ``<dev> <name>`` (``S60``, or ``Enflame S60G`` in
newer builds), the firmware, then the bus id (``00:2e:00.0``: no PCI domain) and ECC; its
second line reads temperature and power, then the memory *size* (``49120MiB``) and
virtualisation, then ``DUsed``, which is the GCU's busy percentage, and the serial number.
The table prints no memory in use (``efsmi -q`` does), so ``memory_used_bytes`` is None.
Blocks are found by the bus id in the first line's third column, as Enflame's own
device plugin (gcushare) finds them; older (1.2, 1.4) and newer (1.6) layouts differ in
rules and spacing only.

Recorded outputs (efsmi 1.2.0.301, 1.4.0.505 and 1.6.3.12; S60 and S60G) and where each
was copied from: ``tests/fakes/enflame/SOURCES.md``.  The ``efsmi -q`` recording there is
an abridged comment, not a capture, and is not parsed (``parse_efsmi`` rejects it).

The card number is what ``TOPS_VISIBLE_DEVICES`` takes and ``torch_gcu`` numbers
``gcu:N`` by (the PrivateUse1 convention; the sources show ``gcu`` alone); a worker
narrowed to one card sees it as ``gcu:0``.
"""

from __future__ import annotations

import re
from typing import ClassVar

from anypu.devices._tool import ToolDevice, ToolProbe, mib

__all__ = ["ENFLAME_TFLOPS", "EnflameProbe", "parse_efsmi"]

#: ``(name pattern, dense fp16 TFLOPS)``: empty.  No throughput figure for the S60 or
#: S60G could be sourced (Enflame's product pages were not found in any searchable
#: source), so GCUs get the default 1.0 and ``tflops_source: default``.
ENFLAME_TFLOPS: tuple[tuple[str, float], ...] = ()

_HEADER = re.compile(r"^DEV\s+NAME\b")
_CARD = re.compile(r"^(\d+)\s+(\S.*?)$")
_BUS_ID = re.compile(r"^(?:[0-9A-Fa-f]{2,8}:)?[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")
_MEMORY = re.compile(r"^(\d+)\s*MiB")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _card_line(cells: list[str]) -> re.Match[str] | None:
    """The ``<dev> <name>`` match of a block's first line (a bus id opens its third
    column), or None for any other line."""
    words = cells[2].split() if len(cells) >= 3 else []
    if not words or not _BUS_ID.match(words[0]):
        return None
    return _CARD.match(cells[0])


def parse_efsmi(text: str) -> list[ToolDevice]:
    """Every card in ``efsmi``'s default table, in table order.

    Raises ValueError when the text has no card table (not efsmi's table), when a card's
    block is cut short or its memory size is unreadable, or when a card is listed twice.
    """
    lines = [line for line in text.splitlines() if line.lstrip().startswith("|")]
    header = False
    devices: list[ToolDevice] = []
    for position, line in enumerate(lines):
        cells = _cells(line)
        if _HEADER.match(cells[0]):
            header = True
            continue
        card = _card_line(cells) if header else None
        if card is None:
            continue
        index, name = int(card.group(1)), card.group(2)
        second = _cells(lines[position + 1]) if position + 1 < len(lines) else []
        if len(second) < 3 or _card_line(second) is not None:
            raise ValueError(f"efsmi card {index} ({name}) has no second line")
        memory = _MEMORY.match(second[1])
        if memory is None:
            raise ValueError(f"efsmi card {index} ({name}): no memory size ('<n>MiB')")
        words = second[2].split()
        busy = _PERCENT.match(words[0]) if words else None
        if any(device.index == index for device in devices):
            raise ValueError(f"efsmi lists card {index} twice")
        devices.append(
            ToolDevice(
                index=index,
                name=name,
                memory_total_bytes=mib(int(memory.group(1))),
                memory_used_bytes=None,
                utilisation=(min(1.0, max(0.0, float(busy.group(1)) / 100.0)) if busy else None),
                bus_id=cells[2].split()[0],
            )
        )
    if not header:
        raise ValueError("no card table found (expected the output of `efsmi`)")
    return devices


class EnflameProbe(ToolProbe):
    """Enflame GCUs as ``gcu<N>`` / ``gcu:<N>``, from ``efsmi``'s table.

    A worker on a slice sees only its card (``TOPS_VISIBLE_DEVICES`` set to its number,
    CUDA hidden), as ``gcu:0``; slices share it by time.
    """

    name = "enflame"
    kind: ClassVar[str] = "npu"
    vendor: ClassVar[str] = "enflame"
    binary: ClassVar[str] = "efsmi"
    arguments: ClassVar[tuple[str, ...]] = ()
    id_prefix: ClassVar[str] = "gcu"
    torch_type: ClassVar[str] = "gcu"
    visible_devices: ClassVar[tuple[str, ...]] = ("TOPS_VISIBLE_DEVICES",)
    tflops_table: ClassVar[tuple[tuple[str, float], ...]] = ENFLAME_TFLOPS
    tflops_precision: ClassVar[str] = "fp16"
    parse = staticmethod(parse_efsmi)
