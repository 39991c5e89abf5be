"""The contract every vendor probe fulfils: finding its devices and confining workers.

A probe is cheap to construct and never touches vendor libraries or tools until one of
its methods is called, so a CPU-only install imports every probe without their
dependencies.  ``available()`` answers "can this probe see any hardware here?" without
raising; ``probe()`` describes the hardware; ``readings()`` (utilisation, memory used, memory
per process) is read for every heartbeat and must stay cheap.

The class also carries its vendor's slice behaviour, as class methods, so the agent and
its workers never branch on vendor names: which environment variables narrow a worker to
its device (``slice_environment``), which torch device the worker then sees
(``worker_torch_device``), how a slice shares the device (``sharing``) and what limits
the worker applies to itself after importing torch (``apply_limits``).  The defaults are
those of a device without a vendor runtime (a CPU, a simulated device): accelerators are
hidden so the worker never initialises CUDA and takes memory another slice owns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from anypu.devices._model import Device

__all__ = ["Probe", "Reading", "physical_index", "utilisation_of"]


@dataclass(frozen=True)
class Reading:
    """What a vendor says one device is doing now (None: the vendor does not say).

    ``process_memory`` maps a process id to the device memory it holds, where the
    vendor reports it per process (NVML does): how a job's own use is told apart from
    its neighbours' on a shared device.
    """

    utilisation: float | None = None
    memory_used_bytes: int | None = None
    process_memory: Mapping[int, int] = field(default_factory=dict)


def utilisation_of(readings: Mapping[str, Reading]) -> dict[str, float]:
    """The busy fractions among ``readings`` (for a probe whose readings say more)."""
    return {d: r.utilisation for d, r in readings.items() if r.utilisation is not None}


def allocator_cap(backend: str, device: Device, memory_bytes: int) -> str:
    """Cap torch's caching allocator for ``torch.<backend>`` (``cuda``, ``npu``, ``mlu``,
    ``xpu``…) at what the worker already holds there (a seat's warm models) plus
    ``memory_bytes``, through the backend's ``set_per_process_memory_fraction``; what was
    set, or ``""`` where the backend is missing, unavailable or offers no such cap."""
    import torch

    module = getattr(torch, backend, None)
    setter = getattr(module, "set_per_process_memory_fraction", None)
    available = getattr(module, "is_available", None)
    if setter is None or (available is not None and not available()):
        return ""
    allocated = getattr(module, "memory_allocated", None)
    held = int(allocated(0)) if allocated is not None else 0
    fraction = min(1.0, (held + memory_bytes) / device.memory_bytes)
    setter(fraction, f"{backend}:0")
    return f"memory fraction {fraction:.4f}"


def physical_index(device: Device) -> int:
    """The index the vendor runtime knows the device by (``extra["index"]``, else ``cuda:N``)."""
    if "index" in device.extra:
        return int(device.extra["index"])
    _, _, number = device.torch_device.partition(":")
    if not number.isdigit():
        raise ValueError(
            f"device {device.device_id} ({device.torch_device}) has no physical index;"
            " probes set extra['index'] for accelerators"
        )
    return int(number)


class Probe(ABC):
    """One vendor's way of finding devices, and of confining a worker to one of them.

    ``name`` identifies the probe in logs. ``unavailable_reason`` is set by
    ``available()`` when it answers false, so an operator can learn why a GPU was not
    offered (no driver, library missing, tool failed) without reading a traceback.
    ``kind`` and ``vendor`` say which devices the class describes (``vendor = ""``: any
    vendor of that kind); ``shared_sharing`` is how more than one slice share a device.
    """

    name: str = ""
    kind: ClassVar[str] = ""
    vendor: ClassVar[str] = ""
    shared_sharing: ClassVar[str] = "time"
    #: Whether reading this probe is a cheap library call (NVML), not a vendor tool: the
    #: agent then reads it four times a second, so its memory watchdog acts within half
    #: a second of a job crossing its share, instead of once a second.
    quick_readings: ClassVar[bool] = False

    def __init__(self) -> None:
        self.unavailable_reason: str = ""
        #: What ``discover`` found with this probe: an agent reads only probes that found some.
        self.found: list[Device] = []

    @abstractmethod
    def available(self) -> bool:
        """Whether this probe can see hardware here. Never raises."""

    @abstractmethod
    def probe(self) -> list[Device]:
        """Describe every device this probe sees (empty when none)."""

    @abstractmethod
    def utilisation(self) -> dict[str, float]:
        """Busy fraction in ``[0, 1]`` by ``device_id`` since the previous call."""

    def readings(self) -> dict[str, Reading]:
        """The vendor's own reading of each device, for a heartbeat: cheap, never raises
        for a device that cannot be read (it is left out). The default knows only the
        utilisation; probes whose vendor reports memory say more."""
        return {device: Reading(utilisation=busy) for device, busy in self.utilisation().items()}

    def close(self) -> None:  # noqa: B027 - optional hook; most probes hold no handles
        """Release vendor handles; the default holds none."""

    # -- the vendor's slice behaviour -------------------------------------------------

    @classmethod
    def describes(cls, device: Device) -> bool:
        """Whether ``device`` is one this class's probe reports (simulated ones never are)."""
        if device.simulated or device.kind != cls.kind:
            return False
        return not cls.vendor or device.vendor == cls.vendor

    @classmethod
    def sharing(cls, device: Device, slices: int) -> str:
        """How ``slices`` workers share ``device``: ``exclusive`` alone, else the vendor's."""
        return "exclusive" if slices == 1 else cls.shared_sharing

    @classmethod
    def slice_environment(cls, device: Device, slice_index: int) -> dict[str, str]:
        """The vendor's variables that narrow a worker to ``device``."""
        return {"CUDA_VISIBLE_DEVICES": ""}

    @classmethod
    def worker_torch_device(cls, device: Device) -> str:
        """The torch device inside a worker started with ``slice_environment``."""
        return device.torch_device

    @classmethod
    def job_environment(cls, device: Device, compute_milli: int) -> dict[str, str]:
        """What a seat's worker must be started with to hold a job to ``compute_milli``
        of ``device`` (a seat whose worker has other values is restarted with these
        before the job); ``{}`` where the vendor caps no process's compute."""
        return {}

    @classmethod
    def apply_limits(cls, device: Device, environ: Mapping[str, str]) -> float | None:
        """Apply the vendor's limits inside the worker (torch imported); the memory fraction."""
        return None

    @classmethod
    def apply_job_limit(cls, device: Device, memory_bytes: int) -> str:
        """Cap one job on a shared device at ``memory_bytes`` inside its worker; what was
        applied (``""``: nothing, the vendor offers no cap a worker can set per job)."""
        return ""
