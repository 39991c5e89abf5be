"""Iluvatar CoreX (天数智芯) GPUs, read from ``ixsmi``'s nvidia-smi-style CSV query.

``ixsmi`` ships with the CoreX driver.  The probe runs the query gpustack's detector
ran, in exactly the recorded form::

    ixsmi --format=csv,noheader --query-gpu=index,name,memory.total,memory.used,utilization.gpu,temperature.gpu

which prints one line per GPU, fields separated by ``, `` and carrying their units::

    0, Iluvatar MR-V50, 16384 MiB, 116 MiB, 0 %, 30 C

It names no bus id (``pci.bus_id`` is a documented query field, but no recording of it
was found, so the probe keeps to the recorded query).  With no arguments ``ixsmi``
prints a table like nvidia-smi's with different columns, two rows per GPU::

    | 0    Iluvatar BI-V150         | 00000000:13:00.0     | 1500MHz   1600MHz    |
    | N/A  35C   P0    N/A / N/A    | 64MiB / 32768MiB     | 0%        Default    |

(index and name, bus id, clocks; fan, temperature, perf state and power,
``usedMiB / totalMiB``, utilisation and compute mode).  ``parse_ixsmi_table`` reads it,
for a caller that has the table; the probe uses the CSV, a format meant for machines
whose columns are named by the query rather than placed by a layout.  All the recorded
outputs are real published captures (``tests/fakes/iluvatar/SOURCES.md`` gives each
one's source): tables from IX-ML 4.0.0 to 4.3.0 (16 × BI-V150, 1 × BI-V150S, fan ``N/A``
or ``0%``, power ``N/A / N/A`` on one chip of each board) and the CSV sample (MR-V50,
MR-V100).

CoreX PyTorch builds use ``torch.cuda``, so a device is ``cuda:<index>``;
``CUDA_VISIBLE_DEVICES`` narrows a process (``IX_VISIBLE_DEVICES`` is the container
runtime's, like ``NVIDIA_VISIBLE_DEVICES``, and is not set here).
"""

from __future__ import annotations

import re
from typing import ClassVar

from anypu.devices._tool import (
    ToolDevice,
    ToolProbe,
    checked_smi_table,
    locate_column,
    mib,
)

__all__ = [
    "ILUVATAR_TFLOPS",
    "QUERY_FIELDS",
    "IluvatarProbe",
    "parse_ixsmi_csv",
    "parse_ixsmi_table",
]

#: The fields the probe queries, in the order ``parse_ixsmi_csv`` reads them.
QUERY_FIELDS = (
    "index",
    "name",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "temperature.gpu",
)

#: ``(name pattern, dense fp16 TFLOPS)``; first match wins.  MR-V100 (智铠100): 96 TFLOPS
#: FP16 (24 FP32, 192 INT8 TOPS), "根据官方产品规格书(MR-V100)" as quoted in Gitee AI's
#: Iluvatar guide (https://ai.gitee.com/docs/compute/clusters_gpu/iluvatar_MR-V100_gpu);
#: the Iluvatar data sheet itself is not in the search index.  No figure could be sourced
#: for BI-V150/BI-V150S (Gitee AI's BI-V150 page gives memory and power but no TFLOPS;
#: note also that ixsmi lists each of a BI-V150 board's two chips as a GPU, so a board
#: figure would need halving), BI-V100 or MR-V50: they report 1.0 ("default").
ILUVATAR_TFLOPS: tuple[tuple[str, float], ...] = ((r"MR-V100(?![0-9A-Za-z])", 96.0),)

_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")
_INDEX_NAME = re.compile(r"^(\d+)\s+(\S.*)$")
_TABLE_MEMORY = re.compile(r"^(\d+)\s*MiB\s*/\s*(\d+)\s*MiB$")
_CSV_MIB = re.compile(r"^(\d+(?:\.\d+)?)\s*MiB$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
#: What nvidia-smi-style queries print for a field the device does not report.
_NOT_REPORTED = frozenset({"N/A", "[N/A]", "[NOT SUPPORTED]", "NOT SUPPORTED"})

_NOT_CSV = "expected the output of `ixsmi --format=csv,noheader --query-gpu=" + ",".join(
    QUERY_FIELDS
)
_NOT_TABLE = "no device table found (expected the output of `ixsmi`)"


def _percent(value: str, what: str) -> float | None:
    if value.upper() in _NOT_REPORTED:
        return None
    match = _PERCENT.match(value)
    if match is None:
        raise ValueError(f"unreadable ixsmi {what} {value!r}")
    return min(1.0, max(0.0, float(match.group(1)) / 100.0))


# -- the CSV query (what the probe runs) -------------------------------------------------


def parse_ixsmi_csv(text: str) -> list[ToolDevice]:
    """Every GPU in the output of the probe's ``ixsmi --query-gpu`` (``QUERY_FIELDS``,
    ``--format=csv,noheader``), in the order printed.

    Raises ValueError on any line that is not such a row (a header row included), and on
    output with no row at all: no GPU is dropped silently.
    """
    devices: list[ToolDevice] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != len(QUERY_FIELDS) or not fields[0].isdigit():
            raise ValueError(f"unreadable line {line!r} ({_NOT_CSV})")
        index, name, total, used, busy, _temperature = fields
        total_mib = _CSV_MIB.match(total)
        if total_mib is None or not name:
            raise ValueError(f"unreadable line {line!r} ({_NOT_CSV})")
        used_bytes: int | None = None
        if used.upper() not in _NOT_REPORTED:
            used_mib = _CSV_MIB.match(used)
            if used_mib is None:
                raise ValueError(f"unreadable memory.used {used!r} in {line!r}")
            used_bytes = mib(float(used_mib.group(1)))
        devices.append(
            ToolDevice(
                index=int(index),
                name=name,
                memory_total_bytes=mib(float(total_mib.group(1))),
                memory_used_bytes=used_bytes,
                utilisation=_percent(busy, "utilization.gpu"),
            )
        )
    if not devices:
        raise ValueError(f"no device rows ({_NOT_CSV})")
    return devices


# -- the default table ---------------------------------------------------------------------


def parse_ixsmi_table(text: str) -> list[ToolDevice]:
    """Every GPU in the table ``ixsmi`` (or ``ixsmi -l``) prints, in table order.

    Cells are found by their header labels (``Bus-Id``, ``Memory-Usage``, ``GPU-Util``,
    the utilisation being the first value of its cell).  Raises ValueError when the text
    has no device table (not ixsmi output) or a device block cannot be read.
    """
    if "IX-ML" not in text:  # the banner: ``|  IX-ML: 4.3.0       Driver Version: ...``
        raise ValueError(_NOT_TABLE)
    header, blocks = checked_smi_table(text, "ixsmi")
    bus_at = locate_column(header, "bus-id", "ixsmi")
    memory_at = locate_column(header, "memory-usage", "ixsmi")
    util_at = locate_column(header, "gpu-util", "ixsmi")
    devices: list[ToolDevice] = []
    for block in blocks:
        named = _INDEX_NAME.match(block[0][0])
        if named is None:
            raise ValueError(f"ixsmi device block has no index and name: {block[0][0]!r}")
        bus_id = block[bus_at[0]][bus_at[1]]
        if not _BUS_ID.match(bus_id):
            raise ValueError(f"unreadable ixsmi bus id {bus_id!r}")
        memory_cell = block[memory_at[0]][memory_at[1]]
        memory = _TABLE_MEMORY.match(memory_cell)
        if memory is None:
            raise ValueError(f"unreadable ixsmi memory {memory_cell!r}")
        busy = block[util_at[0]][util_at[1]].split()
        devices.append(
            ToolDevice(
                index=int(named.group(1)),
                name=named.group(2),
                memory_total_bytes=mib(int(memory.group(2))),
                memory_used_bytes=mib(int(memory.group(1))),
                utilisation=_percent(busy[0] if busy else "", "GPU-Util"),
                bus_id=bus_id,
            )
        )
    return devices


class IluvatarProbe(ToolProbe):
    """Iluvatar CoreX GPUs as ``gpu<index>`` with torch device ``cuda:<index>``."""

    name = "iluvatar"
    kind: ClassVar[str] = "gpu"
    vendor: ClassVar[str] = "iluvatar"
    binary: ClassVar[str] = "ixsmi"
    arguments: ClassVar[tuple[str, ...]] = (
        "--format=csv,noheader",
        "--query-gpu=" + ",".join(QUERY_FIELDS),
    )
    id_prefix: ClassVar[str] = "gpu"
    torch_type: ClassVar[str] = "cuda"
    visible_devices: ClassVar[tuple[str, ...]] = ("CUDA_VISIBLE_DEVICES",)
    tflops_table: ClassVar[tuple[tuple[str, float], ...]] = ILUVATAR_TFLOPS
    tflops_precision: ClassVar[str] = "fp16"

    parse = staticmethod(parse_ixsmi_csv)
