"""Pure placement: a cluster snapshot and pending jobs in, a plan out.

``plan(snapshot, jobs)`` is what the live scheduler calls each round; the filter and
score plugins it runs are exported for explanation and extension. ``PlacementConfig.policy``
chooses who places: the cost model, or a GPU-sharing policy of ``placement.gpushare``.
"""

from anypu.placement._filters import (
    DEFAULT_FILTERS,
    allowed_devices,
    explain_unschedulable,
    format_bytes,
)
from anypu.placement._framework import (
    DEFAULT_EFFICIENCY,
    POLICY_NAMES,
    TERMS,
    ClusterTable,
    FilterPlugin,
    PlacementConfig,
    PlanContext,
    ScorePlugin,
)
from anypu.placement._live_policy import WORKLOAD_WINDOW, workload_shape
from anypu.placement._model import (
    TIERS,
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NodeView,
    Placement,
    Plan,
    WorkloadShape,
)
from anypu.placement._network import (
    SCHEDULER_VERTEX,
    NetworkCosts,
    PathMetrics,
    build_network,
    transfer_seconds,
)
from anypu.placement._scores import DEFAULT_SCORES, score_terms
from anypu.placement._solver import plan

__all__ = [
    "DEFAULT_EFFICIENCY",
    "DEFAULT_FILTERS",
    "DEFAULT_SCORES",
    "POLICY_NAMES",
    "SCHEDULER_VERTEX",
    "TERMS",
    "TIERS",
    "WORKLOAD_WINDOW",
    "ClusterSnapshot",
    "ClusterTable",
    "DeviceView",
    "FilterPlugin",
    "JobRequest",
    "NetworkCosts",
    "NodeView",
    "PathMetrics",
    "Placement",
    "PlacementConfig",
    "Plan",
    "PlanContext",
    "ScorePlugin",
    "WorkloadShape",
    "allowed_devices",
    "build_network",
    "explain_unschedulable",
    "format_bytes",
    "plan",
    "score_terms",
    "transfer_seconds",
    "workload_shape",
]
