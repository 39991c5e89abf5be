"""GPU-sharing placement at trace level: the cluster model, fragmentation, and policies.

The same policies serve the openb trace replay (``anypu.simulations.openb``) and, through
:func:`make_policy`, any scheduler that holds nodes as CPU/memory/GPU-milli vectors.
Online policies place one pod per call (:meth:`Policy.choose`); :class:`BatchPlacer`
places a window of pending pods together with CP-SAT.
"""

from anypu.placement.gpushare._batch import BatchPlacer, BatchStats, gpu_fragment_table
from anypu.placement.gpushare._cluster import (
    MAX_GPUS,
    MILLI,
    ClusterState,
    NodeTable,
    PodTable,
    load_nodes,
    load_pods,
    parse_nodes,
    parse_pods,
    spec_mask,
)
from anypu.placement.gpushare._frag import FragCache, TypicalPods, fragmentation, typical_pods
from anypu.placement.gpushare._gradient import (
    DeltaCache,
    Scarcity,
    fragmentation_increase,
    stranded,
)
from anypu.placement.gpushare._policies import (
    POLICIES,
    TRACE_POLICIES,
    AnypuPolicy,
    AnypuSSPolicy,
    BestFitPolicy,
    Choice,
    DotProdPolicy,
    FgdPolicy,
    GpuClusteringPolicy,
    GpuPackingPolicy,
    Policy,
    RandomPolicy,
    Request,
    make_policy,
)

__all__ = [
    "MAX_GPUS",
    "MILLI",
    "POLICIES",
    "TRACE_POLICIES",
    "AnypuPolicy",
    "AnypuSSPolicy",
    "BatchPlacer",
    "BatchStats",
    "BestFitPolicy",
    "Choice",
    "ClusterState",
    "DeltaCache",
    "DotProdPolicy",
    "FgdPolicy",
    "FragCache",
    "GpuClusteringPolicy",
    "GpuPackingPolicy",
    "NodeTable",
    "PodTable",
    "Policy",
    "RandomPolicy",
    "Request",
    "Scarcity",
    "TypicalPods",
    "fragmentation",
    "fragmentation_increase",
    "gpu_fragment_table",
    "load_nodes",
    "load_pods",
    "make_policy",
    "parse_nodes",
    "parse_pods",
    "spec_mask",
    "stranded",
    "typical_pods",
]
