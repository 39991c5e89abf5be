"""MetaX (沐曦) GPUs, read from the table that ``mx-smi`` prints with no arguments.

``mx-smi`` ships with every MetaX driver install (there is no Python binding to rely
on).  With no arguments it prints a version line, ``Attached GPUs : N``, a banner with
the driver, MACA and BIOS versions, and one two-row block per GPU (the device table,
split into three ``|`` cells per row), then a process table::

    | 0           MetaX C550             | 0000:0f:00.0        | 0%                   |
    | 29C         53W / 450W             | 858/65536 MiB       | Available            |

Row one is the index and name, the bus id and the utilisation; row two the temperature
and power, ``used/total MiB`` of device memory, and the GPU state.  The recorded outputs
are real published captures (``tests/fakes/metax/SOURCES.md`` gives each one's source):
mx-smi 2.2.4 (``MetaX C550``, ``53W / 450W``, state ``Available``) and mx-smi 2.1.6
(``MXC550``, one wattage, no state column).  Cells are found by their header labels
(``Bus-id``, ``GPU-Util``, ``Memory-Usage``), so both read the same way.

MetaX's PyTorch works through the CUDA API, so a device is ``cuda:<index>``; a worker is
narrowed with both ``CUDA_VISIBLE_DEVICES`` (what vLLM-metax and Ray set) and
``MACA_VISIBLE_DEVICES`` (which RLinf says MetaX's runtime reads; SOURCES.md found no
document saying which wins, so both get the same index).
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

__all__ = ["METAX_TFLOPS", "MetaxProbe", "parse_mx_smi"]

#: ``(name pattern, dense fp16 TFLOPS)``; first match wins.  C500: 280 TFLOPS FP16 (and
#: 280 BF16), MetaX's official figures for the 曦云 C500 OAM as quoted in Gitee AI's
#: MetaX guide (https://ai.gitee.com/docs/compute/domestic-gpu); the MetaX data sheet
#: itself is not in the search index, and the quote does not say whether the figure is
#: dense.  The pattern takes ``MetaX C500`` and ``MXC500`` but not C500X or C550.  C550
#: (the recorded cards) is left out on purpose: no per-precision figure for it could be
#: sourced (a public C550 arch profile in the search index says MetaX has published
#: none, and measures about 275 TFLOPS FP16 GEMM), so it reports 1.0 with
#: ``tflops_source`` "default".
METAX_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"(?<![0-9A-Za-z])(?:MX)?C500(?![0-9A-Za-z])", 280.0),
)

_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")
_INDEX_NAME = re.compile(r"^(\d+)\s+(\S.*)$")
_MEMORY = re.compile(r"^(\d+)\s*/\s*(\d+)\s*MiB$")
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)\s*%$")
_ATTACHED = re.compile(r"^Attached GPUs\s*:\s*(\d+)\s*$", re.MULTILINE)
#: The version line (``mx-smi  version: 2.2.4``) and the banner (``| MX-SMI 2.2.4 ...``).
_SIGNATURE = re.compile(r"\bMX-SMI\b|MetaX System Management Interface", re.IGNORECASE)

_NOT_MX_SMI = "no device table found (expected the output of `mx-smi`)"


def _utilisation(cell: str) -> float | None:
    first = cell.split()[0] if cell.split() else ""
    if first.upper() == "N/A":
        return None
    match = _PERCENT.match(first)
    if match is None:
        raise ValueError(f"unreadable mx-smi GPU-Util {cell!r}")
    return min(1.0, max(0.0, float(match.group(1)) / 100.0))


def parse_mx_smi(text: str) -> list[ToolDevice]:
    """Every GPU in the device table of ``mx-smi`` (no arguments), in table order.

    Raises ValueError when the text has no device table (not mx-smi output), when a
    device block cannot be read, or when the table lists fewer GPUs than
    ``Attached GPUs`` says (no GPU is dropped silently).
    """
    if not _SIGNATURE.search(text):
        raise ValueError(_NOT_MX_SMI)
    header, blocks = checked_smi_table(text, "mx-smi")
    bus_at = locate_column(header, "bus-id", "mx-smi")
    util_at = locate_column(header, "-util", "mx-smi")
    memory_at = locate_column(header, "memory-usage", "mx-smi")
    devices: list[ToolDevice] = []
    for block in blocks:
        named = _INDEX_NAME.match(block[0][0])
        if named is None:
            raise ValueError(f"mx-smi device block has no index and name: {block[0][0]!r}")
        bus_id = block[bus_at[0]][bus_at[1]]
        if not _BUS_ID.match(bus_id):
            raise ValueError(f"unreadable mx-smi bus id {bus_id!r}")
        memory = _MEMORY.match(block[memory_at[0]][memory_at[1]])
        if memory is None:
            raise ValueError(f"unreadable mx-smi memory {block[memory_at[0]][memory_at[1]]!r}")
        devices.append(
            ToolDevice(
                index=int(named.group(1)),
                name=named.group(2),
                memory_total_bytes=mib(int(memory.group(2))),
                memory_used_bytes=mib(int(memory.group(1))),
                utilisation=_utilisation(block[util_at[0]][util_at[1]]),
                bus_id=bus_id,
            )
        )
    attached = _ATTACHED.search(text)
    if attached is not None and int(attached.group(1)) != len(devices):
        raise ValueError(
            f"mx-smi says {attached.group(1)} GPUs are attached but lists {len(devices)}"
        )
    return devices


class MetaxProbe(ToolProbe):
    """MetaX GPUs as ``gpu<index>`` with torch device ``cuda:<index>``, from ``mx-smi``."""

    name = "metax"
    kind: ClassVar[str] = "gpu"
    vendor: ClassVar[str] = "metax"
    binary: ClassVar[str] = "mx-smi"
    arguments: ClassVar[tuple[str, ...]] = ()
    id_prefix: ClassVar[str] = "gpu"
    torch_type: ClassVar[str] = "cuda"
    visible_devices: ClassVar[tuple[str, ...]] = ("CUDA_VISIBLE_DEVICES", "MACA_VISIBLE_DEVICES")
    tflops_table: ClassVar[tuple[tuple[str, float], ...]] = METAX_TFLOPS
    tflops_precision: ClassVar[str] = "fp16"

    parse = staticmethod(parse_mx_smi)
