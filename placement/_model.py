"""The inputs and outputs of placement: a cluster snapshot, pending jobs, a plan.

Everything here is plain data. Placement never does I/O: the scheduler builds a
``ClusterSnapshot`` from its registry, calls ``plan(...)`` and then reserves and binds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from anypu._labels import LabelRequirement
from anypu.devices import Device
from anypu.protos.messages import TIERS

__all__ = [
    "TIERS",
    "ClusterSnapshot",
    "DeadlineMiss",
    "DeviceView",
    "JobRequest",
    "NodeView",
    "Placement",
    "Plan",
    "RunnerUp",
    "WorkloadShape",
]


@dataclass(frozen=True)
class DeviceView:
    """A device as placement sees it: its description plus the work already on it.

    ``slice_busy_seconds[i]`` is the predicted time until slice ``i`` is free (the sum
    of predicted run times of the jobs already assigned to it). ``replica_slices`` are
    the slices deployments' replicas hold for as long as they are up (slice -> the
    deployment's name): no job but that deployment's own starts or queues there (a
    replica owns its share, as a Ray Serve replica owns its ``num_gpus``; its own
    deployment's next version may warm up beside it, so a rolling update on a full
    cluster does not stall).
    """

    node_id: str
    device: Device
    slice_busy_seconds: tuple[float, ...]
    #: On a shared device: what the jobs already on it reserved (bytes, and milli of
    #: its compute), and, where the vendor measures it, memory in use that no job on it
    #: accounts for (idle seats' runtimes and warm models, other processes).
    reserved_memory_bytes: int = 0
    reserved_milli: int = 0
    unexplained_memory_bytes: int = 0
    replica_slices: Mapping[int, str] = field(default_factory=dict, hash=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.node_id, self.device.device_id)


@dataclass(frozen=True)
class NodeView:
    node_id: str
    tier: str
    site: str
    healthy: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    devices: tuple[DeviceView, ...] = ()
    warm_digests: frozenset[str] = frozenset()
    unhealthy_reason: str = ""  # shown when ``healthy`` is false: "lost", "quarantined: …"


@dataclass(frozen=True)
class JobRequest:
    """What placement needs to know about a job.

    ``flops`` and ``memory_bytes`` come from the SDK's estimate (corrected by measured
    runs); ``device_kinds`` empty means any kind; ``tiers``/``sites``/``nodes`` empty
    means no constraint.
    """

    job_id: str
    artifact_digest: str
    flops: float
    memory_bytes: int
    input_bytes: int
    output_bytes: int
    artifact_bytes: int = 0
    origin: str = ""
    priority: int = 0
    slo_seconds: float | None = None
    device_kinds: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()
    sites: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    measured_seconds: dict[str, float] = field(default_factory=dict)
    """Measured run time by device model name, from earlier runs of the same artifact."""
    learned_seconds: dict[str, float] = field(default_factory=dict)
    """Predicted run time by device model name from what other models' runs there taught
    the scheduler (its throughput model): used where ``measured_seconds`` has none."""
    precision: str = "fp32"
    """What the model computes in (``fp32``, ``fp16``, ``bf16``, ``int8``…): which of a
    device's throughput figures its compute is costed with."""
    compute_milli: int = 0
    """The compute share (thousandths of a device) to reserve on a shared device; 0:
    derived from the predicted time and the SLO (``_shares``)."""
    operators: frozenset[str] = frozenset()
    """The operators the model's graph calls (``aten::linear``…), recorded at export:
    devices whose backend says it lacks one are skipped (``OperatorFilter``)."""
    unsupported_on: dict[tuple[str, str], str] = field(default_factory=dict)
    """``(kind, vendor)`` backends a run of this artifact found lacking an operator it
    needs, with what was found: they are skipped (``OperatorFilter``)."""
    held_s: float = 0.0
    """How long it has waited for room (held back, ``Plan.deferred``) since it last ran or
    was submitted; past ``PlacementConfig.earmark_after_s`` it earmarks a device
    (``_earmarks``)."""
    deadline_s: float | None = None
    """Seconds left, as the round runs, until the job must be done (its caller's
    ``deadline_ms`` less what it has waited); None: no deadline. Only devices predicted
    to finish it in time are used; where none is, it is ``Plan.deadline_unreachable``
    (``_deadlines``)."""
    best_effort: bool = False
    """With a deadline: place it where it is predicted to finish first even when that
    misses the deadline, instead of failing it."""
    deadline_warm: bool = False
    """The deadline is each call's once the model is warm (a deployment's replica,
    placed once and called many times): the warm-up term (fetching and loading the
    model) is not counted against it (``_deadlines``)."""
    label_selector: tuple[LabelRequirement, ...] = ()
    """Labels the device's node (or the device, from its backend) must have; every one
    must hold (``LabelFilter``)."""
    deployment: str = ""
    """The deployment whose replica this job warms up, if any: it may use slices that
    deployment's replicas hold (``DeviceView.replica_slices``), and no others' held."""
    relay: str = ""
    """The vertex the job's inputs and outputs pass through between its origin and the
    device ("" or a vertex the network lacks: straight from the origin). The live
    scheduler names its own (``SCHEDULER_VERTEX``): a client uploads inputs to it and
    the agent fetches them from it, and outputs go back the same way."""


class WorkloadShape(NamedTuple):
    """What one placed job took, in the GPU-sharing policies' units (``placement.gpushare``):
    host CPU milli-cores and MiB, and ``gpus`` devices of ``gpu_milli`` thousandths each."""

    cpu_milli: int
    memory_mib: int
    gpus: int
    gpu_milli: int


@dataclass(frozen=True)
class ClusterSnapshot:
    """The nodes, and the network that links their sites and the clients' origins.

    ``network`` is a ``networkx.Graph`` whose vertices are site names and whose edges
    carry ``latency_s`` and ``bandwidth_bps`` (bytes per second). A node sits at the
    vertex named by its ``site``. ``None`` means everything is co-located.

    ``workload`` is the shapes of recently placed jobs, oldest first: the typical workload
    that fragmentation-aware policies (``PlacementConfig.policy`` ``fgd``/``anypu``) plan
    for. Empty means no history yet; the cost policy ignores it.
    """

    nodes: tuple[NodeView, ...]
    network: object | None = None
    now: float = 0.0
    workload: tuple[WorkloadShape, ...] = ()
    #: Devices set aside for jobs that waited long for room: job id -> (node id, device
    #: id), as the last round's ``Plan.earmarks`` left them (``_earmarks``).
    earmarks: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunnerUp:
    """The cheapest slice on another node as the job's turn came, with its terms: why the
    other nodes lost."""

    node_id: str
    device_id: str
    predicted_seconds: float
    terms: dict[str, float]


@dataclass(frozen=True)
class Placement:
    """Where one job goes, what it is predicted to take, and why (the objective's terms);
    ``runner_up`` where another node could have taken it (the cost strategy says)."""

    job_id: str
    node_id: str
    device_id: str
    slice_index: int
    predicted_seconds: float
    terms: dict[str, float]
    runner_up: RunnerUp | None = None
    #: What the job reserves of a shared device (0 and 0 on a slice, which owns its share).
    memory_bytes: int = 0
    milli: int = 0


@dataclass(frozen=True)
class DeadlineMiss:
    """A job no device is predicted to finish within its deadline: the best there was.

    ``terms`` are the best device's predicted seconds by term (``compute``, ``transfer``,
    ``warm``, ``queue``); ``predicted_seconds`` their sum.
    """

    job_id: str
    deadline_s: float
    node_id: str
    device_id: str
    tier: str
    predicted_seconds: float
    terms: dict[str, float]
    origin: str = ""

    def describe(self) -> str:
        """``best is edge-1/gpu0 (edge) at 84 ms: 31 ms network from home, 53 ms compute``."""
        network = f"network from {self.origin}" if self.origin else "network"
        words = (
            ("transfer", network),
            ("queue", "waiting behind queued jobs"),
            ("warm", "fetching and loading the model"),
            ("compute", "compute"),
        )
        parts = [
            f"{_ms(self.terms[term])} {what}"
            for term, what in words
            if self.terms.get(term, 0.0) >= 0.0005
        ]
        return (
            f"best is {self.node_id}/{self.device_id} ({self.tier}) at"
            f" {_ms(self.predicted_seconds)}: {', '.join(parts) or 'nothing measurable'}"
        )


def _ms(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "forever"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.2g} ms"


@dataclass(frozen=True)
class Plan:
    """The result of one placement round.

    ``unschedulable[job_id]`` maps every node id to why the job cannot go there; a job
    appears there only when no device anywhere passed the filters. ``unresolvable`` are
    those of them that no known node could take even once every rejection that may clear
    by itself has cleared (a lost node come back): nothing but a new node helps them.
    ``deferred`` are jobs that fit somewhere in principle but not in this round (capacity
    taken by others).
    """

    placements: tuple[Placement, ...]
    unschedulable: dict[str, dict[str, str]]
    unresolvable: frozenset[str] = frozenset()
    deferred: tuple[str, ...] = ()
    solver: str = "greedy"
    solve_seconds: float = 0.0
    objective: float = 0.0
    #: Jobs still held that have a device set aside (``_earmarks``): job id -> (node id,
    #: device id). The next round's snapshot carries them.
    earmarks: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    #: Jobs with a deadline no device is predicted to meet (not best effort): the best
    #: prediction there was, for the caller's error (``_deadlines``). Not placed.
    deadline_unreachable: Mapping[str, DeadlineMiss] = field(default_factory=dict)
