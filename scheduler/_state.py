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

import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from anypu import PROTOCOL_VERSION
from anypu.devices import Device, format_bytes
from anypu.placement import (
    WORKLOAD_WINDOW,
    PlacementConfig,
    Plan,
    WorkloadShape,
    infer_origin,
    workload_shape,
)
from anypu.protos import messages as m
from anypu.scheduler._compute_model import work_of
from anypu.scheduler._deployments import DeploymentRecord, DeploymentReplicas
from anypu.scheduler._events import (
    Action,
    AgentConnected,
    AgentDisconnected,
    AgentSaid,
    CancelRequested,
    DeploymentApplied,
    DeploymentDeleted,
    DeploymentRolledOut,
    DeploymentsCalled,
    Drop,
    Event,
    ForgetNode,
    JobsSubmitted,
    JobSubmitted,
    NodeRemoved,
    Notify,
    PersistJob,
    PersistLearned,
    PersistNode,
    Send,
    Tick,
    new_job_id,
    stimulus_of,
)
from anypu.scheduler._learned import Learned
from anypu.scheduler._leases import HeldLease, LeaseBook
from anypu.scheduler._measured_network import MeasuredNetwork
from anypu.scheduler._peers import MAX_PEERS, peers_for, representatives
from anypu.scheduler._placing import PlacementRounds
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
    "PersistLearned",
    "PersistNode",
    "SchedulerConfig",
    "SchedulerState",
    "Send",
    "Tick",
    "new_job_id",
    "stimulus_of",
]


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
    #: Cost transfers on the declared network refitted to the round trips agents measure
    #: (``_measured_network``); False: as declared.
    measured_network: bool = True
    #: Autoscaled deployments (``_deployments``): how long the load must ask for fewer
    #: replicas before one is released, and how long without a call before one with no
    #: minimum goes to zero replicas.
    scale_down_after_s: float = 30.0
    scale_to_zero_after_s: float = 60.0
    placement: PlacementConfig = field(default_factory=PlacementConfig)


class SchedulerState(PlacementRounds, DeploymentReplicas):
    """All nodes and jobs, and the rules for how they change."""

    def __init__(self, config: SchedulerConfig | None = None, network: object | None = None):
        self.config = config or SchedulerConfig()
        self.network = network
        self.measured = MeasuredNetwork(network, enabled=self.config.measured_network)
        self.nodes: dict[str, NodeRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.pending: dict[str, None] = {}  # insertion-ordered set of pending job ids
        self.active: dict[str, None] = {}  # placed or running
        self.finished: deque[str] = deque()  # terminal jobs kept in memory, oldest first
        self.keep_finished = 2000  # older ones live only in the store
        self.learned = Learned()  # run times, memory peaks, backends lacking operators
        self.last_plan: Plan | None = None
        #: Devices set aside for jobs held back long (``Plan.earmarks``): job -> (node, device).
        self.earmarks: dict[str, tuple[str, str]] = {}
        self.quarantine = NodeQuarantine()
        self.decisions: dict[str, int] = {
            "placed": 0,
            "unschedulable": 0,
            "deferred": 0,
            "split": 0,
            "split_fell_back": 0,
        }
        #: Jobs with a deadline since start, by (tier, outcome): ``met`` and ``missed``
        #: by the tier they ran on, ``unreachable`` by the tier of the best prediction.
        self.deadlines: Counter[tuple[str, str]] = Counter()
        #: The sites' agents others time (``_peers``), as last sent.
        self.peer_representatives: dict[str, m.Peer] = {}
        self.leases = LeaseBook()
        self.deployments: dict[str, DeploymentRecord] = {}
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
        if isinstance(event, DeploymentApplied):
            return self._deployment_applied(event) + self._schedule(event.now)
        if isinstance(event, DeploymentDeleted):
            return self._deployment_deleted(event) + self._schedule(event.now)
        if isinstance(event, DeploymentRolledOut):
            return self._deployment_rolled_out(event) + self._schedule(event.now)
        if isinstance(event, DeploymentsCalled):
            return self._deployments_called(event)
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
            *self._revoke_leases(self.leases.callers(), f"{node.node_id} joined"),
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
        actions += self._peer_updates(node, joined=True)
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
        return [PersistNode(node), *self._peer_updates(node)]

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
            learnt = [a for usage in message.jobs for a in self._learn_memory(usage)]
            node.warm_digests = frozenset(message.warm_digests)
            node.running_jobs = message.running_jobs
            if message.rtt_s > 0:
                node.round_trips.add(message.rtt_s, now)
            if message.bandwidth_bps > 0:
                node.round_trips.add_bandwidth(message.bandwidth_bps, now)
            for sample in message.peers[:MAX_PEERS]:
                if sample.site != node.site and 0 <= sample.rtt_s < 60:
                    _, _, bps, bps_at = node.peer_trips.get(sample.site, (0, 0, 0.0, -math.inf))
                    if sample.bandwidth_bps > 0:
                        bps, bps_at = sample.bandwidth_bps, now
                    node.peer_trips[sample.site] = (sample.rtt_s, now, bps, bps_at)
            if message.wants_echo:
                learnt.append(Send(node.node_id, node.epoch, m.HeartbeatEcho(message.sent_at)))
            return learnt
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
        return actions + self._peer_updates(node) + self._schedule(now)

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
            self._count_deadline(job, node.tier, now - job.submitted_at)
            job.outputs = result.outputs
            job.outputs_digest = result.outputs_digest
            actions += self._learn(node, job)
        else:
            retry = self._retry_larger(node, job, outcome, now)
            if retry is not None:
                return actions + retry
            unsupported = outcome.code is m.FailureCode.OPERATOR_UNSUPPORTED
            if unsupported:
                actions += self._lacks_operator(node, job, outcome.message)
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
            if not job.request.origin and job.request.round_trips:
                self._infer_origin(job, submitted.now)
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

    def _peer_updates(self, node: NodeRecord, joined: bool = False) -> list[Action]:
        """``m.Peers`` after ``node`` joined or went (``_peers``): to every connected agent
        when the sites' representatives changed, else to a joining agent alone (when
        there is anyone to time). Only a node that takes direct calls, or represents its
        site, can change them: any other costs no more than its own message."""
        reps = self.peer_representatives
        if node.direct_address or any(p.node_id == node.node_id for p in reps.values()):
            fresh = representatives(self.nodes.values())
            if fresh != reps:
                self.peer_representatives = fresh
                ready = [n for n in self.nodes.values() if n.connected and n.state == "ready"]
                return [Send(n.node_id, n.epoch, peers_for(n.site, fresh)) for n in ready]
        if joined and any(site != node.site for site in reps):
            return [Send(node.node_id, node.epoch, peers_for(node.site, reps))]
        return []

    def _infer_origin(self, job: JobRecord, now: float) -> None:
        """Where a client that named no origin is, from the round trips it timed
        (``placement.infer_origin``, on the network as measured)."""
        fit = infer_origin(
            self.measured.graph(self.nodes.values(), now), dict(job.request.round_trips)
        )
        if fit is not None:
            job.request = replace(job.request, origin=fit.vertex)
            job.origin_inferred = fit.describe()

    def _caller_site(self, round_trips: dict[str, float], now: float) -> str:
        """Where a caller is, from the round trips it timed ("" when they fit nowhere)."""
        fit = infer_origin(self.measured.graph(self.nodes.values(), now), round_trips)
        return fit.vertex if fit is not None else ""

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
        if job.split_stage == "head":  # its head computes for nobody now
            actions += self._cancel(replace(event, job_id=job.head_job_id))
        return [*actions, PersistJob(job, "cancelled"), Notify(job.job_id)]

    def _requeue(
        self, job: JobRecord, now: float, why: str, crashed: bool, counts: bool = True
    ) -> list[Action]:
        """Send a job back to pending after its node failed it; give up past max_retries.

        ``crashed``: the node or its worker died while running this job. After
        ``poison_after`` such deaths the job is poison and is not placed again.
        """
        job.retries += counts  # ``counts``: a failure of the node's, towards max_retries
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
                actions += self._peer_updates(node)
        return actions + self._reconcile_deployments(now) + self._schedule(now)

    # -------------------------------------------------------------- leases

    def _grant_lease(self, node: NodeRecord, job: JobRecord, now: float) -> list[Action]:
        """Keep a succeeded job's slice for its caller, if it asked and nothing competes
        (for its deployment, if it warmed a replica)."""
        if job.deployment:
            return self._grant_replica(node, job, now)
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
            if held.deployment:  # on the scheduler's clock: the agent's may differ
                self._deployment_ran(held.deployment, now, run.finished_at - run.started_at)
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
                self._count_deadline(job, node.tier, run.finished_at - run.started_at)
                actions += self._learn(node, job)
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

    def _count_deadline(self, job: JobRecord, tier: str, took_s: float) -> None:
        """A succeeded job with a deadline met it or missed it (``deadlines``)."""
        if job.request.deadline_ms:
            late = took_s * 1000 > job.request.deadline_ms
            self.deadlines[(tier, "missed" if late else "met")] += 1

    def _learn(self, node: NodeRecord, job: JobRecord) -> list[Action]:
        """A job succeeded on ``node``: its model is warm there, and its time is known."""
        node.warm_digests = node.warm_digests | {job.request.artifact_digest}
        device = self._device(node, job)
        # A simulated device runs on the host CPU: its timings say nothing about it.
        if device is None or device.simulated:
            return []
        digest, seconds = job.request.artifact_digest, job.outcome.run_seconds
        cold = job.outcome.load_seconds > 0
        lesson = self.learned.ran(digest, device.model, seconds, cold=cold)
        actions: list[Action] = [PersistLearned(lesson)]
        work = self.learned.worked(digest, work_of(job.request))
        if work is not None:
            actions.append(PersistLearned(work))
        return actions

    def _learn_memory(self, usage: m.JobUsage) -> list[Action]:
        """A running job's measured memory on a seat of a shared device (what it added
        above its seat's idle process): the peak of its model so far. Readings of a
        slice's whole worker (its runtime, other warm models) are not the job's."""
        job = self.jobs.get(usage.job_id)
        if job is None or job.attempt != usage.attempt or job.placement is None:
            return []
        if not job.placement.milli:  # not on a shared device
            return []
        lesson = self.learned.used(job.request.artifact_digest, usage.memory_used_bytes)
        return [PersistLearned(lesson)] if lesson is not None else []

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
        lesson = self.learned.used(job.request.artifact_digest, used + used // 2)
        job.memory_retried = True
        why = (
            f"went over the {format_bytes(p.memory_bytes)} its estimate reserved on"
            f" {node.node_id}/{p.device_id} (used {format_bytes(used)}): placed again"
            f" reserving {format_bytes(used + used // 2)} ({outcome.message})"
        )
        actions: list[Action] = [PersistLearned(lesson)] if lesson is not None else []
        # Not one of the node's failures: max_retries is untouched.
        actions += self._requeue(job, now, why, crashed=False, counts=False)
        job.not_before = now  # nothing to wait out: no node did anything wrong
        return actions + self._schedule(now)

    def _lacks_operator(self, node: NodeRecord, job: JobRecord, message: str) -> list[Action]:
        """Remember that this model's operators are not all on that backend (kind and
        vendor): placement skips it for the model from now on, saying why."""
        device = self._device(node, job)
        if device is None:
            return []
        what = f"{message[:300]}; found on {node.node_id}"
        digest = job.request.artifact_digest
        return [PersistLearned(self.learned.lacks(digest, device.kind, device.vendor, what))]

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
            compute_milli=job.placement.milli,
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


def _same_slice(a: m.PlacementInfo | None, b: m.PlacementInfo) -> bool:
    return a is not None and (a.node_id, a.device_id, a.slice_index) == (
        b.node_id,
        b.device_id,
        b.slice_index,
    )
