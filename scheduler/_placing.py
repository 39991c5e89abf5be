"""Placement rounds of the scheduler's state machine: pending jobs in, placements, holds
and failures out (no I/O).

``PlacementRounds`` is the part of ``SchedulerState`` that builds the round's snapshot
(the network as measured, the work on each device, the earmarks), turns each waiting job
into placement's ``JobRequest`` (its measured and learnt run times, its deadline left),
calls ``placement.plan`` and turns the plan into actions: a launch per placement, a
reason per job held or unschedulable, a failure per job no device can hold or finish in
time. It shares the state's records; ``SchedulerState`` mixes it in.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from anypu.devices import Device, format_bytes
from anypu.placement import (
    SCHEDULER_VERTEX,
    ClusterSnapshot,
    DeadlineMiss,
    JobRequest,
    Plan,
    RunnerUp,
    SplitCandidate,
    WorkloadShape,
    choose_split,
    plan,
    workload_shape,
)
from anypu.protos import messages as m
from anypu.scheduler._compute_model import work_of
from anypu.scheduler._events import Action, Notify, PersistJob, Send
from anypu.scheduler._learned import Learned
from anypu.scheduler._measured_network import MeasuredNetwork
from anypu.scheduler._quarantine import NodeQuarantine
from anypu.scheduler._records import JobRecord, NodeRecord
from anypu.scheduler._snapshot import reservations_of, snapshot_of

if TYPE_CHECKING:
    from anypu.scheduler._leases import HeldLease
    from anypu.scheduler._state import SchedulerConfig

__all__ = ["PlacementRounds"]


class PlacementRounds:
    """What ``SchedulerState`` places with (see the module docstring)."""

    config: SchedulerConfig
    nodes: dict[str, NodeRecord]
    jobs: dict[str, JobRecord]
    pending: dict[str, None]
    active: dict[str, None]
    learned: Learned
    last_plan: Plan | None
    earmarks: dict[str, tuple[str, str]]
    quarantine: NodeQuarantine
    decisions: dict[str, int]
    deadlines: Counter[tuple[str, str]]
    leases: Any
    workload: deque[WorkloadShape]
    measured: MeasuredNetwork
    network: object | None

    if TYPE_CHECKING:  # SchedulerState's own, used here

        def _set_state(self, job: JobRecord, state: str) -> None: ...
        def _launch(self, job: JobRecord) -> m.Launch: ...
        def _revoke_leases(self, held: list[HeldLease], reason: str) -> list[Action]: ...

    def reservations(self) -> dict[str, tuple[m.Reservation, ...]]:
        """By node: what each live job holds of a shared device, in placement order."""
        return reservations_of(self.jobs[j] for j in self.active)

    def snapshot(self, now: float) -> ClusterSnapshot:
        """The cluster as placement sees it now (``_snapshot.snapshot_of``), with the
        devices set aside for jobs that waited long (``placement._earmarks``)."""
        snapshot = snapshot_of(
            self.nodes.values(),
            [self.jobs[j] for j in self.active],
            self.quarantine,
            self.measured.graph(self.nodes.values(), now),
            tuple(self.workload),
            now,
            held=[(h.placement, h.deployment) for h in self.leases.active.values() if h.deployment],
        )
        earmarks = {job: key for job, key in self.earmarks.items() if job in self.pending}
        return replace(snapshot, earmarks=earmarks)

    def _job_request(self, job: JobRecord, now: float) -> JobRequest:
        r = job.request
        digest = r.artifact_digest
        measured = self.learned.timings_of(digest)
        learned = {
            model: seconds
            for model, seconds in self.learned.predicted(work_of(r)).items()
            if model not in measured
        }
        return JobRequest(
            job_id=job.job_id,
            artifact_digest=digest,
            flops=r.flops,
            # Corrected by what a run of the model was measured using, where that is more.
            memory_bytes=max(r.memory_bytes, self.learned.peak_of(digest)),
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
            label_selector=r.label_selector,
            measured_seconds=measured,
            learned_seconds=learned,
            compute_milli=r.compute_milli,
            precision=r.precision or "fp32",
            operators=frozenset(r.operators),
            unsupported_on=self.learned.lacking_for(digest),
            held_s=0.0 if job.held_since is None else max(0.0, now - job.held_since),
            deadline_s=_deadline_left(job, now),
            best_effort=r.best_effort,
            deadline_warm=bool(job.deployment),
            deployment=job.deployment,
            # Inputs come up to the scheduler and the agent fetches them; outputs go
            # back the same way (a leased call's later runs go direct, unplaced).
            relay=SCHEDULER_VERTEX,
        )

    def _schedule(self, now: float) -> list[Action]:
        ready = [self.jobs[j] for j in self.pending if self.jobs[j].not_before <= now]
        if not ready:
            return []
        # Waiting jobs may need a leased slice: place them with every slice free, and let
        # the lease holders' next calls be placed afresh alongside.
        actions: list[Action] = self._revoke_leases(self.leases.callers(), "other jobs are waiting")
        snapshot = self.snapshot(now)
        if any(j.request.splits for j in ready):
            ready = self._split_stages(ready, snapshot, now, actions)
            if not ready:
                return actions
        requests = {j.job_id: self._job_request(j, now) for j in ready}
        result = plan(snapshot, list(requests.values()), config=self.config.placement)
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
                compute_from=_compute_from(requests[p.job_id], device),
                **_runner_up_fields(p.runner_up),
            )
            job.attempt += 1
            job.pending_reasons, job.unschedulable_since, job.held_since = {}, None, None
            self._set_state(job, "placed")
            self.decisions["placed"] += 1
            self.workload.append(workload_shape(device, p.milli))
            actions.append(PersistJob(job, "placed", f"{p.node_id}/{p.device_id}"))
            actions.append(Send(node.node_id, node.epoch, self._launch(job)))
        for job_id, reasons in result.unschedulable.items():
            stuck = job_id in result.unresolvable
            actions += self._unschedulable(self.jobs[job_id], reasons, stuck, now)
        for job_id, miss in result.deadline_unreachable.items():
            actions += self._deadline_unreachable(self.jobs[job_id], miss, now)
        self.decisions["deferred"] += len(result.deferred)
        waiting = {j.job_id for j in ready}
        self.earmarks = {
            job_id: key
            for job_id, key in self.earmarks.items()
            if job_id not in waiting and job_id in self.pending
        } | dict(result.earmarks)
        replicas: Counter[str] = Counter()
        if result.deferred:  # what holds the slices they wait for
            replicas.update(h.deployment for h in self.leases.active.values() if h.deployment)
        for job_id in result.deferred:
            job = self.jobs[job_id]
            if job.held_since is None:
                job.held_since = now
            memory = format_bytes(self._job_request(job, now).memory_bytes)
            reason = (
                "no room now on the devices it may use (every slice taken, or no shared"
                f" device with {memory} and its compute share unreserved); it is placed when"
                " a job ends"
            )
            if replicas:
                reason += (
                    f"; {sum(replicas.values())} slice(s) are held by deployments' replicas"
                    f" ({', '.join(f'{n} ×{k}' for n, k in sorted(replicas.items()))}),"
                    " which no other job may use: lower their replicas (anypu scale) or add"
                    " a node"
                )
            if job_id in result.earmarks:
                node_id, device_id = result.earmarks[job_id]
                reason += (
                    f"; {node_id}/{device_id} is set aside for it (it waited"
                    f" {now - job.held_since:.0f} s): new jobs go there only beside its share"
                )
            reasons = {"all nodes": reason}
            if reasons != job.pending_reasons:
                job.pending_reasons = reasons
                actions.append(PersistJob(job, "", "waiting for room"))
        return actions

    # -------------------------------------------------------------- splits

    def _split_stages(
        self, ready: list[JobRecord], snapshot: ClusterSnapshot, now: float, actions: list[Action]
    ) -> list[JobRecord]:
        """``ready`` with each job offering cuts decided (``placement._split``): placed
        whole, or its head job made and placed first while it waits, then its tail once
        the head's activation is in (a failed head: the job runs whole)."""
        out: list[JobRecord] = []
        for job in ready:
            if not job.request.splits or job.split_stage in ("whole", "tail"):
                out.append(job)
            elif job.split_stage == "head":
                head = self.jobs.get(job.head_job_id)
                if head is None or (head.terminal and head.state != "succeeded"):
                    self.decisions["split_fell_back"] += 1
                    job.split_stage, job.split = "whole", ""
                    job.pending_reasons = {}
                    actions.append(PersistJob(job, "", "its head failed: running it whole"))
                    out.append(job)
                elif head.state == "succeeded":
                    self._to_tail(job, head)
                    actions.append(PersistJob(job, "pending", "the tail, on the activation"))
                    out.append(job)
            else:
                head = self._split_or_whole(job, snapshot, now, actions)
                out.append(job if head is None else head)
        return out

    def _split_or_whole(
        self, job: JobRecord, snapshot: ClusterSnapshot, now: float, actions: list[Action]
    ) -> JobRecord | None:
        """The head job when ``job`` is best split, else None (it runs whole)."""
        r = job.request
        candidates = [
            SplitCandidate(
                option.label,
                self._job_request(_stage(job, option.head, option.activation_bytes, 0), now),
                self._job_request(_stage(job, option.tail, 0, option.activation_bytes), now),
            )
            for option in r.splits
        ]
        whole = self._job_request(job, now)
        # The round's snapshot: heads made earlier in it are placed by the same plan.
        choice = choose_split(snapshot, whole, candidates, self.config.placement)
        if choice is None:
            job.split_stage = "whole"
            return None
        option = r.splits[choice.index]
        head = JobRecord(
            job_id=f"{job.job_id}.head",
            request=replace(
                _stage(job, option.head, option.activation_bytes, 0).request,
                nodes=(choice.head_node,),
                name=f"{r.name} (head)",
                deadline_ms=0.0,
                best_effort=False,
                lease=False,
            ),
            submitted_at=now,
            feeds=job.job_id,
        )
        self.jobs[head.job_id] = head
        self._set_state(head, "pending")
        self.decisions["split"] += 1
        job.split_stage, job.split_index, job.head_job_id = "head", choice.index, head.job_id
        job.split = choice.describe()
        job.pending_reasons = {"all nodes": f"waiting for its head ({head.job_id}): {job.split}"}
        actions.append(PersistJob(head, "pending", stimulus_id=f"split-{job.job_id}"))
        actions.append(PersistJob(job, "", f"split: {job.split}"))
        return head

    def _to_tail(self, job: JobRecord, head: JobRecord) -> None:
        """``job`` becomes its tail: the chosen cut's tail on the head's outputs, placed
        from where they were made, by the deadline left (late rather than failed: half
        of the work is done)."""
        r = job.request
        option = r.splits[job.split_index]
        node = self.nodes.get(head.placement.node_id) if head.placement else None
        job.request = replace(
            _stage(job, option.tail, 0, option.activation_bytes).request,
            inputs=head.outputs,
            inputs_digest=head.outputs_digest,
            origin=node.site if node is not None and node.site else r.origin,
            best_effort=bool(r.deadline_ms),
            lease=False,
            splits=r.splits,
        )
        job.split_stage = "tail"
        job.pending_reasons = {}

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

    def _deadline_unreachable(self, job: JobRecord, miss: DeadlineMiss, now: float) -> list[Action]:
        """No device is predicted to finish ``job`` in time: it fails now, saying the best."""
        self.decisions["deadline_unreachable"] = self.decisions.get("deadline_unreachable", 0) + 1
        self.deadlines[(miss.tier, "unreachable")] += 1
        waited = max(0.0, now - job.submitted_at)
        deadline = f"{job.request.deadline_ms:g} ms"
        if waited >= 0.001 and not job.deployment:  # a replica's is each call's
            deadline += f", {max(miss.deadline_s, 0.0) * 1000:.0f} ms left after waiting"
            deadline += f" {waited * 1000:.0f} ms"
        message = (
            f"DeadlineUnreachable: no device is predicted to finish it within its deadline"
            f" ({deadline}): {miss.describe()}. Give a later deadline_ms, or pass"
            " best_effort=True to run it where it finishes first anyway."
        )
        job.pending_reasons = {miss.node_id: miss.describe()}
        job.finished_at = now
        self._set_state(job, "failed")
        job.outcome = m.Outcome.failed(m.FailureCode.DEADLINE_UNREACHABLE, message)
        return [PersistJob(job, "failed", "deadline unreachable"), Notify(job.job_id)]


#: What a stage of a split job brings of its own: its model and the work of one call
#: (the job's constraints, priority and limits stay the job's).
_STAGE_FIELDS = (
    "artifact_digest",
    "flops",
    "memory_bytes",
    "param_bytes",
    "precision",
    "operators",
    "operator_calls",
    "matmul_flops",
    "conv_flops",
    "attention_flops",
    "bytes_moved",
)


def _stage(job: JobRecord, stage: m.SubmitRequest, outputs: int, inputs: int) -> JobRecord:
    """A stage of ``job`` as a job of its own: the stage's ``_STAGE_FIELDS``, the job's
    constraints; ``inputs``/``outputs`` the activation's bytes where it crosses (0: the
    job's own)."""
    r = job.request
    request = replace(
        r,
        **{name: getattr(stage, name) for name in _STAGE_FIELDS},
        input_bytes=inputs or r.input_bytes,
        output_bytes=outputs or r.output_bytes,
        splits=(),
    )
    return replace(job, request=request)


def _compute_from(request: JobRequest, device: Device) -> str:
    """Which of placement's sources costed the job's compute on ``device``."""
    if device.model in request.measured_seconds:
        return "measured"
    return "learned" if device.model in request.learned_seconds else "estimate"


def _runner_up_fields(runner_up: RunnerUp | None) -> dict[str, Any]:
    if runner_up is None:
        return {}
    return {
        "runner_up_node": runner_up.node_id,
        "runner_up_device": runner_up.device_id,
        "runner_up_seconds": runner_up.predicted_seconds,
        "runner_up_terms": dict(runner_up.terms),
    }


def _deadline_left(job: JobRecord, now: float) -> float | None:
    """Seconds left of the job's deadline (None: none). A deployment's replica's is
    each call's, from the call's arrival: waiting to be placed does not spend it."""
    deadline_ms = job.request.deadline_ms
    if not deadline_ms:
        return None
    if job.deployment:
        return deadline_ms / 1000
    return deadline_ms / 1000 - max(0.0, now - job.submitted_at)
