"""Apple-silicon GPUs (M-series), used through PyTorch's MPS backend.

An Apple-silicon Mac has one GPU, on the same chip as the CPU and sharing its memory.
The probe offers it only on macOS (``sys.platform == "darwin"``) where
``torch.backends.mps.is_available()`` (torch imported only then), and reads two tools:

* ``system_profiler SPDisplaysDataType -json`` prints ``{"SPDisplaysDataType": [gpu,
  ...]}``, every value a string: ``sppci_model`` is the chip (``"Apple M3 Max"``) and
  ``sppci_cores`` the GPU core count (``"40"``).  ``_name`` is not read: older macOS
  builds put ``kHW_AppleM1Item`` there.  There is no memory, utilisation or memory-used
  field on Apple silicon.  The recording in ``tests/fakes/apple/`` is from
  ``mpmdw/JouleWise`` (an M3 Max, macOS 15.5; ``SOURCES.md`` has the commit).
* ``sysctl -n hw.memsize`` prints the unified memory in bytes (``17179869184``); the
  GPU's memory is this, shared with the CPU.  No recording of it could be found, so its
  parser is tested on the documented format only.

MPS exposes one device, ``mps``, and has no variable that picks or hides a device, so a
worker's environment gets nothing (``slice_environment`` is empty).  Intel Macs with an
AMD GPU can also run MPS; their GPUs are not Apple's and are not offered here.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from anypu.devices._model import Device
from anypu.devices._probe import Probe
from anypu.devices._tool import RunTool, run_tool

__all__ = [
    "APPLE_TFLOPS_PER_CORE",
    "AppleGpu",
    "AppleProbe",
    "apple_tflops",
    "parse_displays",
    "parse_memsize",
]

log = logging.getLogger(__name__)

#: ``(sppci_model pattern, fp32 TFLOPS per GPU core)``, first match wins; a chip's
#: figure is this times its ``sppci_cores`` (binned parts have fewer cores).  Apple
#: quotes fp32 throughput for the M1 family only, and it scales with the cores: 2.6
#: TFLOPS for the 8-core M1 (Apple's M1 announcement, 2020-11-10, as reported at
#: https://www.macrumors.com/2020/11/10/apple-announces-m1-chip-for-the-mac/), 5.2 for
#: the 16-core M1 Pro and 10.4 for the 32-core M1 Max (Apple's 2021-10-18 announcement,
#: as reported by Tecnoblog and digitalnotebook.online) — 0.325 per core each time.
#: No Apple figure was found for M2, M3 or M4 GPUs, so they are left out and get the
#: 1.0 default (``extra["tflops_source"] = "default"``).
APPLE_TFLOPS_PER_CORE: tuple[tuple[str, float], ...] = ((r"^Apple M1\b", 0.325),)

_MEMSIZE = re.compile(r"^(?:hw\.memsize\s*[:=]\s*)?(\d+)$")


@dataclass(frozen=True)
class AppleGpu:
    """One entry of ``system_profiler SPDisplaysDataType``: model, cores (None: not
    printed) and vendor string (``sppci_vendor_Apple`` on Apple silicon)."""

    model: str
    cores: int | None
    vendor: str

    @property
    def apple(self) -> bool:
        return self.model.startswith("Apple ") or self.vendor.endswith("_Apple")


def apple_tflops(model: str, cores: int | None) -> float | None:
    """fp32 TFLOPS of an Apple GPU with ``cores`` cores, or None if not in the table."""
    if cores is None:
        return None
    for pattern, per_core in APPLE_TFLOPS_PER_CORE:
        if re.search(pattern, model):
            return round(per_core * cores, 3)
    return None


def parse_displays(text: str) -> list[AppleGpu]:
    """Every GPU in ``system_profiler SPDisplaysDataType -json`` output, in order.

    Raises ValueError when the text is not that JSON document.
    """
    try:
        document = json.loads(text)
    except ValueError:
        raise ValueError(
            "expected the JSON of `system_profiler SPDisplaysDataType -json`"
        ) from None
    entries = document.get("SPDisplaysDataType") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError(
            "expected `system_profiler SPDisplaysDataType -json` output"
            " (an object with a 'SPDisplaysDataType' array)"
        )
    gpus: list[AppleGpu] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("sppci_model"), str):
            raise ValueError(f"SPDisplaysDataType entry without sppci_model: {entry!r}")
        cores = entry.get("sppci_cores")
        vendor = entry.get("spdisplays_vendor")
        gpus.append(
            AppleGpu(
                model=entry["sppci_model"].strip(),
                cores=int(cores) if isinstance(cores, str) and cores.strip().isdigit() else None,
                vendor=vendor if isinstance(vendor, str) else "",
            )
        )
    return gpus


def parse_memsize(text: str) -> int:
    """Bytes of memory from ``sysctl -n hw.memsize`` (or ``sysctl hw.memsize``).

    Raises ValueError for anything but one positive integer.
    """
    match = _MEMSIZE.match(text.strip())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"expected the byte count of `sysctl -n hw.memsize`, got {text[:80]!r}")
    return int(match.group(1))


def _torch_mps_problem() -> str:
    """Why torch cannot use MPS here, or "" when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.backends.mps.is_built():
        return "this torch build has no MPS support"
    if not torch.backends.mps.is_available():
        return "torch.backends.mps.is_available() is false (MPS needs macOS 12.3 or later)"
    return ""


class AppleProbe(Probe):
    """The Apple-silicon GPU as ``gpu0`` with torch device ``mps``.

    ``platform`` and ``mps_available`` stand in for ``sys.platform`` and
    ``torch.backends.mps.is_available`` in tests; ``run`` runs the tools (``(command,
    timeout) -> stdout``), ``system_profiler`` and ``sysctl`` name them (on ``PATH`` or a
    path).  Its memory is the machine's unified memory (``hw.memsize``), which the CPU
    shares.  ``slices`` > 1 shares the GPU by time.
    """

    name = "apple"
    kind: ClassVar[str] = "gpu"
    vendor: ClassVar[str] = "apple"

    def __init__(
        self,
        *,
        slices: int = 1,
        timeout: float = 10.0,
        run: RunTool = run_tool,
        platform: str = sys.platform,
        mps_available: Callable[[], bool] | None = None,
        system_profiler: str = "system_profiler",
        sysctl: str = "sysctl",
    ) -> None:
        super().__init__()
        if slices < 1:
            raise ValueError(f"AppleProbe slices must be at least 1, got {slices}")
        self._slices = slices
        self._timeout = timeout
        self._run = run
        self._platform = platform
        self._mps_available = mps_available
        self._system_profiler = system_profiler
        self._sysctl = sysctl

    def _tool(self, binary: str, *arguments: str) -> str:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(f"{binary} is not on PATH")
        return self._run([path, *arguments], self._timeout)

    def _mps_problem(self) -> str:
        if self._mps_available is None:
            return _torch_mps_problem()
        return "" if self._mps_available() else "MPS is not available"

    def _read(self) -> tuple[AppleGpu, int]:
        """The Apple GPU system_profiler lists and the unified memory in bytes."""
        gpus = parse_displays(self._tool(self._system_profiler, "SPDisplaysDataType", "-json"))
        apple = [gpu for gpu in gpus if gpu.apple]
        if not apple:
            raise LookupError("system_profiler lists no Apple-silicon GPU")
        memory = parse_memsize(self._tool(self._sysctl, "-n", "hw.memsize"))
        return apple[0], memory

    def available(self) -> bool:
        if self._platform != "darwin":
            self.unavailable_reason = f"not macOS (platform is {self._platform})"
            return False
        problem = self._mps_problem()
        if problem:
            self.unavailable_reason = problem
            return False
        try:
            self._read()
        except (OSError, ValueError, LookupError, RuntimeError, subprocess.TimeoutExpired) as exc:
            self.unavailable_reason = f"cannot describe the GPU: {exc}"
            return False
        self.unavailable_reason = ""
        return True

    def probe(self) -> list[Device]:
        gpu, memory = self._read()
        known = apple_tflops(gpu.model, gpu.cores)
        extra = {
            "memory": "unified",
            "tflops_precision": "fp32",
            "tflops_source": "table" if known is not None else "default",
        }
        if gpu.cores is not None:
            extra["cores"] = str(gpu.cores)
        extra["memory"] = "unified"  # the host's memory, which the CPU device offers too
        return [
            Device(
                device_id="gpu0",
                kind=self.kind,
                vendor=self.vendor,
                model=gpu.model,
                memory_bytes=memory,
                tflops=known if known is not None else 1.0,
                torch_device="mps",
                slices=self._slices,
                sharing="exclusive" if self._slices == 1 else self.shared_sharing,
                extra=extra,
            )
        ]

    def utilisation(self) -> dict[str, float]:
        """Always empty: macOS has no public API for GPU utilisation, per device or per
        process, that works without root (``powermetrics`` needs sudo; the IOReport and
        IOKit counters some tools read are private and undocumented)."""
        return {}

    # -- the vendor's slice behaviour --------------------------------------------------

    @classmethod
    def slice_environment(cls, device: Device, slice_index: int) -> dict[str, str]:
        """Nothing: MPS has one device and no variable that selects or hides it."""
        return {}

    @classmethod
    def worker_torch_device(cls, device: Device) -> str:
        return "mps"
