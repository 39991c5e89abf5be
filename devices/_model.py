"""What a device is, independent of how it was found."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEVICE_KINDS", "Device", "format_bytes"]

#: Device kinds the scheduler knows. Anything else is rejected with a clear error.
DEVICE_KINDS = ("cpu", "gpu", "npu", "tpu", "xpu", "mps")


@dataclass(frozen=True)
class Device:
    """One processor an agent offers.

    ``device_id`` is unique within its node (``cpu0``, ``gpu0``, ``npu1``).
    ``torch_device`` is what a worker passes to ``tensor.to(...)``; for a simulated device
    it is ``cpu`` and ``simulated`` is true, and the device says so everywhere it is shown.
    ``tflops`` is effective dense throughput (measured for CPUs, from a table or the
    declaration otherwise). ``slices`` is how many workers share the device; each slice
    owns ``memory_bytes / slices`` and ``1 / slices`` of its compute.

    A ``shared`` device is offered whole instead: each job reserves the memory and the
    compute share (milli, thousandths of the device) that its model needs, and several
    jobs run on it at once while their reservations fit. ``slices`` is then its number
    of seats, the worker processes that run those jobs (how many may run at once), and
    a seat owns nothing fixed: ``slice_memory_bytes`` and ``slice_tflops`` are the whole
    device's.
    """

    device_id: str
    kind: str
    vendor: str
    model: str
    memory_bytes: int
    tflops: float
    torch_device: str
    simulated: bool = False
    slices: int = 1
    threads: int = 1
    sharing: str = "exclusive"
    extra: dict[str, str] = field(default_factory=dict)
    shared: bool = False

    @property
    def share_divisor(self) -> int:
        """What one slice's memory and compute are the device's divided by: its slices,
        or 1 for a shared device, whose seats own nothing fixed."""
        return 1 if self.shared else max(1, self.slices)

    @property
    def slice_memory_bytes(self) -> int:
        return self.memory_bytes // self.share_divisor

    @property
    def slice_tflops(self) -> float:
        return self.tflops / self.share_divisor

    @property
    def holds_host_memory(self) -> bool:
        """Whether its jobs' memory is the host's: a CPU, or a device simulated on it."""
        return self.kind == "cpu" or self.simulated

    @property
    def lacking_operators(self) -> frozenset[str]:
        """Operators its backend is said to lack (``extra["lacks_operators"]``, comma
        separated: what ``devices.yaml`` declares for a simulated device)."""
        return frozenset(op for op in self.extra.get("lacks_operators", "").split(",") if op)

    def describe(self) -> str:
        """One line for people: ``gpu nvidia A100-SXM4-40GB 40.0 GiB 156 TFLOPS (simulated on cpu)``."""
        text = (
            f"{self.kind} {self.vendor} {self.model} "
            f"{self.memory_bytes / 2**30:.1f} GiB {self.tflops:g} TFLOPS"
        )
        if self.shared:
            text += f" shared ({self.slices} seats)"
        elif self.slices > 1:
            text += f" ×{self.slices} slices"
        if self.simulated:
            text += " (simulated on cpu)"
        return text


def format_bytes(n: float) -> str:
    """``3.2 GiB``, ``512 MiB``, ``12 KiB``, ``80 B``: short and unambiguous."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n:.0f} B"
