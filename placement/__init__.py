"""Pure placement: a cluster snapshot and pending jobs in, a plan out.

``plan(snapshot, jobs)`` is what the live scheduler calls each round. Its extension points
are Kubernetes' scheduler framework's: ``PlacementConfig.filters`` (``FilterPlugin``: why a
device cannot take a job, and whether that may clear by itself) and ``.scores``
(``ScorePlugin``: named terms in seconds), and ``PlacementConfig.policy`` names the
``Strategy`` that places: the cost model with CP-SAT, or a GPU-sharing policy of
``placement.gpushare`` (``STRATEGIES`` is the registry).
"""

from anypu.devices import format_bytes
from anypu.placement._config import POLICY_NAMES, PlacementConfig
from anypu.placement._deadlines import DeadlineFilter, completion_seconds
from anypu.placement._filters import (
    DEFAULT_FILTERS,
    allowed_devices,
    explain_unschedulable,
    unresolvable,
)
from anypu.placement._framework import (
    DEFAULT_EFFICIENCY,
    PRECISION_RELATIVE,
    TERMS,
    ClusterTable,
    FilterPlugin,
    PlanContext,
    ScorePlugin,
    Strategy,
)
from anypu.placement._live_policy import WORKLOAD_WINDOW, workload_shape
from anypu.placement._measured import PathSample, fit_network
from anypu.placement._model import (
    TIERS,
    ClusterSnapshot,
    DeadlineMiss,
    DeviceView,
    JobRequest,
    NodeView,
    Placement,
    Plan,
    RunnerUp,
    WorkloadShape,
)
from anypu.placement._network import (
    SCHEDULER_VERTEX,
    NetworkCosts,
    PathMetrics,
    build_network,
    transfer_seconds,
)
from anypu.placement._origin import OriginFit, infer_origin
from anypu.placement._scores import DEFAULT_SCORES, score_terms
from anypu.placement._split import SPLIT_MARGIN, SplitCandidate, SplitChoice, choose_split
from anypu.placement._strategies import STRATEGIES, plan

__all__ = [
    "DEFAULT_EFFICIENCY",
    "DEFAULT_FILTERS",
    "DEFAULT_SCORES",
    "POLICY_NAMES",
    "PRECISION_RELATIVE",
    "SCHEDULER_VERTEX",
    "SPLIT_MARGIN",
    "STRATEGIES",
    "TERMS",
    "TIERS",
    "WORKLOAD_WINDOW",
    "ClusterSnapshot",
    "ClusterTable",
    "DeadlineFilter",
    "DeadlineMiss",
    "DeviceView",
    "FilterPlugin",
    "JobRequest",
    "NetworkCosts",
    "NodeView",
    "OriginFit",
    "PathMetrics",
    "PathSample",
    "Placement",
    "PlacementConfig",
    "Plan",
    "PlanContext",
    "RunnerUp",
    "ScorePlugin",
    "SplitCandidate",
    "SplitChoice",
    "Strategy",
    "WorkloadShape",
    "allowed_devices",
    "build_network",
    "choose_split",
    "completion_seconds",
    "explain_unschedulable",
    "fit_network",
    "format_bytes",
    "infer_origin",
    "plan",
    "score_terms",
    "transfer_seconds",
    "unresolvable",
    "workload_shape",
]
