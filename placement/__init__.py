"""Pure placement: a cluster snapshot and pending jobs in, a plan out."""

from anypu.placement._model import (
    TIERS,
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NodeView,
    Placement,
    Plan,
)

__all__ = [
    "TIERS",
    "ClusterSnapshot",
    "DeviceView",
    "JobRequest",
    "NodeView",
    "Placement",
    "Plan",
]
