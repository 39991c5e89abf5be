"""What an agent offers, followed while it runs: the hook a backend's watch calls when
a Ray cluster's nodes or a Kubernetes node's devices or labels change
(``AgentConfig.inventory_watch``; ``Agent.replace_devices`` is what it calls)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Protocol

from anypu.devices import Device

__all__ = ["InventoryChanged", "InventoryWatch"]


class InventoryChanged(Protocol):
    """``changed(devices, why, labels)``: offer ``devices`` from now on (``why`` says
    what changed, for the log); ``labels``: the node's labels anew (None: unchanged)."""

    def __call__(
        self, devices: list[Device], why: str, labels: Mapping[str, str] | None = None
    ) -> None: ...


#: ``watch(stop, changed)``: runs until ``stop`` is set, calling ``changed`` on news.
InventoryWatch = Callable[[threading.Event, InventoryChanged], None]
