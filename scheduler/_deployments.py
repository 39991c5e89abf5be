"""Deployments: a model published under a name, served by replicas across the cluster.

A replica is a warm worker holding the model on one slice, which callers reach directly:
the scheduler places a replica as it places a job (same filters, costs and network, from
the deployment's origin), as a job of its own (``<name>.replica-<n>``) that runs the
deployment's example inputs once, warming the worker; when that job succeeds on an agent
that takes direct calls, the slice is leased to the deployment (``_leases``: a lease held
by the deployment, not by a caller, so it is not taken back for waiting jobs, a joining
node or idleness). Callers ask for the ready replicas' leases and send their calls to
them, as a leased caller does (``sdk`` ``Client.service``).

Deploying anew under the same name is a **rolling update** without loss, as a Kubernetes
Deployment's surge: the version goes up, replicas of the new one are placed and warmed
while the old ones keep serving, and the old are released only once as many new ones
are ready as are wanted. The version before is kept: **rollback** makes it the one
served again (a rolling update back to it, keeping its number).

A **canary** (deployed with ``canary_percent`` p, as KServe's canaryTrafficPercent):
the new version gets :math:`\\max(1, \\mathrm{round}(n p / 100))` of the ``n`` wanted
replicas and p % of the calls (callers draw per call, ``DeploymentInfo.serving``);
the stable version keeps the rest (at least one replica), each side re-placed if
lost. **Promote** ends it as a rolling update to the canary; **rollback** releases the
canary's replicas at once, the stable version never having stopped serving.

Every tick the count is reconciled, as a Kubernetes ReplicaSet is: replicas missing
(lost with their node, never placed, failed warming) are placed again; replicas over the
wanted count are released, the one idle longest first. The deployment (name, template, count)
persists; after a restart its replicas are placed afresh (agents forget leases with
their stream).

**Autoscaling** (``max_replicas`` > 0) is ``_autoscaling``'s: calls in flight per
replica, and a latency target, move the wanted count; this module places and releases
replicas to match it.

**Where** (``_traffic``): each replica is placed for a site, the warm-up's origin: in
proportion to where its callers reported calls from over the last minute (the declared
origin while none are measured); a replica is released from the site furthest over its
share, and when the traffic has moved one replica at a time follows it.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from anypu.comm import merged, quantile
from anypu.protos import messages as m
from anypu.scheduler._autoscaling import WINDOW_S, DeploymentAutoscaling
from anypu.scheduler._events import (
    Action,
    CancelRequested,
    DeploymentApplied,
    DeploymentDeleted,
    DeploymentRolledOut,
    DeploymentsCalled,
    ForgetDeployment,
    PersistDeployment,
    PersistJob,
    Send,
)
from anypu.scheduler._records import JobRecord
from anypu.scheduler._traffic import (
    MOVE_EVERY_S,
    SiteTraffic,
    move,
    next_site,
    quotas,
    release_order,
)

if TYPE_CHECKING:
    from anypu.scheduler._leases import HeldLease, LeaseBook
    from anypu.scheduler._records import NodeRecord
    from anypu.scheduler._state import SchedulerConfig

__all__ = [
    "DeploymentRecord",
    "DeploymentReplicas",
    "DeploymentVersion",
    "canary_refusal",
    "rollout_refusal",
]

#: Replicas being placed and warmed at once per deployment, beyond those ready: a
#: deployment whose warm-ups keep failing does not flood the queue.
WARMING_AT_ONCE = 4
#: After no device could meet its deadline_ms, how long before its replicas are placed
#: again (nodes join, load moves; every tick would only repeat the refusal).
DEADLINE_RETRY_S = 10.0
_EVENTS_KEPT = 20


def canary_refusal(
    record: DeploymentRecord | None,
    request: m.SubmitRequest,
    inputs: tuple[m.TensorSpec, ...],
    outputs: tuple[m.TensorSpec, ...],
    leases: LeaseBook,
    name: str,
) -> str:
    """Why ``request`` cannot start a canary of deployment ``name`` now ("": it can)."""
    if record is None:
        return (
            f"deployment {name} is new: a canary splits calls with a version already"
            " serving; deploy it without a canary percent first"
        )
    if request == record.request:
        return (
            f"deployment {name} already serves this model as version {record.version}: a"
            " canary needs another model (to change a running canary's share, promote or"
            " roll it back, then deploy again)"
        )
    stable = record.stable or record.current
    if (inputs, outputs) != (stable.inputs, stable.outputs):
        return (
            f"deployment {name}: a canary must take and give what version {stable.number}"
            " does (the same inputs and outputs, names, datatypes and shapes), since each"
            " call may go to either; deploy a model with another signature without a canary"
        )
    versions = [h.version for h in leases.of_deployment(record.name)]
    unfinished = any(v != record.version for v in versions) or record.version not in versions
    if record.stable is None and unfinished:
        return (
            f"deployment {name} is still rolling over to version {record.version}: start the"
            " canary once that version serves every replica"
        )
    return ""


def rollout_refusal(record: DeploymentRecord, action: str) -> str:
    """Why ``action`` ("promote", "rollback") cannot be done now ("": it can)."""
    if action == "promote":
        if not record.canary_percent:
            return (
                f"deployment {record.name} runs no canary (version {record.version} serves"
                " every call): deploy a new model with a canary percent first"
            )
        return ""
    if action == "rollback":
        if record.previous is None:
            return (
                f"deployment {record.name} has no version before {record.version} to roll back to"
            )
        return ""
    return f"no rollout action {action!r}: use 'promote' or 'rollback'"


@dataclass(frozen=True)
class DeploymentVersion:
    """One version of a deployment's model: what its replicas are placed and warmed with."""

    number: int
    request: m.SubmitRequest
    inputs: tuple[m.TensorSpec, ...] = ()
    outputs: tuple[m.TensorSpec, ...] = ()


@dataclass
class DeploymentRecord:
    name: str
    #: What each replica is placed and warmed with (example inputs inline).
    request: m.SubmitRequest
    replicas: int
    created_at: float
    inputs: tuple[m.TensorSpec, ...] = ()
    outputs: tuple[m.TensorSpec, ...] = ()
    min_replicas: int = 0
    #: 0: a fixed count (no autoscaling).
    max_replicas: int = 0
    #: Warm-up jobs in flight: job id -> when submitted.
    warming: dict[str, float] = field(default_factory=dict)
    #: Why replicas are missing, as last seen ("" when none are).
    message: str = ""
    #: A warm-up failed by the model's own doing (it raised on the example inputs):
    #: no replica is placed again until the deployment is applied anew.
    stalled: bool = False
    numbers: itertools.count = field(default_factory=itertools.count)
    #: Recent scale events, "<unix time> <what and why>".
    events: deque[str] = field(default_factory=lambda: deque(maxlen=_EVENTS_KEPT))
    #: Calls its replicas ran, as reported: (when it ended, seconds it took).
    runs: deque[tuple[float, float]] = field(default_factory=deque)
    last_call: float = 0.0
    #: Since when the load has asked for fewer replicas than it has (None: it has not).
    lower_since: float | None = None
    #: When a call woke it from zero replicas (None: it is not waking).
    woken_at: float | None = None
    #: 1, then one more each time it is deployed anew (its replicas carry theirs).
    version: int = 1
    #: The highest version number given (a rollback serves an older number again).
    latest_version: int = 1
    #: The version before (a canary's stable side; what a rollback restores).
    previous: DeploymentVersion | None = None
    #: Percent of calls to ``version`` while a canary runs; 0: none runs.
    canary_percent: int = 0
    #: SHA-256 (hex) of the token that may call it by the inference protocol ("": none).
    caller_token_sha256: str = ""
    #: Warm-ups of a version other than ``version`` (a canary's stable side): job -> number.
    warming_versions: dict[str, int] = field(default_factory=dict)
    #: Cold starts (a call woke it from zero) and the last one's seconds.
    cold_starts: int = 0
    last_cold_start_s: float = 0.0
    #: Its autoscaling targets and delays (0: the defaults).
    autoscaling: m.Autoscaling = m.Autoscaling()
    #: When its count last changed or a replica last became ready (latency samples
    #: before then were served by another count).
    scaled_at: float = 0.0
    #: Its callers' reported calls by site (``_traffic``), and when a replica last
    #: moved after them.
    traffic: SiteTraffic = field(default_factory=SiteTraffic)
    moved_at: float = -MOVE_EVERY_S
    #: No replica is placed before this (its deadline was unreachable on every device).
    retry_at: float = 0.0
    #: Its callers' reported call times (``anypu.comm.CallLog``): (when, buckets) over
    #: the last ``WINDOW_S``, and all since the scheduler started.
    caller_window: deque[tuple[float, tuple[int, ...]]] = field(default_factory=deque)
    caller_buckets: tuple[int, ...] = ()
    caller_seconds: float = 0.0

    def called(self, now: float, times: m.CallTimes) -> None:
        self.caller_window.append((now, times.buckets))
        self.caller_buckets = merged(self.caller_buckets, times.buckets)
        self.caller_seconds += times.seconds
        self.last_call = max(self.last_call, now)

    def caller_times(self, now: float) -> tuple[int, ...]:
        """Its callers' reported call times over the last ``WINDOW_S``, merged."""
        while self.caller_window and self.caller_window[0][0] < now - WINDOW_S:
            self.caller_window.popleft()
        total: tuple[int, ...] = ()
        for _, buckets in self.caller_window:
            total = merged(total, buckets)
        return total

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas > 0

    @property
    def current(self) -> DeploymentVersion:
        return DeploymentVersion(self.version, self.request, self.inputs, self.outputs)

    @property
    def stable(self) -> DeploymentVersion | None:
        """The version the calls not sent to a running canary go to (None: no canary)."""
        return self.previous if self.canary_percent else None

    def wanted_by_version(self) -> dict[int, int]:
        """How many ready replicas each served version wants (the module docstring)."""
        stable = self.stable
        if stable is None or self.replicas == 0:
            return {self.version: self.replicas}
        canary = min(self.replicas, max(1, round(self.replicas * self.canary_percent / 100)))
        return {self.version: canary, stable.number: max(1, self.replicas - canary)}

    def version_of(self, number: int) -> DeploymentVersion:
        previous = self.previous
        return previous if previous is not None and previous.number == number else self.current

    def event(self, now: float, text: str) -> None:
        self.events.append(f"{now:.3f} {text}")

    def persisted(self) -> PersistDeployment:
        """What the store keeps of it (its replicas are placed afresh after a restart)."""
        return PersistDeployment(
            self.name,
            self.request,
            self.replicas,
            self.created_at,
            inputs=self.inputs,
            outputs=self.outputs,
            bounds=(self.min_replicas, self.max_replicas),
            version=self.version,
            latest_version=self.latest_version,
            previous=self.previous,
            canary_percent=self.canary_percent,
            caller_token_sha256=self.caller_token_sha256,
            autoscaling=self.autoscaling,
        )

    @classmethod
    def restored(cls, kept: PersistDeployment) -> DeploymentRecord:
        """A deployment as the store kept it (``persisted``), without replicas."""
        return cls(
            kept.name,
            kept.request,
            kept.replicas,
            kept.created_at,
            kept.inputs,
            kept.outputs,
            min_replicas=kept.bounds[0],
            max_replicas=kept.bounds[1],
            last_call=kept.created_at,
            version=kept.version,
            latest_version=max(kept.latest_version, kept.version),
            previous=kept.previous,
            canary_percent=kept.canary_percent,
            caller_token_sha256=kept.caller_token_sha256,
            autoscaling=kept.autoscaling,
        )


class DeploymentReplicas(DeploymentAutoscaling):
    """What ``SchedulerState`` keeps and does for deployments (the module docstring)."""

    config: SchedulerConfig
    nodes: dict[str, NodeRecord]
    jobs: dict[str, JobRecord]
    leases: LeaseBook
    deployments: dict[str, DeploymentRecord]

    if TYPE_CHECKING:  # SchedulerState's own, used here

        def _set_state(self, job: JobRecord, state: str) -> None: ...
        def _revoke_leases(self, held: list[HeldLease], reason: str) -> list[Action]: ...
        def _cancel(self, event: CancelRequested) -> list[Action]: ...
        def _caller_site(self, round_trips: dict[str, float], now: float) -> str: ...

        network: object | None

    def restore_deployments(self, records: list[DeploymentRecord]) -> None:
        for record in records:
            self.deployments[record.name] = record

    def deployment_info(self, name: str, now: float | None = None) -> m.DeploymentInfo | None:
        """Its listing; ``now`` (default: its last reported call) dates the call rate."""
        record = self.deployments.get(name)
        if record is None:
            return None
        last = record.runs[-1][0] if record.runs else 0.0
        recent = sorted(s for at, s in record.runs if at >= (now or last) - WINDOW_S)
        callers = record.caller_times(now or last)
        replicas: list[m.Replica] = []
        for held in self.leases.of_deployment(name):
            node = self.nodes.get(held.lease.node_id)
            replicas.append(
                m.Replica(
                    replica_id=held.replica_id or held.lease.lease_id,
                    state="ready",
                    node_id=held.lease.node_id,
                    device_id=held.lease.device_id,
                    tier=node.tier if node else "",
                    lease=held.lease,
                    version=held.version,
                    placed_for=held.template.origin,
                )
            )
        for job_id in record.warming:
            job = self.jobs.get(job_id)
            p = job.placement if job else None
            replicas.append(
                m.Replica(
                    replica_id=job_id,
                    state="warming",
                    node_id=p.node_id if p else "",
                    device_id=p.device_id if p else "",
                    tier=p.tier if p else "",
                    version=record.warming_versions.get(job_id, record.version),
                    placed_for=job.request.origin if job else "",
                )
            )
        return m.DeploymentInfo(
            name=name,
            artifact_digest=record.request.artifact_digest,
            replicas_wanted=record.replicas,
            replicas=tuple(replicas),
            created_at=record.created_at,
            message=record.message
            if sum(r.state == "ready" for r in replicas) < record.replicas
            else "",
            model_name=record.request.name,
            inputs=record.inputs,
            outputs=record.outputs,
            min_replicas=record.min_replicas,
            max_replicas=record.max_replicas,
            events=tuple(record.events),
            version=record.version,
            calls_per_s=len(recent) / WINDOW_S,
            run_p50_s=recent[len(recent) // 2] if recent else 0.0,
            run_p99_s=recent[min(len(recent) - 1, int(0.99 * len(recent)))] if recent else 0.0,
            canary_percent=record.canary_percent,
            stable_version=record.previous.number if record.previous else 0,
            caller_token=bool(record.caller_token_sha256),
            cold_starts=record.cold_starts,
            last_cold_start_s=record.last_cold_start_s,
            autoscaling=record.autoscaling,
            traffic=tuple(
                sorted(record.traffic.by_site(now or last).items(), key=lambda t: (-t[1], t[0]))
            ),
            caller_calls_per_s=sum(callers) / WINDOW_S,
            caller_p50_s=quantile(callers, 0.5),
            caller_p99_s=quantile(callers, 0.99),
            caller_buckets=record.caller_buckets,
            caller_seconds=record.caller_seconds,
        )

    # -------------------------------------------------------------- events

    def _deployments_called(self, event: DeploymentsCalled) -> list[Action]:
        """Callers' calls, by where they come from (``_traffic``): gateway agents from
        their node's site, SDK clients from their origin, named or inferred. Calls from a
        site the network does not name (or with no network) are not counted: there is no
        cost to place a replica nearer them by."""
        traffic = event.traffic
        for times in traffic.times:  # end to end at the caller: wherever it is
            record = self.deployments.get(times.deployment)
            if record is not None:
                record.called(event.now, times)
        node = self.nodes.get(event.node_id) if event.node_id else None
        site = node.site if node is not None else traffic.origin
        if not site and traffic.round_trips:
            site = self._caller_site(dict(traffic.round_trips), event.now)
        network = self.network
        if not site or not (network is not None and network.has_node(site)):  # type: ignore[attr-defined]
            return []  # from nowhere the network knows: no place to follow them to
        for name, calls in traffic.calls:
            record = self.deployments.get(name)
            if record is not None:
                record.traffic.add(event.now, site, calls)
        return []

    def _deployment_applied(self, event: DeploymentApplied) -> list[Action]:
        record = self.deployments.get(event.name)
        actions: list[Action] = []
        if record is None:
            assert event.request is not None  # the service checks a new one has a model
            low, high = event.bounds
            record = DeploymentRecord(
                event.name,
                event.request,
                event.replicas,
                event.now,
                event.inputs,
                event.outputs,
                min_replicas=low,
                max_replicas=high,
                last_call=event.now,
                caller_token_sha256=event.caller_token_sha256 or "",
                autoscaling=event.autoscaling or m.Autoscaling(),
                scaled_at=event.now,
            )
            self.deployments[event.name] = record
            bounds = f", autoscaling {low}–{high}" if high else ""
            record.event(event.now, f"deployed: {event.replicas} replica(s){bounds}")
        else:
            if event.caller_token_sha256 is not None:
                record.caller_token_sha256 = event.caller_token_sha256
            if event.autoscaling is not None:
                record.autoscaling = event.autoscaling
            if event.request is not None and event.request != record.request:
                # A new model (or new constraints): a rolling update, or a canary. The
                # old replicas serve until enough new ones are ready (``_reconcile``).
                actions += self._cancel_warming(record, event.now, "deployed anew")
                serving = len(self.leases.of_deployment(record.name))
                if record.stable is None:  # a canary replacing a canary keeps its stable side
                    record.previous = record.current
                record.request = event.request
                record.inputs, record.outputs = event.inputs, event.outputs
                record.min_replicas, record.max_replicas = event.bounds
                record.latest_version += 1
                record.version = record.latest_version
                record.canary_percent = event.canary_percent
                stable = record.stable
                if stable is not None:
                    record.event(
                        event.now,
                        f"canary: version {record.version} takes {record.canary_percent} % of"
                        f" calls, version {stable.number} the rest",
                    )
                else:
                    record.event(
                        event.now,
                        f"rolling update to version {record.version}: its replicas warm while"
                        f" {serving} of the last serve",
                    )
            if record.replicas == 0 and event.replicas > 0 and event.request is None:
                record.woken_at = event.now  # a call at zero: time the cold start
            if event.request is None:
                why = event.reason or "scaled by an operator"
                record.event(event.now, f"{record.replicas} → {event.replicas} replica(s): {why}")
            if record.replicas != event.replicas:
                record.scaled_at = event.now
            record.replicas = event.replicas
            record.last_call = max(record.last_call, event.now)
            record.lower_since = None
            record.stalled = False
            record.retry_at = 0.0
        actions.append(record.persisted())
        return actions + self._reconcile(record, event.now)

    def _deployment_rolled_out(self, event: DeploymentRolledOut) -> list[Action]:
        """Promote a canary, or roll back to the version before (the module docstring);
        the service has checked the deployment can (``rollout_refusal``)."""
        record = self.deployments[event.name]
        if event.action == "promote":
            record.event(
                event.now,
                f"canary promoted: version {record.version} takes every call once its"
                f" {record.replicas} replica(s) are ready",
            )
            record.canary_percent = 0
        else:
            back = record.previous
            assert back is not None
            record.event(
                event.now,
                f"rolled back from version {record.version} to version {back.number}"
                + (" (the canary's calls go to it at once)" if record.canary_percent else ""),
            )
            actions = self._cancel_warming(record, event.now, "rolled back")
            if record.canary_percent:  # the stable version never stopped: the canary goes now
                canary = self._replicas_of(record, record.version)
                actions += self._revoke_leases(canary, f"deployment {record.name} rolled back")
            record.previous = record.current
            record.request, record.inputs, record.outputs = back.request, back.inputs, back.outputs
            record.version = back.number
            record.canary_percent = 0
            record.stalled = False
            record.retry_at = 0.0
            return [*actions, record.persisted(), *self._reconcile(record, event.now)]
        return [record.persisted(), *self._reconcile(record, event.now)]

    def _deployment_deleted(self, event: DeploymentDeleted) -> list[Action]:
        record = self.deployments.pop(event.name, None)
        if record is None:
            return []
        held = self.leases.of_deployment(record.name)
        actions = self._revoke_leases(held, f"deployment {record.name} deleted")
        actions += self._cancel_warming(record, event.now, f"deployment {record.name} deleted")
        return [*actions, ForgetDeployment(record.name)]

    def _reconcile_deployments(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for record in list(self.deployments.values()):
            if record.autoscaled:
                actions += self._autoscale(record, now)
            actions += self._reconcile(record, now)
        return actions

    def _deployment_ran(self, name: str, finished_at: float, seconds: float) -> None:
        """A replica of ``name`` answered a call (an agent's ``LeasedRuns``)."""
        record = self.deployments.get(name)
        if record is not None:
            record.runs.append((finished_at, max(0.0, seconds)))
            record.last_call = max(record.last_call, finished_at)
            while record.runs[0][0] < finished_at - WINDOW_S:  # what the window holds only
                record.runs.popleft()

    # -------------------------------------------------------------- replicas

    def _reconcile(self, record: DeploymentRecord, now: float) -> list[Action]:
        for job_id in list(record.warming):
            job = self.jobs.get(job_id)
            if job is None or job.terminal:
                del record.warming[job_id]
                record.warming_versions.pop(job_id, None)
                if job is not None and job.outcome.code == m.FailureCode.DEADLINE_UNREACHABLE:
                    # Waiting cannot make a device faster, but nodes join and load
                    # changes: asked again after a while, not every tick.
                    record.retry_at = now + DEADLINE_RETRY_S
                    record.message = (
                        f"no device is predicted to answer its calls within deadline_ms"
                        f" {job.request.deadline_ms:g} (placing again in"
                        f" {DEADLINE_RETRY_S:g} s): {job.outcome.message}"
                    )
                elif job is not None and job.outcome.code == m.FailureCode.UNSCHEDULABLE:
                    # No device can hold it as asked (its labels, kinds, tiers): not
                    # until a node joins or changes, so not every tick either.
                    record.retry_at = now + DEADLINE_RETRY_S
                    record.message = (
                        f"no device can hold its replicas as asked (placing again in"
                        f" {DEADLINE_RETRY_S:g} s): {job.outcome.message}"
                    )
                elif job is not None and job.state != "succeeded":
                    record.message = f"replica {job_id} {job.state}: {job.outcome.message}"
                    if job.outcome.user_error:
                        record.stalled = True
                        record.message += (
                            "; the model failed on its example inputs: fix it or them and"
                            " deploy again"
                        )
                elif job is not None and not job.lease_id:
                    record.message = f"replica {job_id} ran but its node kept no lease"
            elif job.state == "pending" and job.pending_reasons:
                why = "; ".join(f"{n}: {r}" for n, r in sorted(job.pending_reasons.items()))
                record.message = f"replica {job_id} is waiting to be placed: {why[:600]}"
        wanted = record.wanted_by_version()
        serving = {number: self._replicas_of(record, number) for number in wanted}
        stale = [h for h in self.leases.of_deployment(record.name) if h.version not in wanted]
        ready = len(serving[record.version])
        if stale and (ready >= wanted[record.version] or record.replicas == 0):
            record.event(
                now,
                f"version {record.version} ready on {ready} replica(s): {len(stale)} of"
                f" version {', '.join(str(v) for v in sorted({h.version for h in stale}))}"
                " released",
            )
            return self._revoke_leases(stale, f"deployment {record.name} updated")
        actions: list[Action] = []
        for number, count in wanted.items():
            # The stable side gives up replicas to a canary only once the canary's are
            # ready (a surge, as a rolling update): capacity never dips meanwhile.
            if len(serving[number]) > count and (
                number == record.version or ready >= wanted[record.version]
            ):
                actions += self._release(record, number, serving[number], count, now)
        warming = Counter(
            record.warming_versions.get(job_id, record.version) for job_id in record.warming
        )
        missing = {
            number: count - len(serving[number]) - warming[number]
            for number, count in wanted.items()
        }
        if record.stalled or now < record.retry_at:
            return actions
        if all(n <= 0 for n in missing.values()):
            return actions + self._follow_traffic(record, serving[record.version], now)
        direct = self._direct_nodes()
        if not direct:
            record.message = (
                "no connected node takes direct calls: start agents with --direct-address"
                " HOST:PORT to hold replicas"
            )
            return actions
        room = WARMING_AT_ONCE - len(record.warming)
        for number, count in sorted(missing.items(), key=lambda item: item[0] != record.version):
            take = min(count, room)
            actions += self._warm(record, record.version_of(number), take, direct, now)
            room -= max(0, take)
        return actions

    def _share(self, record: DeploymentRecord, number: int, now: float) -> dict[str, float]:
        """Each site's quota of version ``number``'s replicas (``_traffic.quotas``)."""
        count = record.wanted_by_version().get(number, 0)
        calls = record.traffic.by_site(now)
        return quotas(count, calls, record.version_of(number).request.origin)

    def _placed_for(self, record: DeploymentRecord, number: int) -> Counter[str]:
        """Version ``number``'s replicas, ready and warming, by the site placed for."""
        placed = Counter(h.template.origin for h in self._replicas_of(record, number))
        for job_id in record.warming:
            job = self.jobs.get(job_id)
            if job is not None and record.warming_versions.get(job_id, record.version) == number:
                placed[job.request.origin] += 1
        return placed

    def _direct_nodes(self) -> list[str]:
        """The connected, ready nodes that take direct calls (where replicas can serve)."""
        return sorted(
            n.node_id
            for n in self.nodes.values()
            if n.connected and n.state == "ready" and (n.direct_address or n.direct_runs)
        )

    def _follow_traffic(
        self, record: DeploymentRecord, ready: list[HeldLease], now: float
    ) -> list[Action]:
        """Move one replica towards where the calls come from, when that pays
        (``_traffic.move``): a surge replica for the site short of its share; the
        reconcile releases one for the site over it once the new one is ready."""
        if (
            record.warming
            or record.stable is not None
            or not ready
            or now - record.moved_at < MOVE_EVERY_S
        ):
            return []
        calls = record.traffic.by_site(now)
        share = self._share(record, record.version, now)
        step = move(share, self._placed_for(record, record.version), calls)
        if step is None:
            return []
        to, source = step
        direct = self._direct_nodes()
        if not direct:
            return []
        record.moved_at = now
        total = sum(calls.values())
        record.event(
            now,
            f"moving a replica from {source or 'no site'} to {to or 'no site'}:"
            f" {100 * calls.get(to, 0) / total:.0f} % of {total} calls over the last"
            f" minute came from {to or 'no site'}",
        )
        return self._warm(record, record.current, 1, direct, now, site=to)

    def _warm(
        self,
        record: DeploymentRecord,
        version: DeploymentVersion,
        count: int,
        direct: list[str],
        now: float,
        site: str | None = None,
    ) -> list[Action]:
        """Place ``count`` replicas of ``version``: warm-up jobs on nodes taking direct
        calls, each for the site its traffic most lacks (``site``: for that one)."""
        template = version.request
        allowed = set(direct) & set(template.nodes) if template.nodes else set(direct)
        share = self._share(record, version.number, now)
        placed = self._placed_for(record, version.number)
        calls = record.traffic.by_site(now)
        actions: list[Action] = []
        for _ in range(count):
            origin = site if site is not None else next_site(share, placed, calls)
            placed[origin] += 1
            job_id = f"{record.name}.replica-{next(record.numbers)}"
            while job_id in self.jobs:
                job_id = f"{record.name}.replica-{next(record.numbers)}"
            request = replace(
                template,
                name=f"{template.name or record.name} (replica of {record.name})",
                nodes=tuple(sorted(allowed)),
                lease=True,
                wait=False,
                origin=origin,
                round_trips=(),
                splits=(),  # a replica holds the whole model
            )
            job = JobRecord(
                job_id=job_id, request=request, submitted_at=now, deployment=record.name
            )
            self.jobs[job_id] = job
            self._set_state(job, "pending")
            record.warming[job_id] = now
            if version.number != record.version:
                record.warming_versions[job_id] = version.number
            actions.append(PersistJob(job, "pending", f"replica of deployment {record.name}"))
        return actions

    def _release(
        self,
        record: DeploymentRecord,
        number: int,
        replicas: list[HeldLease],
        keep: int,
        now: float,
    ) -> list[Action]:
        """Revoke all but ``keep`` of ``replicas`` (of version ``number``): those placed
        for the sites furthest over their share of the traffic first, then those idle
        longest (the busy keep serving)."""
        by_id = {h.lease.lease_id: h for h in replicas}
        order = release_order(
            self._share(record, number, now),
            [(h.lease.lease_id, h.template.origin, h.last_used) for h in replicas],
        )
        released = [by_id[i] for i in order[: len(replicas) - keep]]
        return self._revoke_leases(released, f"deployment {record.name} scaled down")

    def _replicas_of(self, record: DeploymentRecord, number: int) -> list[HeldLease]:
        """Its ready replicas of version ``number``."""
        return [h for h in self.leases.of_deployment(record.name) if h.version == number]

    def _cancel_warming(self, record: DeploymentRecord, now: float, why: str) -> list[Action]:
        """Cancel the warm-ups in flight (``why``: kept as the deployment's message)."""
        record.message = why
        actions: list[Action] = []
        for job_id in list(record.warming):
            job = self.jobs.get(job_id)
            if job is not None and not job.terminal:
                actions += self._cancel(CancelRequested(job_id, now))
        record.warming.clear()
        record.warming_versions.clear()
        return actions

    def _grant_replica(self, node: NodeRecord, job: JobRecord, now: float) -> list[Action]:
        """A warm-up succeeded: lease its slice to the deployment, if it still wants it."""
        record = self.deployments.get(job.deployment)
        p = job.placement
        if record is None or p is None or job.job_id not in record.warming:
            return []
        del record.warming[job.job_id]
        version = record.version_of(record.warming_versions.pop(job.job_id, record.version))
        if not (node.direct_address or node.direct_runs):
            record.message = f"{node.node_id} takes no direct calls: a replica there cannot serve"
            return []
        lease = self.leases.grant(
            replace(version.request, origin=job.request.origin),  # the site placed for
            p,
            node.direct_address,
            now,
            record.name,
            replica_id=job.job_id,
            version=version.number,
        )
        job.lease_id = lease.lease_id
        record.message = ""
        record.last_call = max(record.last_call, now)  # idle from when it can serve
        record.scaled_at = now  # latency from here is served by the new count
        if record.woken_at is not None:
            record.cold_starts += 1
            record.last_cold_start_s = now - record.woken_at
            record.event(
                now,
                f"cold start: a replica ready {now - record.woken_at:.2f} s after a call woke it",
            )
            record.woken_at = None
        # Enough of a new version ready: the old are released now, not a tick later.
        return [
            Send(node.node_id, node.epoch, m.LeaseGranted(lease)),
            *self._reconcile(record, now),
        ]
