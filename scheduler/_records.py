"""The scheduler's own records of nodes and jobs (mutable, owned by ``SchedulerState``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from anypu.devices import Device
from anypu.protos.messages import (
    NO_FAILURE,
    DeviceUsage,
    JobInfo,
    JobUsage,
    NodeInfo,
    Outcome,
    PeerSample,
    PlacementInfo,
    Reservation,
    SubmitRequest,
)
from anypu.scheduler._round_trips import RoundTrips

__all__ = ["JOB_STATES", "TERMINAL", "JobRecord", "NodeRecord"]

JOB_STATES = ("pending", "placed", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass
class NodeRecord:
    node_id: str
    tier: str
    site: str
    labels: dict[str, str]
    devices: tuple[Device, ...]
    epoch: int
    state: str = "ready"  # ready | lost | left (its agent stopped on purpose)
    connected: bool = True
    last_heartbeat: float = 0.0
    usage: tuple[DeviceUsage, ...] = ()
    warm_digests: frozenset[str] = frozenset()
    running_jobs: int = 0
    direct_runs: bool = False  # takes calls under leases in-process (the embedded agent)
    direct_address: str = ""  # takes them over gRPC at this host:port
    #: Each running job's own memory, as the last heartbeat measured it.
    job_usage: tuple[JobUsage, ...] = ()
    #: Round trips on its stream, measured by its agent (``_round_trips``).
    round_trips: RoundTrips = field(default_factory=RoundTrips)
    #: What its agent timed to other sites' agents (``agents._peers``): site ->
    #: (round trip s, when; bandwidth B/s, when: 0.0 and -inf where none was probed).
    peer_trips: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)

    def info(self, now: float, reservations: tuple[Reservation, ...] = ()) -> NodeInfo:
        return NodeInfo(
            node_id=self.node_id,
            tier=self.tier,
            site=self.site,
            state=self.state
            if self.connected or self.state in ("lost", "left")
            else "disconnected",
            labels=dict(self.labels),
            devices=self.devices,
            usage=self.usage,
            job_usage=self.job_usage,
            reservations=reservations,
            warm_digests=tuple(sorted(self.warm_digests)),
            last_heartbeat_age_s=max(0.0, now - self.last_heartbeat),
            rtt_p50_s=self.round_trips.quantile(0.5),
            rtt_p95_s=self.round_trips.quantile(0.95),
            rtt_age_s=self.round_trips.age(now),
            bandwidth_bps=self.round_trips.bandwidth_bps,
            bandwidth_age_s=self.round_trips.bandwidth_age(now),
            running_jobs=self.running_jobs,
            epoch=self.epoch,
            direct_address=self.direct_address,
            peers=tuple(
                PeerSample(site, rtt, bps)
                for site, (rtt, _, bps, _) in sorted(self.peer_trips.items())
            ),
        )


@dataclass
class JobRecord:
    job_id: str
    request: SubmitRequest
    state: str = "pending"
    attempt: int = 0
    retries: int = 0
    submitted_at: float = 0.0
    finished_at: float = 0.0
    not_before: float = 0.0
    placement: PlacementInfo | None = None
    pending_reasons: dict[str, str] = field(default_factory=dict)
    unschedulable_since: float | None = None
    #: Since when it has been held back for room (``Plan.deferred``); None once placed.
    held_since: float | None = None
    outputs: bytes = b""
    outputs_digest: str = ""  # or the outputs are this blob (too large for a message)
    #: The outputs were kept their retention time after the job and then discarded.
    outputs_expired: bool = False
    #: What the last run said (timings once run; the failure once failed).
    outcome: Outcome = NO_FAILURE
    lost_nodes: list[str] = field(default_factory=list)
    lease_id: str = ""  # the lease it granted, or ran under
    #: Placed again once after going over a memory share its estimate had sized.
    memory_retried: bool = False
    #: Split across two devices (``request.splits``, ``placement._split``): "" until
    #: decided, then "whole", "head" (its head job runs), "tail" (it runs the tail).
    split_stage: str = ""
    #: Which of ``request.splits`` was chosen, and why (``SplitChoice.describe``).
    split_index: int = -1
    split: str = ""
    head_job_id: str = ""
    #: On a head job: the job it computes the first layers of.
    feeds: str = ""
    #: How ``request.origin`` was inferred from the client's round trips ("" if named).
    origin_inferred: str = ""
    #: The deployment this job places and warms a replica of ("" for a caller's job).
    deployment: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def info(self) -> JobInfo:
        return JobInfo(
            job_id=self.job_id,
            state=self.state,
            name=self.request.name,
            attempt=self.attempt,
            placement=self.placement,
            pending_reasons=dict(self.pending_reasons),
            submitted_at=self.submitted_at,
            finished_at=self.finished_at,
            outcome=self.outcome,
            unschedulable=self.unschedulable_since is not None,
            origin=self.request.origin,
            artifact_digest=self.request.artifact_digest,
            latency_seconds=(self.finished_at - self.submitted_at) if self.finished_at else 0.0,
            outputs_digest=self.outputs_digest,
            deadline_ms=self.request.deadline_ms,
            split=self.split,
            head_job_id=self.head_job_id,
            origin_inferred=self.origin_inferred,
        )
