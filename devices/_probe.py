"""The contract every vendor probe fulfils.

A probe is cheap to construct and never touches vendor libraries or tools until one of
its methods is called, so a CPU-only install imports every probe without their
dependencies.  ``available()`` answers "can this probe see any hardware here?" without
raising; ``probe()`` describes the hardware; ``utilisation()`` is called on every
heartbeat and must stay cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from anypu.devices._model import Device

__all__ = ["Probe"]


class Probe(ABC):
    """One vendor's way of finding devices.

    ``name`` identifies the probe in logs. ``unavailable_reason`` is set by
    ``available()`` when it answers false, so an operator can learn why a GPU was not
    offered (no driver, library missing, tool failed) without reading a traceback.
    """

    name: str = ""

    def __init__(self) -> None:
        self.unavailable_reason: str = ""

    @abstractmethod
    def available(self) -> bool:
        """Whether this probe can see hardware here. Never raises."""

    @abstractmethod
    def probe(self) -> list[Device]:
        """Describe every device this probe sees (empty when none)."""

    @abstractmethod
    def utilisation(self) -> dict[str, float]:
        """Busy fraction in ``[0, 1]`` by ``device_id`` since the previous call."""

    def close(self) -> None:  # noqa: B027 - optional hook; most probes hold no handles
        """Release vendor handles; the default holds none."""
