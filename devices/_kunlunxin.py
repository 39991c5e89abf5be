"""Kunlunxin (昆仑芯) XPUs, read from the table that ``xpu_smi`` prints with no arguments.

``xpu_smi`` (underscore: Kunlunxin's tool, e.g. ``/opt/xre/bin/xpu_smi``; Intel ships an
unrelated ``xpu-smi``) comes with the XRE runtime.  Its table has two recorded shapes,
both real published captures (``tests/fakes/kunlunxin/SOURCES.md`` gives each one's
source):

* XRE 5.x / P800 (``xpu_smi.txt``): nvidia-smi-like, an ``XPU-SMI`` banner and **three**
  rows per XPU::

      |   0  P800 OAM           N/A   | 00000000:03:00.0 N/A |                    0 |
      | N/A   37C  N/A     88W / 400W |      0MiB / 98304MiB |      0%      Default |
      |                               |      0MiB /    96MiB |             Disabled |

  (index, name and persistence mode, bus id and display, ECC errors; fan, temperature,
  perf state and power, HBM ``used / total``, utilisation and compute mode; and a third
  row whose memory cell is the 96 MiB of **L3 on-chip SRAM**, not device memory).
  Cells are found by their header labels, so memory is read from the row labelled
  ``Memory-Usage`` and never from the one labelled ``L3-Usage``.
* XRE 4.x / R200–R300 (``xpu_smi_xre4.31_r300.txt``): ``Runtime Version`` and
  ``Driver Version`` lines, then sections ``DEVICES``, ``VIDEO`` and ``PROCESSES``; the
  DEVICES table has one row per XPU with named columns ``DevID | PCI Addr | Model | SN |
  INODE | UseRate | L3 | Memory``, memory written ``used / total MB``.  Those MB are
  MiB (32768 for a 32 GB R300; FlagPerf's xpu_smi monitor reads the same figures as
  MiB), and the ``L3`` column is again on-chip memory, not read.

Kunlun's PyTorch stack presents the cards through ``torch.cuda`` (vLLM-Kunlun's platform:
device type ``cuda``), so a device is ``xpu<index>`` with torch device ``cuda:<index>``;
a worker is narrowed with ``XPU_VISIBLE_DEVICES`` (vLLM-Kunlun's documented variable)
and ``CUDA_VISIBLE_DEVICES`` (its tutorials export both).
"""

from __future__ import annotations

import re
from typing import ClassVar

from anypu.devices._tool import (
    ToolDevice,
    ToolProbe,
    check_smi_blocks,
    locate_column,
    mib,
    smi_device_table,
    table_cells,
)

__all__ = ["KUNLUNXIN_TFLOPS", "KunlunxinProbe", "parse_xpu_smi"]

#: ``(name pattern, dense fp16 TFLOPS)``; first match wins.  R300 (the OAM module of the
#: 2nd-generation chip): 125 = 1 PFLOPS FP16 / 8, from Kunlunxin's own description of the
#: R480-X8 board that carries 8 R300 ("单机可提供高达1 Peta Ops @FP16的AI算力和256G显存",
#: in its vendor section of FlagOpen/FlagPerf ``training/kunlunxin/README.md``; a public
#: survey quotes the same sentence from https://www.kunlunxin.com/product/272.html); the
#: board figure is rounded, so this one is too.  R300+ is left out (no figure found).  R200 /
#: R200-8F: 128 TFLOPS FP16 (256 INT8 TOPS, 32 FP32), the R200 product page
#: https://www.kunlunxin.com/product/274.html as quoted in a public Kunlunxin survey found
#: through the search index (the page itself is not in it).  P800 is left out: Kunlunxin
#: publishes no P800 data sheet; the ~345 TFLOPS FP16 in circulation is an analysts'
#: figure.  P800 therefore reports 1.0 with ``tflops_source`` "default".
KUNLUNXIN_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"^R300$", 125.0),
    (r"^R200(?:-8F)?$", 128.0),
)

_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")
#: ``0  P800 OAM           N/A``: index, name, then the persistence mode after 2+ spaces.
_INDEX_NAME = re.compile(r"^(\d+)\s+(\S.*?)(?:\s{2,}\S+)?$")
_MEMORY = re.compile(r"^(\d+)\s*(?:MiB)?\s*/\s*(\d+)\s*(MiB|MB)$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")

_NOT_XPU_SMI = "no device table found (expected the output of `xpu_smi`)"


def _percent(value: str, what: str) -> float | None:
    if value.upper() == "N/A":
        return None
    match = _PERCENT.match(value)
    if match is None:
        raise ValueError(f"unreadable xpu_smi {what} {value!r}")
    return min(1.0, max(0.0, float(match.group(1)) / 100.0))


def _memory(cell: str) -> tuple[int, int]:
    """``(used, total)`` bytes of a ``used / total`` memory cell (MiB, or XRE 4's MB)."""
    match = _MEMORY.match(cell)
    if match is None:
        raise ValueError(f"unreadable xpu_smi memory {cell!r}")
    return mib(int(match.group(1))), mib(int(match.group(2)))


def _bus_id(value: str) -> str:
    if not _BUS_ID.match(value):
        raise ValueError(f"unreadable xpu_smi bus id {value!r}")
    return value


# -- XRE 5.x / P800: the nvidia-smi-like table ---------------------------------------------


def _parse_table(header: list[list[str]], blocks: list[list[list[str]]]) -> list[ToolDevice]:
    if not header or not header[0]:
        raise ValueError(_NOT_XPU_SMI)
    check_smi_blocks(header, blocks, "xpu_smi")
    bus_at = locate_column(header, "bus-id", "xpu_smi")
    memory_at = locate_column(
        header, "memory-usage", "xpu_smi"
    )  # HBM; the "L3-Usage" row is on-chip SRAM
    util_at = locate_column(header, "xpu-util", "xpu_smi")
    devices: list[ToolDevice] = []
    for block in blocks:
        named = _INDEX_NAME.match(block[0][0])
        if named is None:
            raise ValueError(f"xpu_smi device block has no index and name: {block[0][0]!r}")
        bus = block[bus_at[0]][bus_at[1]].split()  # "00000000:03:00.0 N/A": bus id, Disp.A
        used, total = _memory(block[memory_at[0]][memory_at[1]])
        busy = block[util_at[0]][util_at[1]].split()  # "0%      Default"
        devices.append(
            ToolDevice(
                index=int(named.group(1)),
                name=named.group(2),
                memory_total_bytes=total,
                memory_used_bytes=used,
                utilisation=_percent(busy[0] if busy else "", "XPU-Util"),
                bus_id=_bus_id(bus[0] if bus else ""),
            )
        )
    return devices


# -- XRE 4.x: the DEVICES section ------------------------------------------------------------


def _parse_devices_section(lines: list[str]) -> list[ToolDevice]:
    """The rows of the table after the ``DEVICES`` line, by its column names."""
    columns: list[str] | None = None
    devices: list[ToolDevice] = []
    for line in lines:
        if line.startswith("-"):
            continue  # rules above, between and below the rows
        if not line.startswith("|"):
            break  # the next section (VIDEO)
        cells = table_cells(line)
        if columns is None:
            columns = cells
            missing = {"DevID", "PCI Addr", "Model", "UseRate", "Memory"} - set(columns)
            if missing:
                raise ValueError(f"xpu_smi DEVICES table has no {sorted(missing)} column")
            continue
        if len(cells) != len(columns):
            raise ValueError(f"xpu_smi DEVICES row does not match its header: {line!r}")
        row = dict(zip(columns, cells, strict=True))
        if not row["DevID"].isdigit() or not row["Model"]:
            raise ValueError(f"unreadable xpu_smi DEVICES row {line!r}")
        used, total = _memory(row["Memory"])  # "L3" is on-chip memory: not read
        devices.append(
            ToolDevice(
                index=int(row["DevID"]),
                name=row["Model"],
                memory_total_bytes=total,
                memory_used_bytes=used,
                utilisation=_percent(row["UseRate"], "UseRate"),
                bus_id=_bus_id(row["PCI Addr"]),
            )
        )
    if columns is None:
        raise ValueError(_NOT_XPU_SMI)
    return devices


def parse_xpu_smi(text: str) -> list[ToolDevice]:
    """Every XPU ``xpu_smi`` (no arguments) lists, in table order, from either layout.

    Raises ValueError when the text has neither the XRE 5.x device table nor the XRE 4.x
    DEVICES section (not xpu_smi output), or when a device row cannot be read.
    """
    table = smi_device_table(text)
    if table is not None and "XPU-SMI" in text:  # the XRE 5.x banner: ``| XPU-SMI  Driver ...``
        return _parse_table(*table)
    lines = text.splitlines()
    for at, line in enumerate(lines):
        if line.strip() == "DEVICES":
            return _parse_devices_section(lines[at + 1 :])
    raise ValueError(_NOT_XPU_SMI)


class KunlunxinProbe(ToolProbe):
    """Kunlunxin XPUs as ``xpu<index>`` with torch device ``cuda:<index>``, from ``xpu_smi``."""

    name = "kunlunxin"
    kind: ClassVar[str] = "npu"
    vendor: ClassVar[str] = "kunlunxin"
    binary: ClassVar[str] = "xpu_smi"
    arguments: ClassVar[tuple[str, ...]] = ()
    id_prefix: ClassVar[str] = "xpu"
    torch_type: ClassVar[str] = "cuda"
    visible_devices: ClassVar[tuple[str, ...]] = ("XPU_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")
    tflops_table: ClassVar[tuple[tuple[str, float], ...]] = KUNLUNXIN_TFLOPS
    tflops_precision: ClassVar[str] = "fp16"

    parse = staticmethod(parse_xpu_smi)
