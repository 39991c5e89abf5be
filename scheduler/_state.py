"""The scheduler's state machine: events in, actions out, no I/O.

``SchedulerState.handle(event)`` changes the state and returns the actions the server
must carry out (send a message down an agent's stream, persist a job, wake waiters).
The gRPC servicers and the embedded mode are thin adapters around it, in the manner of
Dask's scheduler: tests drive it directly with events and a fake clock.

Exactly-once results: every launch carries ``(job_id, attempt)``; a result counts only
when it matches the job's current attempt on the node it was sent to, so a late result
from a node that was declared lost is discarded.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from anypu import PROTOCOL_VERSION
from anypu.devices import Device, format_bytes
from anypu.placement import (
    WORKLOAD_WINDOW,
    ClusterSnapshot,
    DeviceView,
    JobRequest,
    NodeView,
    PlacementConfig,
    Plan,
    RunnerUp,
    WorkloadShape,
    plan,
    workload_shape,
)
from anypu.protos import messages as m
from anypu.scheduler._leases import HeldLease, LeaseBook
from anypu.scheduler._quarantine import NodeQuarantine
from anypu.scheduler._records import JobRecord, NodeRecord

__all__ = [
    "Action",
    "AgentConnected",
    "AgentDisconnected",
    "AgentSaid",
    "CancelRequested",
    "Drop",
    "ForgetNode",
    "JobSubmitted",
    "JobsSubmitted",
    "NodeRemoved",
    "Notify",
    "PersistJob",
    "PersistNode",
    "SchedulerConfig",
    "SchedulerState",
    "Send",
    "Tick",
    "stimulus_of",
]


#: How many models' measured memory peaks the scheduler keeps.
_MODELS_REMEMBERED = 10_000


@dataclass(frozen=True)
class SchedulerConfig:
    heartbeat_interval_s: float = 1.0
    lost_after_s: float = 5.0
    default_timeout_s: float = 600.0
    unschedulable_timeout_s: float = 5.0
    retry_backoff_s: float = 0.2
    retry_backoff_max_s: float = 10.0
    #: A job whose node (or worker process) died under it this many times is poison:
    #: it is failed and never placed again, as Dask flags a task that killed 3 workers.
    poison_after: int = 3
    #: A lease (see ``_leases``) unused this long is revoked; 0: grant none.
    lease_idle_s: float = 2.0
    placement: PlacementConfig = field(default_factory=PlacementConfig)


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class AgentConnected:
    join: m.Join
    now: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class AgentDisconnected:
    node_id: str
    epoch: int
    now: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class AgentSaid:
    node_id: str
    epoch: int
    message: m.AgentMessage
    now: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class JobSubmitted:
    job_id: str
    request: m.SubmitRequest
    now: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class JobsSubmitted:
    """Submissions that arrived while a placement round ran: placed in one round, so a
    burst is planned together (CP-SAT) rather than one job at a time."""

    jobs: tuple[JobSubmitted, ...]
    now: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class CancelRequested:
    job_id: str
    now: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class NodeRemoved:
    """An operator removes a node that is not connected (``anypu node remove``)."""

    node_id: str
    now: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class Tick:
    now: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


Event = (
    AgentConnected
    | AgentDisconnected
    | AgentSaid
    | JobSubmitted
    | JobsSubmitted
    | CancelRequested
    | NodeRemoved
    | Tick
)

# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Send:
    node_id: str
    epoch: int
    message: m.SchedulerMessage
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class PersistJob:
    job: JobRecord
    transition: str  # the state it moved to, or "" for an update within a state
    detail: str = ""
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log
    #: A call under a lease, recorded after its caller had the answer: many a second,
    #: so the log keeps it at DEBUG whatever its outcome.
    leased: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Drop:
    """Close a node's stream: it was declared lost and must re-join to be trusted again."""

    node_id: str
    epoch: int
    reason: str
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class PersistNode:
    node: NodeRecord
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class ForgetNode:
    """Delete the node's persisted record."""

    node_id: str
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class Notify:
    job_id: str
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


Action = Send | PersistJob | PersistNode | ForgetNode | Notify | Drop


def stimulus_of(event: Event) -> str:
    """A stimulus id naming what caused ``event``, for events that came without one.

    The agent derives its own the same way (``launch-<job>-<attempt>``…), so one job's
    lines on both sides share its id.
    """
    if isinstance(event, AgentSaid):
        message = event.message
        if isinstance(message, (m.JobResult, m.JobStarted)):
            kind = "result" if isinstance(message, m.JobResult) else "started"
            return f"{kind}-{message.job_id}-{message.attempt}"
        return f"{type(message).__name__.lower()}-{event.node_id}"
    if isinstance(event, JobSubmitted):
        return f"submit-{event.job_id}"
    if isinstance(event, JobsSubmitted):
        first = event.jobs[0].job_id if event.jobs else "none"
        return f"submit-{first}+{len(event.jobs) - 1}"
    if isinstance(event, CancelRequested):
        return f"cancel-{event.job_id}"
    if isinstance(event, AgentConnected):
        return f"join-{event.join.name}"
    if isinstance(event, AgentDisconnected):
        return f"leave-{event.node_id}-{event.epoch}"
    if isinstance(event, NodeRemoved):
        return f"remove-{event.node_id}"
    return f"tick-{event.now:.3f}"


def new_job_id() -> str:
    return "job-" + secrets.token_hex(6)


class SchedulerState:
    """All nodes and jobs, and the rules for how they change."""

    def __init__(self, config: SchedulerConfig | None = None, network: object | None = None):
        self.config = config or SchedulerConfig()
        self.network = network
        self.nodes: dict[str, NodeRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.pending: dict[str, None] = {}  # insertion-ordered set of pending job ids
        self.active: dict[str, None] = {}  # placed or running
        self.finished: deque[str] = deque()  # terminal jobs kept in memory, oldest first
        self.keep_finished = 2000  # older ones live only in the store
        self.measured: dict[tuple[str, str], float] = {}  # (digest, device model) -> seconds
        #: digest -> the most memory one of its runs was measured using (heartbeats): what
        #: its later jobs reserve of a shared device when the estimate said less.
        self.memory_peak: dict[str, int] = {}
        #: digest -> {(kind, vendor): what a run found}: backends lacking its operators.
        self.unsupported: dict[str, dict[tuple[str, str], str]] = {}
        self.last_plan: Plan | None = None
        self.quarantine = NodeQuarantine()
        self.decisions: dict[str, int] = {"placed": 0, "unschedulable": 0, "deferred": 0}
        self.leases = LeaseBook()
        # What recent placements took: the typical workload that fragmentation-aware
        # placement policies plan for (rebuilt from the store's recent jobs on restart; they
        # have a default until it fills).
        self.workload: deque[WorkloadShape] = deque(maxlen=WORKLOAD_WINDOW)

    # -------------------------------------------------------------- restore

    def restore(
        self,
        jobs: Iterable[JobRecord],
        nodes: Iterable[NodeRecord],
        now: float,
        placed: Iterable[JobRecord] = (),
    ) -> None:
        """Load persisted records after a restart.

        Known nodes come back disconnected with a fresh deadline: an agent that re-joins
        in time keeps its running jobs; one that does not is declared lost as usual.
        ``placed``: recent jobs, oldest first, whose placements rebuild the workload the
        GPU-sharing policies plan for (those on devices no longer known are skipped).
        """
        for node in nodes:
            node.connected = False
            node.last_heartbeat = now
            self.nodes[node.node_id] = node
        for job in jobs:
            self.jobs[job.job_id] = job
            if not job.terminal:
                self._set_state(job, job.state)
        for job in placed:
            p = job.placement
            known = self.nodes.get(p.node_id) if p is not None else None
            if p is None or known is None:
                continue
            device = next((d for d in known.devices if d.device_id == p.device_id), None)
            if device is not None:
                self.workload.append(workload_shape(device, p.milli))

    # -------------------------------------------------------------- dispatch

    def handle(self, event: Event) -> list[Action]:
        """The actions ``event`` causes, each carrying the event's ``stimulus_id``."""
        actions = self._dispatch(event)
        if not actions:
            return actions
        sid = event.stimulus_id or stimulus_of(event)
        return [a if a.stimulus_id else replace(a, stimulus_id=sid) for a in actions]

    def _dispatch(self, event: Event) -> list[Action]:
        if isinstance(event, AgentSaid):
            return self._agent_said(event)
        if isinstance(event, JobSubmitted):
            return self._submitted_together(JobsSubmitted((event,), event.now))
        if isinstance(event, JobsSubmitted):
            return self._submitted_together(event)
        if isinstance(event, Tick):
            return self._tick(event.now)
        if isinstance(event, AgentConnected):
            return self._connected(event)
        if isinstance(event, AgentDisconnected):
            return self._disconnected(event)
        if isinstance(event, CancelRequested):
            return self._cancel(event)
        if isinstance(event, NodeRemoved):
            return self._removed(event)
        raise TypeError(f"unknown event {type(event).__name__}")

    # -------------------------------------------------------------- agents

    def _connected(self, event: AgentConnected) -> list[Action]:
        join, now = event.join, event.now
        old = self.nodes.get(join.name)
        epoch = (old.epoch + 1) if old else 1
        node = NodeRecord(
            node_id=join.name,
            tier=join.tier,
            site=join.site,
            labels=dict(join.labels),
            devices=join.devices,
            epoch=epoch,
            last_heartbeat=now,
            warm_digests=frozenset(join.warm_digests),
            direct_runs=join.direct_runs,
            direct_address=join.direct_address,
        )
        # The cluster changed, so a leased slice may no longer be the best place. The
        # re-joining node's own agent forgot its leases with its old stream.
        for held in self.leases.on_node(node.node_id):
            self.leases.retire(held.lease.lease_id)
        self.nodes[node.node_id] = node
        actions: list[Action] = [
            *self._revoke_leases(list(self.leases.active.values()), f"{node.node_id} joined"),
            PersistNode(node),
            Send(
                node.node_id,
                epoch,
                m.JoinAck(
                    node_id=node.node_id,
                    heartbeat_interval_s=self.config.heartbeat_interval_s,
                    lost_after_s=self.config.lost_after_s,
                    epoch=epoch,
                    protocol_version=PROTOCOL_VERSION,
                ),
            ),
        ]
        still_running = set(join.running)
        for job in self._jobs_on(node.node_id):
            if (job.job_id, job.attempt) in still_running:
                continue
            if job.state == "placed":
                # Launched to the previous connection and never acknowledged: send again.
                actions.append(Send(node.node_id, epoch, self._launch(job)))
            else:
                why = f"{node.node_id} re-joined without it"
                actions += self._requeue(job, now, why, crashed=job.state == "running")
        live = {(j.job_id, j.attempt) for j in self._jobs_on(node.node_id)}
        for job_id, attempt in still_running - live:
            known = self.jobs.get(job_id)
            if known is None or not known.terminal:  # finished ones have nothing to cancel
                actions.append(Send(node.node_id, epoch, m.Cancel(job_id, attempt, "superseded")))
        return actions + self._schedule(now)

    def _disconnected(self, event: AgentDisconnected) -> list[Action]:
        node = self.nodes.get(event.node_id)
        if node is None or node.epoch != event.epoch:
            return []
        node.connected = False
        for held in self.leases.on_node(node.node_id):
            self.leases.retire(held.lease.lease_id)
        return [PersistNode(node)]

    def _agent_said(self, event: AgentSaid) -> list[Action]:
        node = self.nodes.get(event.node_id)
        if node is None or node.epoch != event.epoch:
            return []  # a stale connection: fenced off
        message, now = event.message, event.now
        node.last_heartbeat = now
        if node.state == "lost":
            # Back from a partition longer than the grace period: its jobs already moved.
            # Make it re-join, so it reports what it still runs and we cancel that.
            return [Drop(node.node_id, node.epoch, "declared lost; re-join")]
        if isinstance(message, m.Heartbeat):
            node.usage = message.usage
            node.job_usage = message.jobs
            for usage in message.jobs:
                self._learn_memory(usage)
            node.warm_digests = frozenset(message.warm_digests)
            node.running_jobs = message.running_jobs
            return []
        if isinstance(message, m.JobStarted):
            job = self._current(message.job_id, message.attempt, node.node_id)
            if job is None or job.state != "placed":
                return []
            self._set_state(job, "running")
            return [PersistJob(job, "running", node.node_id)]
        if isinstance(message, m.JobResult):
            return self._result(node, message, now)
        if isinstance(message, m.LeasedRuns):
            return self._leased_runs(node, message, now)
        if isinstance(message, m.Leave):
            return self._left(node, message.reason, now)
        return []

    def _removed(self, event: NodeRemoved) -> list[Action]:
        """Forget a node (the service checked it is known and not connected)."""
        node = self.nodes.pop(event.node_id, None)
        if node is None:
            return []
        for held in self.leases.on_node(node.node_id):
            self.leases.retire(held.lease.lease_id)
        actions: list[Action] = [ForgetNode(node.node_id)]
        for job in self._jobs_on(node.node_id):
            actions += self._requeue(job, event.now, f"node {node.node_id} removed", crashed=False)
        return actions + self._schedule(event.now)

    def _left(self, node: NodeRecord, reason: str, now: float) -> list[Action]:
        """The agent stops on purpose: its jobs are placed again now, not after the grace."""
        node.state = "left"
        node.connected = False
        actions: list[Action] = [PersistNode(node)]
        for held in self.leases.on_node(node.node_id):
            self.leases.retire(held.lease.lease_id)
        for job in self._jobs_on(node.node_id):
            why = f"node {node.node_id} left ({reason or 'its agent stopped'})"
            actions += self._requeue(job, now, why, crashed=False)
        return actions + self._schedule(now)

    def _result(self, node: NodeRecord, result: m.JobResult, now: float) -> list[Action]:
        job = self._current(result.job_id, result.attempt, node.node_id)
        if job is None:
            return []  # late or duplicate: discarded, the job already moved on
        actions: list[Action] = []
        if job.state == "placed":  # a short job: its result is the news that it ran
            self._set_state(job, "running")
            actions.append(PersistJob(job, "running", node.node_id))
        outcome = result.outcome
        # The run's timings whatever it said; its failure only once the job ends with it.
        job.outcome = m.Outcome(load_seconds=outcome.load_seconds, run_seconds=outcome.run_seconds)
        if outcome.ok:
            self.quarantine.succeeded(node.node_id)
            self._set_state(job, "succeeded")
            job.outputs = result.outputs
            job.outputs_digest = result.outputs_digest
            self._learn(node, job)
        else:
            retry = self._retry_larger(node, job, outcome, now)
            if retry is not None:
                return actions + retry
            unsupported = outcome.code is m.FailureCode.OPERATOR_UNSUPPORTED
            if unsupported:
                self._lacks_operator(node, job, outcome.message)
            if (
                outcome.retryable
                and not unsupported  # the backend's gap, not the node's fault
                and self.quarantine.failed(node.node_id, job.job_id, now, user_error=False)
            ):
                # Distinct jobs keep failing here for reasons not theirs: the node claims
                # more than it has. Leave it out of placement for a while.
                actions.append(PersistNode(node))
            if outcome.retryable and job.retries < job.request.max_retries:
                why = f"{outcome.error_type}: {outcome.message}"
                crashed = outcome.code is not None and outcome.code.crashed
                return actions + self._requeue(job, now, why, crashed) + self._schedule(now)
            self._set_state(job, "failed")
            job.outcome = outcome
        job.finished_at = now
        actions.append(PersistJob(job, job.state, node.node_id))
        if result.ok:
            actions += self._grant_lease(node, job, now)  # before Notify: the caller asks
        actions.append(Notify(job.job_id))
        return actions + self._schedule(now)

    # -------------------------------------------------------------- jobs

    def _submitted_together(self, event: JobsSubmitted) -> list[Action]:
        """Every job pending first, then one placement round for all of them; each job's
        actions carry its own ``submit-<job>`` stimulus, as if submitted alone."""
        actions: list[Action] = []
        batch = {}
        for submitted in event.jobs:
            job = JobRecord(
                job_id=submitted.job_id, request=submitted.request, submitted_at=submitted.now
            )
            self.jobs[job.job_id] = job
            self._set_state(job, "pending")
            batch[job.job_id] = f"submit-{job.job_id}"
            actions.append(PersistJob(job, "pending", stimulus_id=batch[job.job_id]))
        for action in self._schedule(event.now):
            job_id = (
                action.job.job_id
                if isinstance(action, PersistJob)
                else getattr(getattr(action, "message", None), "job_id", "")
            )
            own = batch.get(job_id)
            actions.append(replace(action, stimulus_id=own) if own else action)
        return actions

    def _cancel(self, event: CancelRequested) -> list[Action]:
        job = self.jobs.get(event.job_id)
        if job is None or job.terminal:
            return []
        actions: list[Action] = []
        if job.placement is not None and job.state in ("placed", "running"):
            node = self.nodes.get(job.placement.node_id)
            if node is not None and node.connected:
                cancel = m.Cancel(job.job_id, job.attempt, "cancelled by user")
                actions.append(Send(node.node_id, node.epoch, cancel))
        job.finished_at = event.now
        self._set_state(job, "cancelled")
        job.outcome = m.Outcome.failed(m.FailureCode.CANCELLED, "cancelled by user")
        return [*actions, PersistJob(job, "cancelled"), Notify(job.job_id)]

    def _requeue(self, job: JobRecord, now: float, why: str, crashed: bool) -> list[Action]:
        """Send a job back to pending after its node failed it; give up past max_retries.

        ``crashed``: the node or its worker died while running this job. After
        ``poison_after`` such deaths the job is poison and is not placed again.
        """
        job.retries += 1
        if crashed and job.placement is not None:
            job.lost_nodes.append(job.placement.node_id)
        if len(job.lost_nodes) >= self.config.poison_after:
            job.finished_at = now
            self._set_state(job, "failed")
            job.outcome = m.Outcome.failed(
                m.FailureCode.POISON,
                f"the job was running when its node or worker died {len(job.lost_nodes)} times"
                f" ({', '.join(job.lost_nodes)}); it is not placed again. Last: {why}",
            )
            return [PersistJob(job, "failed", "poison"), Notify(job.job_id)]
        if job.retries > job.request.max_retries:
            job.finished_at = now
            self._set_state(job, "failed")
            job.outcome = m.Outcome.failed(
                m.FailureCode.RETRIES_EXHAUSTED,
                f"gave up after {job.retries - 1} retries; last failure: {why}. "
                "Check the nodes' logs, or raise max_retries.",
            )
            return [PersistJob(job, "failed", why), Notify(job.job_id)]
        job.placement = None
        backoff = self.config.retry_backoff_s * 2 ** (job.retries - 1)
        job.not_before = now + min(backoff, self.config.retry_backoff_max_s)
        self._set_state(job, "pending")
        return [PersistJob(job, "pending", why)]

    # -------------------------------------------------------------- time

    def _tick(self, now: float) -> list[Action]:
        idle = self.leases.idle(now, self.config.lease_idle_s)
        actions: list[Action] = self._revoke_leases(idle, "idle")
        for node in self.nodes.values():
            if node.state == "ready" and now - node.last_heartbeat > self.config.lost_after_s:
                node.state = "lost"
                actions.append(PersistNode(node))
                for held in self.leases.on_node(node.node_id):
                    self.leases.retire(held.lease.lease_id)
                for job in self._jobs_on(node.node_id):
                    age = now - node.last_heartbeat
                    why = f"node {node.node_id} lost (silent {age:.1f}s)"
                    actions += self._requeue(job, now, why, crashed=job.state == "running")
        return actions + self._schedule(now)

    # -------------------------------------------------------------- placement

    def reservations(self) -> dict[str, tuple[m.Reservation, ...]]:
        """By node: what each live job holds of a shared device, in placement order."""
        held: dict[str, list[m.Reservation]] = {}
        for job_id in self.active:
            p = self.jobs[job_id].placement
            if p is not None and p.milli:
                held.setdefault(p.node_id, []).append(
                    m.Reservation(job_id, p.device_id, p.slice_index, p.memory_bytes, p.milli)
                )
        return {node_id: tuple(rows) for node_id, rows in held.items()}

    def snapshot(self, now: float) -> ClusterSnapshot:
        # Per device with work on it: predicted busy seconds per slice, and what its jobs
        # reserve of it. Devices without work share one tuple of zeros per slice count.
        busy: dict[tuple[str, str], dict[int, float]] = {}
        reserved: dict[tuple[str, str], tuple[int, int]] = {}
        for job_id in self.active:
            p = self.jobs[job_id].placement
            if p is not None:
                on = busy.setdefault((p.node_id, p.device_id), {})
                # At least a nanosecond: a job predicted to take no time still holds its seat.
                on[p.slice_index] = on.get(p.slice_index, 0.0) + max(p.predicted_seconds, 1e-9)
                if p.milli:
                    memory, milli = reserved.get((p.node_id, p.device_id), (0, 0))
                    reserved[(p.node_id, p.device_id)] = (memory + p.memory_bytes, milli + p.milli)
        idle: dict[int, tuple[float, ...]] = {}
        views = []
        for node in self.nodes.values():
            quarantined = self.quarantine.quarantined(node.node_id, now)
            unexplained = _unexplained_memory(node)
            devices = []
            for d in node.devices:
                key = (node.node_id, d.device_id)
                work = busy.get(key)
                if work is None:
                    seconds = idle.get(d.slices) or idle.setdefault(d.slices, (0.0,) * d.slices)
                else:
                    loads = [0.0] * d.slices
                    for i, s in work.items():
                        if 0 <= i < d.slices:
                            loads[i] += s
                    seconds = tuple(loads)
                memory, milli = reserved.get(key, (0, 0))
                devices.append(
                    DeviceView(
                        node_id=node.node_id,
                        device=d,
                        slice_busy_seconds=seconds,
                        reserved_memory_bytes=memory,
                        reserved_milli=milli,
                        unexplained_memory_bytes=unexplained.get(d.device_id, 0) if d.shared else 0,
                    )
                )
            views.append(
                NodeView(
                    node_id=node.node_id,
                    tier=node.tier,
                    site=node.site,
                    healthy=node.state == "ready" and node.connected and not quarantined,
                    unhealthy_reason=self.quarantine.reason(node.node_id, now)
                    if quarantined
                    else (node.state if node.connected else "disconnected"),
                    labels=node.labels,
                    devices=tuple(devices),
                    warm_digests=node.warm_digests,
                )
            )
        return ClusterSnapshot(
            nodes=tuple(views), network=self.network, now=now, workload=tuple(self.workload)
        )

    def _job_request(self, job: JobRecord) -> JobRequest:
        r = job.request
        digest = r.artifact_digest
        measured = {model: s for (d, model), s in self.measured.items() if d == digest}
        return JobRequest(
            job_id=job.job_id,
            artifact_digest=digest,
            flops=r.flops,
            # Corrected by what a run of the model was measured using, where that is more.
            memory_bytes=max(r.memory_bytes, self.memory_peak.get(digest, 0)),
            input_bytes=r.input_bytes,
            output_bytes=r.output_bytes,
            artifact_bytes=r.param_bytes,
            origin=r.origin,
            priority=r.priority,
            slo_seconds=r.slo_seconds or None,
            device_kinds=frozenset(r.device_kinds),
            tiers=frozenset(r.tiers),
            sites=frozenset(r.sites),
            nodes=frozenset(r.nodes),
            measured_seconds=measured,
            compute_milli=r.compute_milli,
            precision=r.precision or "fp32",
            operators=frozenset(r.operators),
            unsupported_on=self.unsupported.get(digest, {}),
        )

    def _schedule(self, now: float) -> list[Action]:
        ready = [self.jobs[j] for j in self.pending if self.jobs[j].not_before <= now]
        if not ready:
            return []
        # Waiting jobs may need a leased slice: place them with every slice free, and let
        # the lease holders' next calls be placed afresh alongside.
        actions: list[Action] = self._revoke_leases(
            list(self.leases.active.values()), "other jobs are waiting"
        )
        result = plan(
            self.snapshot(now),
            [self._job_request(j) for j in ready],
            config=self.config.placement,
        )
        self.last_plan = result
        for p in result.placements:
            job = self.jobs[p.job_id]
            node = self.nodes[p.node_id]
            device = next(d for d in node.devices if d.device_id == p.device_id)
            job.placement = m.PlacementInfo(
                node_id=p.node_id,
                device_id=p.device_id,
                slice_index=p.slice_index,
                predicted_seconds=p.predicted_seconds,
                terms=dict(p.terms),
                solver=result.solver,
                tier=node.tier,
                device_description=device.describe(),
                simulated=device.simulated,
                memory_bytes=p.memory_bytes,
                milli=p.milli,
                **_runner_up_fields(p.runner_up),
            )
            job.attempt += 1
            job.pending_reasons, job.unschedulable_since = {}, None
            self._set_state(job, "placed")
            self.decisions["placed"] += 1
            self.workload.append(workload_shape(device, p.milli))
            actions.append(PersistJob(job, "placed", f"{p.node_id}/{p.device_id}"))
            actions.append(Send(node.node_id, node.epoch, self._launch(job)))
        for job_id, reasons in result.unschedulable.items():
            stuck = job_id in result.unresolvable
            actions += self._unschedulable(self.jobs[job_id], reasons, stuck, now)
        self.decisions["deferred"] += len(result.deferred)
        for job_id in result.deferred:
            job = self.jobs[job_id]
            memory = format_bytes(self._job_request(job).memory_bytes)
            reasons = {
                "all nodes": "no room now on the devices it may use (every slice taken, or no"
                f" shared device with {memory} and its compute share unreserved); it is"
                " placed when a job ends"
            }
            if reasons != job.pending_reasons:
                job.pending_reasons = reasons
                actions.append(PersistJob(job, "", "waiting for room"))
        return actions

    def _unschedulable(
        self, job: JobRecord, reasons: dict[str, str], unresolvable: bool, now: float
    ) -> list[Action]:
        """``unresolvable``: no known node could take it even when back (``Plan``)."""
        self.decisions["unschedulable"] += 1
        changed = reasons != job.pending_reasons
        job.pending_reasons = dict(reasons)
        if job.unschedulable_since is None:
            job.unschedulable_since = now
        waiting = now - job.unschedulable_since < self.config.unschedulable_timeout_s
        if waiting or not unresolvable:
            # A node that is down but known (restarting, partitioned, quarantined) could
            # take it: wait for it, as Kubernetes keeps such a pod pending.
            return [PersistJob(job, "", "unschedulable")] if changed else []
        job.finished_at = now
        self._set_state(job, "failed")
        if reasons:
            lines = "; ".join(f"{n}: {r}" for n, r in sorted(reasons.items()))
            message = f"no device in the network can hold this job — {lines}"
        else:
            message = (
                "no agent has joined the scheduler, so there is nowhere to run this job — "
                "start one with `anypu agent --scheduler HOST:PORT --token T`"
            )
        job.outcome = m.Outcome.failed(m.FailureCode.UNSCHEDULABLE, message)
        return [PersistJob(job, "failed", "unschedulable"), Notify(job.job_id)]

    # -------------------------------------------------------------- leases

    def _grant_lease(self, node: NodeRecord, job: JobRecord, now: float) -> list[Action]:
        """Keep a succeeded job's slice for its caller, if it asked and nothing competes."""
        p = job.placement
        if (
            not job.request.lease
            or p is None
            or not (node.direct_runs or node.direct_address)
            or self.config.lease_idle_s <= 0
            or self.pending
            or self.leases.slice_leased(p)
            or any(_same_slice(self.jobs[j].placement, p) for j in self.active)
        ):
            return []
        lease = self.leases.grant(job.request, p, node.direct_address, now)
        job.lease_id = lease.lease_id
        return [Send(node.node_id, node.epoch, m.LeaseGranted(lease))]

    def _revoke_leases(self, held: list[HeldLease], reason: str) -> list[Action]:
        actions: list[Action] = []
        for h in held:
            self.leases.retire(h.lease.lease_id)
            node = self.nodes.get(h.lease.node_id)
            if node is not None and node.connected:
                revoked = m.LeaseRevoked(h.lease.lease_id, reason)
                actions.append(Send(node.node_id, node.epoch, revoked))
        return actions

    def _leased_runs(self, node: NodeRecord, report: m.LeasedRuns, now: float) -> list[Action]:
        """Record the calls an agent ran under its leases, as jobs placed by ``lease``.

        One transition each, to its outcome: they never waited for placement.
        """
        actions: list[Action] = []
        for run in report.runs:
            held = self.leases.find(run.lease_id)
            if held is None or held.lease.node_id != node.node_id or run.job_id in self.jobs:
                continue  # not granted, someone else's, or reported again after a re-join
            held.last_used = max(held.last_used, now)
            job = JobRecord(
                job_id=run.job_id,
                request=held.template,
                attempt=1,
                submitted_at=run.started_at,
                finished_at=run.finished_at,
                placement=held.placement,
                outcome=run.outcome,
                lease_id=run.lease_id,
            )
            self.jobs[job.job_id] = job
            if run.outcome.ok:
                self._set_state(job, "succeeded")
                self._learn(node, job)
            else:
                self._set_state(job, "failed")
            self.decisions["leased"] = self.decisions.get("leased", 0) + 1
            device = self._device(node, job)
            if device is not None and job.placement is not None:
                self.workload.append(workload_shape(device, job.placement.milli))
            detail = f"{node.node_id} (lease {run.lease_id})"
            actions.append(PersistJob(job, job.state, detail, leased=True))
        return actions

    # -------------------------------------------------------------- helpers

    def _learn(self, node: NodeRecord, job: JobRecord) -> None:
        """A job succeeded on ``node``: its model is warm there, and its time is known."""
        node.warm_digests = node.warm_digests | {job.request.artifact_digest}
        device = self._device(node, job)
        # A simulated device runs on the host CPU: its timings say nothing about it.
        if device is not None and not device.simulated:
            key = (job.request.artifact_digest, device.model)
            old = self.measured.get(key)
            run = job.outcome.run_seconds
            self.measured[key] = run if old is None else 0.7 * old + 0.3 * run

    def _learn_memory(self, usage: m.JobUsage) -> None:
        """A running job's measured memory on a seat of a shared device (what it added
        above its seat's idle process): the peak of its model so far. Readings of a
        slice's whole worker (its runtime, other warm models) are not the job's."""
        job = self.jobs.get(usage.job_id)
        if job is None or job.attempt != usage.attempt or job.placement is None:
            return
        if not job.placement.milli:  # not on a shared device
            return
        self._raise_peak(job.request.artifact_digest, usage.memory_used_bytes)

    def _raise_peak(self, digest: str, used: int) -> None:
        """Remember ``used`` as the model's peak if it is more, for as many models as the
        timings are (the least recently raised first out of mind)."""
        peak = self.memory_peak.pop(digest, 0)
        self.memory_peak[digest] = max(peak, used)  # now the newest
        while len(self.memory_peak) > _MODELS_REMEMBERED:
            del self.memory_peak[next(iter(self.memory_peak))]

    def _retry_larger(
        self, node: NodeRecord, job: JobRecord, outcome: m.Outcome, now: float
    ) -> list[Action] | None:
        """A job stopped over a share of a shared device that its estimate had sized is
        placed again, once, reserving half as much again as it was found using: the
        estimate was ours, not the user's. None when that does not apply."""
        p = job.placement
        codes = (m.FailureCode.MEMORY_EXCEEDED, m.FailureCode.OUT_OF_MEMORY)
        if outcome.code not in codes or p is None or not p.milli or job.memory_retried:
            return None
        used = max(outcome.memory_used_bytes, p.memory_bytes)
        self._raise_peak(job.request.artifact_digest, used + used // 2)
        job.memory_retried = True
        why = (
            f"went over the {format_bytes(p.memory_bytes)} its estimate reserved on"
            f" {node.node_id}/{p.device_id} (used {format_bytes(used)}): placed again"
            f" reserving {format_bytes(used + used // 2)} ({outcome.message})"
        )
        job.retries -= 1  # not one of the node's failures: max_retries is untouched
        actions = self._requeue(job, now, why, crashed=False)
        job.not_before = now  # nothing to wait out: no node did anything wrong
        return actions + self._schedule(now)

    def _lacks_operator(self, node: NodeRecord, job: JobRecord, message: str) -> None:
        """Remember that this model's operators are not all on that backend (kind and
        vendor): placement skips it for the model from now on, saying why."""
        device = self._device(node, job)
        if device is None:
            return
        digest = job.request.artifact_digest
        backends = self.unsupported.pop(digest, {})
        backends[(device.kind, device.vendor)] = f"{message[:300]}; found on {node.node_id}"
        self.unsupported[digest] = backends  # most recently learnt last
        while len(self.unsupported) > 1000:
            self.unsupported.pop(next(iter(self.unsupported)))

    def _set_state(self, job: JobRecord, state: str) -> None:
        job.state = state
        if state in ("placed", "running"):
            self.active[job.job_id] = None
        else:
            self.active.pop(job.job_id, None)
        if state == "pending":
            self.pending[job.job_id] = None
        else:
            self.pending.pop(job.job_id, None)
        if job.terminal:
            if job.request.inputs:  # never read again: memory holds 2,000 finished jobs
                job.request = replace(job.request, inputs=b"")
            self.finished.append(job.job_id)
            while len(self.finished) > self.keep_finished:
                self.jobs.pop(self.finished.popleft(), None)

    def _launch(self, job: JobRecord) -> m.Launch:
        assert job.placement is not None
        r = job.request
        return m.Launch(
            job_id=job.job_id,
            attempt=job.attempt,
            artifact_digest=r.artifact_digest,
            device_id=job.placement.device_id,
            slice_index=job.placement.slice_index,
            inputs=r.inputs,
            inputs_digest=r.inputs_digest,
            timeout_s=r.timeout_s or self.config.default_timeout_s,
            memory_limit_bytes=job.placement.memory_bytes,
        )

    def _jobs_on(self, node_id: str) -> list[JobRecord]:
        jobs = (self.jobs[j] for j in self.active)
        return [j for j in jobs if j.placement is not None and j.placement.node_id == node_id]

    def _current(self, job_id: str, attempt: int, node_id: str) -> JobRecord | None:
        job = self.jobs.get(job_id)
        if (
            job is None
            or job.terminal
            or job.attempt != attempt
            or job.placement is None
            or job.placement.node_id != node_id
        ):
            return None
        return job

    def _device(self, node: NodeRecord, job: JobRecord) -> Device | None:
        if job.placement is None:
            return None
        return next((d for d in node.devices if d.device_id == job.placement.device_id), None)


def _unexplained_memory(node: NodeRecord) -> dict[str, int]:
    """Per device: memory in use, as its vendor read it on the last heartbeat, that no
    running job's own measured use accounts for."""
    jobs: dict[str, int] = {}
    for usage in node.job_usage:
        jobs[usage.device_id] = jobs.get(usage.device_id, 0) + usage.memory_used_bytes
    return {
        u.device_id: max(0, u.memory_used_bytes - jobs.get(u.device_id, 0))
        for u in node.usage
        if u.memory_used_bytes
    }


def _runner_up_fields(runner_up: RunnerUp | None) -> dict[str, Any]:
    if runner_up is None:
        return {}
    return {
        "runner_up_node": runner_up.node_id,
        "runner_up_device": runner_up.device_id,
        "runner_up_seconds": runner_up.predicted_seconds,
        "runner_up_terms": dict(runner_up.terms),
    }


def _same_slice(a: m.PlacementInfo | None, b: m.PlacementInfo) -> bool:
    return a is not None and (a.node_id, a.device_id, a.slice_index) == (
        b.node_id,
        b.device_id,
        b.slice_index,
    )
