"""Intel GPUs (Data Center GPU Max / Flex, Arc), read from ``xpu-smi`` 1.x.

``xpu-smi`` ships with Intel's XPU Manager; there is no Python binding to rely on. No
single 1.x command gives both what a device is and what it is doing, so the probe makes
two calls and joins them on the device id:

* ``xpu-smi discovery --dump 1,2,6,16`` prints CSV, one row per device, with the fields
  named by number in ``xpu-smi discovery -h``: 1 ``Device ID``, 2 ``Device Name``,
  6 ``Core Clock Rate``, 16 ``Memory Physical Size`` (``"32768.00 MiB"``, quoted, or
  ``"N/A"`` where the driver does not say).  The header names the columns, so the parser
  reads them by name (``11``, ``PCI BDF Address``, is read too where present).
* ``xpu-smi dump -d -1 -m 0,18 -n 1`` prints one sample of metric 0 (``GPU Utilization
  (%)``) and 18 (``GPU Memory Used (MiB)``) for every device (``-d -1``), after a
  ``Timestamp, DeviceId`` prefix; values are space padded to four characters and ``N/A``
  where unavailable (utilisation needs root or ``CAP_PERFMON`` on many systems).
  Without ``-n`` the dump never ends.

Recorded outputs are in ``tests/fakes/intel/`` (``SOURCES.md`` gives each one's source:
the 1.x ``doc/smi_user_guide.md`` of ``intel/xpumanager``, and outputs pasted in that
repository's issues and in ``henrygd/beszel`` pull request 755).  The discovery command
is exactly the recorded ``xpu_smi_discovery_dump_a310_beszel755.csv``; the dump combines
the recorded ``-d "-1"`` (``xpu_smi_dump_a310_beszel755.csv``) with the documented
``-n`` (``xpu_smi_dump_doc.csv``), and its columns appear in
``xpu_smi_dump_a770_issue76.csv``.  The column formats were checked against the 1.x
source (``cli/src/comlet_discovery.cpp``, ``cli/src/comlet_dump.cpp`` at
``5c6765b6``).  ``parse_discovery_json`` reads ``xpu-smi discovery -j`` (names and PCI
addresses, no memory); the probe does not call it.

xpu-smi 2.x (2025) is a different command line; it is not read here.  Kunlunxin ships an
unrelated tool also called ``xpu-smi``: its output is rejected by these parsers, so
the probe reports it unusable instead of misreading it.

xpu-smi numbers devices as Level Zero enumerates them with
``ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE`` (a multi-stack card is one device) and
``ZE_ENABLE_PCI_ID_DEVICE_ORDER=1``, which it sets for itself
(``core/src/device/gpu/gpu_device_stub.cpp``, ``GPUDeviceStub::init``).  A worker gets
the same two settings with ``ZE_AFFINITY_MASK`` set to that id, so the mask picks the
device xpu-smi called by that number, and the worker's torch sees it as ``xpu:0``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from anypu.devices._model import Device
from anypu.devices._tool import ToolDevice, ToolProbe, mib

__all__ = [
    "DISCOVERY_ARGUMENTS",
    "DUMP_ARGUMENTS",
    "INTEL_TFLOPS",
    "IntelProbe",
    "XpuSample",
    "merge_samples",
    "parse_discovery_dump",
    "parse_discovery_json",
    "parse_dump",
]

log = logging.getLogger(__name__)

#: ``xpu-smi discovery --dump``: Device ID, Device Name, Core Clock Rate, Memory Physical Size.
DISCOVERY_ARGUMENTS: tuple[str, ...] = ("discovery", "--dump", "1,2,6,16")
#: ``xpu-smi dump``: every device, GPU Utilization (%) and GPU Memory Used (MiB), one sample.
DUMP_ARGUMENTS: tuple[str, ...] = ("dump", "-d", "-1", "-m", "0,18", "-n", "1")

#: ``(name pattern, fp32 TFLOPS)``, first match wins: vector (non-XMX) fp32 peak, to
#: compare with the fp32 figures of the NVIDIA table and the measured CPU.  Intel's own
#: product pages (ark.intel.com) could not be read from here, so the sources are:
#:
#: * Max 1550: 52 — Intel's launch figure for one 600 W OAM (Nov 2022), as relayed by
#:   clickthis.blog ("Intel Data Center GPU Max series: 128 GB HBM2e, 52 teraflops per
#:   OAM"); it is 1024 vector engines × 16 fp32 lanes × 2 FLOP × 1.6 GHz peak, the
#:   engine count and clock as listed at https://glennklockwood.com/garden/processors/pvc
#:   (which cites ark product 232873).
#: * Max 1100: 22.2 — third-party listing only (topcpu.net, "FP32 (float) 22.22
#:   TFLOPS"); it is 448 vector engines × 16 × 2 × 1.55 GHz.
#: * Arc A770: 19.66 — third-party listing only (cputronic.com, "19,66 TFLOPS" at the
#:   2400 MHz boost clock; 4096 lanes × 2 × 2.4 GHz).  The A770M (mobile) is a different
#:   part and deliberately does not match.
#:
#: Not sourced, so left out (they get the 1.0 default, marked ``tflops_source=default``):
#: Flex 170/140, Arc A310/A380/A750, Arc B-series, and devices xpu-smi names only by PCI
#: id (``Intel(R) Graphics [0x56c0]``).  No fp16/XMX figure could be sourced either.
INTEL_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"\bMax 1550\b", 52.0),
    (r"\bMax 1100\b", 22.2),
    (r"\bA770\b", 19.66),
)

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*(MiB|GiB)$")
_UNSET = frozenset({"", "N/A"})


@dataclass(frozen=True)
class XpuSample:
    """One row of ``xpu-smi dump``: utilisation in ``[0, 1]`` and memory used, or None."""

    device_id: int
    utilisation: float | None = None
    memory_used_bytes: int | None = None


def _csv_rows(text: str) -> list[list[str]]:
    """Non-blank CSV rows, each cell stripped of the padding xpu-smi adds."""
    rows = csv.reader(text.splitlines(), skipinitialspace=True)
    return [[cell.strip() for cell in row] for row in rows if any(cell.strip() for cell in row)]


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return repr(lines[0][:80]) if lines else "nothing"


def _memory_bytes(value: str) -> int:
    """``"32768.00 MiB"`` in bytes; 0 where xpu-smi prints ``N/A`` (unknown)."""
    if value in _UNSET:
        return 0
    match = _MEMORY.match(value)
    if match is None:
        raise ValueError(f"unexpected Memory Physical Size {value!r} in xpu-smi output")
    amount = float(match.group(1))
    return mib(amount * 1024 if match.group(2) == "GiB" else amount)


def parse_discovery_dump(text: str) -> list[ToolDevice]:
    """Every device in ``xpu-smi discovery --dump <ids>`` output (ids 1 and 2 at least).

    Memory is ``Memory Physical Size`` (field 16) where printed, else 0 (unknown); the bus
    id is ``PCI BDF Address`` (field 11) where printed.  Raises ValueError when the text
    is not such a dump (another tool, the table form, or an ``Error:`` line).
    """
    rows = _csv_rows(text)
    if not rows or rows[0][0] != "Device ID" or "Device Name" not in rows[0]:
        raise ValueError(
            "expected the output of `xpu-smi discovery --dump 1,2,...`"
            f" (a CSV header starting 'Device ID'), got {_first_line(text)}"
        )
    header = rows[0]
    column = {name: position for position, name in enumerate(header)}
    devices: list[ToolDevice] = []
    for row in rows[1:]:
        if len(row) != len(header):
            raise ValueError(f"xpu-smi discovery dump row {row!r} does not match {header!r}")
        if row[0] in _UNSET:
            continue
        if not row[0].isdigit():
            raise ValueError(f"unexpected Device ID {row[0]!r} in xpu-smi discovery dump")
        memory = row[column["Memory Physical Size"]] if "Memory Physical Size" in column else ""
        bus_id = row[column["PCI BDF Address"]] if "PCI BDF Address" in column else ""
        devices.append(
            ToolDevice(
                index=int(row[0]),
                name=row[column["Device Name"]],
                memory_total_bytes=_memory_bytes(memory),
                bus_id="" if bus_id in _UNSET else bus_id,
            )
        )
    return devices


def _number(value: str, what: str) -> float | None:
    if value in _UNSET:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"unexpected {what} {value!r} in xpu-smi dump output") from None


def parse_dump(text: str) -> list[XpuSample]:
    """Every sample in ``xpu-smi dump -m ...`` output, in the order printed.

    Reads ``GPU Utilization (%)`` (metric 0) and ``GPU Memory Used (MiB)`` (metric 18);
    a metric not asked for, blank or ``N/A`` is None.  Raises ValueError when the text is
    not device-level dump output (another tool, a tile-level ``-t`` dump, or an
    ``Error:`` line, which xpu-smi prints on stdout).
    """
    rows = _csv_rows(text)
    if not rows or rows[0][:2] != ["Timestamp", "DeviceId"]:
        raise ValueError(
            "expected the output of `xpu-smi dump -d ... -m ...`"
            f" (a CSV header starting 'Timestamp, DeviceId'), got {_first_line(text)}"
        )
    header = rows[0]
    if "TileId" in header:
        raise ValueError("xpu-smi dump is per tile (run without -t for device-level values)")
    utilisation = header.index("GPU Utilization (%)") if "GPU Utilization (%)" in header else None
    memory = header.index("GPU Memory Used (MiB)") if "GPU Memory Used (MiB)" in header else None
    samples: list[XpuSample] = []
    for row in rows[1:]:
        if row[0].startswith("Error"):
            raise ValueError(f"xpu-smi dump failed: {','.join(row)}")
        if len(row) != len(header) or not row[1].isdigit():
            raise ValueError(f"xpu-smi dump row {row!r} does not match {header!r}")
        busy = _number(row[utilisation], "GPU Utilization") if utilisation is not None else None
        used = _number(row[memory], "GPU Memory Used") if memory is not None else None
        samples.append(
            XpuSample(
                device_id=int(row[1]),
                utilisation=min(1.0, max(0.0, busy / 100.0)) if busy is not None else None,
                memory_used_bytes=mib(used) if used is not None else None,
            )
        )
    return samples


def merge_samples(devices: Iterable[ToolDevice], samples: Iterable[XpuSample]) -> list[ToolDevice]:
    """Each device with its latest sample's readings (matched on device id); devices
    without a sample keep None, samples of devices not listed are dropped."""
    latest = {sample.device_id: sample for sample in samples}
    merged: list[ToolDevice] = []
    for device in devices:
        sample = latest.get(device.index)
        if sample is None:
            merged.append(device)
        else:
            merged.append(
                dataclasses.replace(
                    device,
                    utilisation=sample.utilisation,
                    memory_used_bytes=sample.memory_used_bytes,
                )
            )
    return merged


def parse_discovery_json(text: str) -> list[ToolDevice]:
    """Every device in ``xpu-smi discovery -j`` output: id, name and PCI address.

    The list form has no memory fields, so ``memory_total_bytes`` is 0 (unknown).
    Raises ValueError when the text is not that JSON document.
    """
    try:
        document = json.loads(text)
    except ValueError:
        raise ValueError(
            f"expected the JSON of `xpu-smi discovery -j`, got {_first_line(text)}"
        ) from None
    entries = document.get("device_list") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("expected `xpu-smi discovery -j` JSON with a 'device_list' array")
    devices: list[ToolDevice] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ValueError(f"unexpected device_list entry {entry!r} in xpu-smi JSON")
        device_id = entry.get("device_id")
        name = entry.get("device_name")
        if not isinstance(device_id, int) or isinstance(device_id, bool):
            raise ValueError(f"device_list entry without an integer device_id: {entry!r}")
        if not isinstance(name, str):
            raise ValueError(f"device_list entry without a device_name: {entry!r}")
        bus_id = entry.get("pci_bdf_address")
        devices.append(
            ToolDevice(
                index=device_id,
                name=name,
                memory_total_bytes=0,
                bus_id=bus_id if isinstance(bus_id, str) else "",
            )
        )
    return devices


class IntelProbe(ToolProbe):
    """Intel GPUs as ``gpu<N>`` (N: xpu-smi's device id) with torch device ``xpu:<N>``.

    ``available()`` and ``probe()`` run both calls; ``readings()`` reuses the device list
    of the last of those and runs only the dump, since each xpu-smi start initialises
    Level Zero for every device.  When the dump fails (or prints ``N/A``) the devices are
    still offered, without readings.  A device whose memory xpu-smi prints as ``N/A``
    (seen on Arc cards) is offered with 0 bytes, so nothing is placed on it until its
    size is known, and ``extra["memory_total"]`` says it is unknown.
    """

    name = "intel"
    kind: ClassVar[str] = "gpu"
    vendor: ClassVar[str] = "intel"
    binary: ClassVar[str] = "xpu-smi"
    id_prefix: ClassVar[str] = "gpu"
    torch_type: ClassVar[str] = "xpu"
    visible_devices: ClassVar[tuple[str, ...]] = ("ZE_AFFINITY_MASK",)
    tflops_table: ClassVar[tuple[tuple[str, float], ...]] = INTEL_TFLOPS
    tflops_precision: ClassVar[str] = "fp32"

    _listed: list[ToolDevice] | None = None  # discovery's devices, kept between readings

    def read(self, path: str) -> list[ToolDevice]:
        """The device list (from ``discovery --dump``, kept between readings) merged with
        one ``dump`` sample per device."""
        listed = self._listed
        if listed is None:
            listed = parse_discovery_dump(self._run([path, *DISCOVERY_ARGUMENTS], self._timeout))
            self._listed = listed
        try:
            samples = parse_dump(self._run([path, *DUMP_ARGUMENTS], self._timeout))
        except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
            log.debug("xpu-smi dump gave no readings: %s", exc)
            samples = []
        return merge_samples(listed, samples)

    def available(self) -> bool:
        self._listed = None  # look again: this is the call that finds devices
        return super().available()

    def probe(self) -> list[Device]:
        self._listed = None
        devices = super().probe()
        for device in devices:
            if device.memory_bytes == 0:
                # xpu-smi printed N/A: total unknown, so "free" would be meaningless.
                device.extra.pop("memory_free_bytes", None)
                device.extra["memory_total"] = "unknown"
        return devices

    @classmethod
    def slice_environment(cls, device: Device, slice_index: int) -> dict[str, str]:
        """``ZE_AFFINITY_MASK`` set to the xpu-smi device id, with the enumeration
        settings xpu-smi numbers devices under (see the module docstring)."""
        return {
            **super().slice_environment(device, slice_index),
            "ZE_FLAT_DEVICE_HIERARCHY": "COMPOSITE",
            "ZE_ENABLE_PCI_ID_DEVICE_ORDER": "1",
        }
