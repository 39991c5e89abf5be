"""The scheduler as a thread-safe service: the state machine plus its I/O.

``SchedulerService`` feeds events to ``SchedulerState`` under one lock and carries out
the actions: persist to SQLite, send down agents' streams, wake waiting clients. The
gRPC servicers (``_grpc``) and the embedded mode call the same methods.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from anypu.devices import format_bytes
from anypu.errors import AuthenticationError, ConfigError
from anypu.placement import TIERS, WORKLOAD_WINDOW
from anypu.protos import messages as m
from anypu.scheduler._deployments import DeploymentRecord, canary_refusal, rollout_refusal
from anypu.scheduler._events import (
    DeploymentApplied,
    DeploymentDeleted,
    DeploymentRolledOut,
    DeploymentsCalled,
    ForgetDeployment,
    PersistDeployment,
)
from anypu.scheduler._metrics import cluster_usage, read_view
from anypu.scheduler._records import JobRecord, NodeRecord
from anypu.scheduler._retention import Collector, Retention, Sweep, duration
from anypu.scheduler._state import (
    AgentConnected,
    AgentDisconnected,
    AgentSaid,
    CancelRequested,
    Drop,
    ForgetNode,
    JobsSubmitted,
    JobSubmitted,
    NodeRemoved,
    Notify,
    PersistJob,
    PersistLearned,
    PersistNode,
    SchedulerConfig,
    SchedulerState,
    Send,
    Tick,
    new_job_id,
)
from anypu.scheduler._store import BlobStore, StateStore
from anypu.scheduler._tokens import Enrolment
from anypu.scheduler._validation import (
    MAX_EXAMPLE_BYTES,
    validate_deployment,
    validate_join,
    validate_submit,
)

__all__ = ["AgentSession", "NotFoundError", "OutputsGoneError", "SchedulerService"]

SendFn = Callable[[m.SchedulerMessage], None]
DropFn = Callable[[], None]
#: An agent's entry for calls under a lease: (lease id, encoded inputs) -> its result.
DirectFn = Callable[[str, "bytes | tuple"], "m.JobResult | None"]
_T = TypeVar("_T")
log = logging.getLogger("anypu.scheduler")
#: Agents' messages handed to the state under one lock at most (``_inbox_loop``): enough
#: for a second of 10,000 agents' heartbeats in a few batches, few enough that a client's
#: call waits behind one batch for milliseconds, not a second.
INBOX_BATCH = 2048


#: What the writer thread commits (the rest of its queue are barriers and its stop).
_STORE_WRITES = frozenset(
    {"job", "node", "forget_node", "learned", "deployment", "forget_deployment"}
)


class NotFoundError(KeyError):
    """No job with that id."""


class OutputsGoneError(NotFoundError):
    """The job succeeded, and its outputs were kept their retention time and discarded."""


#: Transitions an operator wants to see at INFO: placements (with why there), requeues,
#: failures, cancellations. Submitted, running and succeeded are at DEBUG, and so is every
#: call under a lease (placed by the lease, its caller told at once: many a second).
_NOTEWORTHY = frozenset({"placed", "failed", "cancelled"})


def _log_transition(action: PersistJob) -> None:
    job = action.job
    requeued = action.transition == "pending" and bool(action.detail)
    noteworthy = requeued or action.transition in _NOTEWORTHY
    level = logging.INFO if noteworthy and not action.leased else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    what = action.transition or "updated"
    detail = f" ({action.detail})" if action.detail else ""
    if requeued:
        what = f"requeued (attempt {job.attempt})"
    elif action.transition == "failed" and job.outcome.code:
        what = f"failed: {job.outcome.code.value}: {job.outcome.message[:200]}"
    elif action.transition == "placed" and job.placement is not None:
        what, detail = "placed on", " " + _placement_reason(job.placement)
    log.log(level, "job %s %s%s [%s]", job.job_id, what, detail, action.stimulus_id)


def _placement_reason(p: m.PlacementInfo) -> str:
    """``edge-1/gpu0.1 (edge, A100, simulated) by cp-sat: 0.120 s predicted = compute 0.100
    + transfer 0.020``: where, and the cost terms that made it the choice."""
    terms = " + ".join(
        f"{name} {seconds:.3f}" for name, seconds in p.terms.items() if abs(seconds) >= 5e-4
    )
    what = ", ".join(x for x in (p.tier, p.device_description) if x)
    where = f"{p.node_id}/{p.device_id}.{p.slice_index}" + (f" ({what})" if what else "")
    return f"{where} by {p.solver or 'policy'}: {p.predicted_seconds:.3f} s predicted" + (
        f" = {terms}" if terms else ""
    )


class SchedulerService:
    """One scheduler: registry, job queue, state store, dispatch."""

    def __init__(
        self,
        state_dir: str | Path,
        token: str | None = None,
        config: SchedulerConfig | None = None,
        network: object | None = None,
        clock: Callable[[], float] = time.time,
        retention: Retention | None = None,
    ) -> None:
        self.token = token
        self.clock = clock
        #: Bytes of agents' bandwidth probes received (``AgentService.Probe``).
        self.probe_bytes = 0
        self.store = StateStore(state_dir)
        self.blobs = BlobStore(Path(state_dir) / "blobs")
        self.collector = Collector(self.store, self.blobs, retention or Retention())
        self.state = SchedulerState(config, network)
        recent = self.store.recent_jobs(WORKLOAD_WINDOW)[::-1]  # oldest first
        self.state.restore(
            self.store.load_unfinished_jobs(), self.store.load_nodes(), clock(), placed=recent
        )
        self.state.learned.restore(self.store.load_learned(self.state.learned.models))
        self.state.restore_deployments(self.store.load_deployments())
        self.started_at = clock()
        self._lock = threading.RLock()
        self._arrivals: list[JobSubmitted] = []  # submitted, not yet handed to the state
        self._arrivals_lock = threading.Lock()
        # Observability hook (issue 4): called under the lock with every batch of actions,
        # after the state changed; metrics observe transitions here. Must be cheap.
        self.observers: list[Callable[[list, float], None]] = []
        self._links: dict[str, tuple[int, SendFn, DropFn]] = {}
        self._node_states: dict[str, str] = {}  # as last persisted, to log changes once
        self._direct: dict[str, DirectFn] = {}
        self._waiters: dict[str, list[threading.Event]] = defaultdict(list)
        self._writes: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="anypu-writer", daemon=True)
        self._writer.start()
        #: Agents' messages after their Join, and their leaving (``post``).
        self._inbox: queue.SimpleQueue[AgentSaid | _Leave | Tick | None] = queue.SimpleQueue()
        self._tick_waiting = threading.Event()
        self._inboxer = threading.Thread(target=self._inbox_loop, name="anypu-inbox", daemon=True)
        self._inboxer.start()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="anypu-tick", daemon=True)
        self._ticker.start()
        self._sweeper = threading.Thread(
            target=self.collector.run,
            args=(self._stop, clock, self._swept),
            name="anypu-collector",
            daemon=True,
        )
        self._sweeper.start()

    @property
    def config(self) -> SchedulerConfig:
        return self.state.config

    def close(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        self._inboxer.join(timeout=2)
        self._ticker.join(timeout=2)
        self._sweeper.join(timeout=10)
        self._writes.put(("stop", None, None))
        self._writer.join(timeout=10)
        with self._lock:
            for waiters in self._waiters.values():
                for event in waiters:
                    event.set()
            self.store.close()

    # -------------------------------------------------------------- plumbing

    def _handle(self, event: object) -> None:
        with self._lock:
            self._apply(self.state.handle(event))  # type: ignore[arg-type]

    def post(self, event: AgentSaid | _Leave | Tick) -> None:
        """Hand an agent's message (or its leaving) to the inbox: it is handled in
        order with the others, in batches under one lock (``_inbox_loop``)."""
        self._inbox.put(event)

    def _inbox_loop(self) -> None:
        while True:
            batch = [self._inbox.get()]
            while len(batch) < INBOX_BATCH:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            events = [e for e in batch if e is not None]
            if events:
                self._handle_batch(events)
            if len(events) < len(batch):
                return

    def _handle_batch(self, events: list[AgentSaid | _Leave | Tick]) -> None:
        """Hand ``events`` to the state in order and carry out what they cause, once.
        One that fails is logged and skipped: the rest of the batch, and the inbox, go
        on (as a failed stream once ended only its own agent's)."""
        with self._lock:
            actions: list = []
            for event in events:
                try:
                    if isinstance(event, _Leave):
                        self._apply(actions)
                        actions = []
                        self._leave(event.node_id, event.epoch)
                    else:
                        if isinstance(event, Tick):
                            self._tick_waiting.clear()
                        actions += self.state.handle(event)
                except Exception:
                    log.exception("could not handle %s", type(event).__name__)
            self._apply(actions)

    def _apply(self, actions: list) -> None:
        """Carry out actions; caller holds the lock.

        Writes go to the writer thread, which commits them in groups off the hot path;
        ``flush`` waits for them (a non-waiting submit is acknowledged only once durable).
        """
        now = self.clock()
        for observer in self.observers:  # observability hook (issue 4)
            try:
                observer(actions, now)
            except Exception:
                log.exception("observer %r failed", observer)
        for action in actions:
            if isinstance(action, Send):
                link = self._links.get(action.node_id)
                if link is not None and link[0] == action.epoch:
                    link[1](action.message)
            elif isinstance(action, Drop):
                link = self._links.get(action.node_id)
                if link is not None and link[0] == action.epoch:
                    log.warning(
                        "dropping %s's stream: %s [%s]",
                        action.node_id,
                        action.reason,
                        action.stimulus_id,
                    )
                    link[2]()
            elif isinstance(action, PersistJob):
                _log_transition(action)
                self._writes.put(
                    self.store.job_write(action.job, action.transition, action.detail, now)
                )
            elif isinstance(action, PersistNode):
                said = self._node_states.get(action.node.node_id)
                self._node_states[action.node.node_id] = action.node.state
                if action.node.state == "left" and said != "left":
                    log.info(
                        "node %s left: its agent stopped; its jobs are placed again [%s]",
                        action.node.node_id,
                        action.stimulus_id,
                    )
                if action.node.state == "lost" and said != "lost":
                    log.warning(
                        "node %s lost: no heartbeat for %.1f s; its jobs are placed again [%s]",
                        action.node.node_id,
                        self.config.lost_after_s,
                        action.stimulus_id,
                    )
                self._writes.put(self.store.node_write(action.node))
            elif isinstance(action, PersistLearned):
                self._writes.put(self.store.learned_write(action.lesson, now))
            elif isinstance(action, PersistDeployment):
                record = DeploymentRecord.restored(action)
                self._writes.put(self.store.deployment_write(record))
                log.info(
                    "deployment %s: %d replica(s) wanted [%s]",
                    action.name,
                    action.replicas,
                    action.stimulus_id,
                )
            elif isinstance(action, ForgetDeployment):
                self._writes.put(self.store.deployment_forget(action.name))
                log.info("deployment %s deleted [%s]", action.name, action.stimulus_id)
            elif isinstance(action, ForgetNode):
                self._node_states.pop(action.node_id, None)
                self._writes.put(self.store.node_forget(action.node_id))
                log.info("node %s removed [%s]", action.node_id, action.stimulus_id)
            elif isinstance(action, Notify):
                # Waking the client does not wait for the commit: the outcome's row is
                # already queued and lands within one group commit (milliseconds).
                for event in self._waiters.pop(action.job_id, ()):
                    event.set()

    def _write_loop(self) -> None:
        while True:
            batch = [self._writes.get()]
            while len(batch) < 1024:
                try:
                    batch.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            writes = [w for w in batch if w[0] in _STORE_WRITES]
            if writes:
                try:
                    self.store.commit(writes)
                except Exception:
                    log.exception("could not persist %d writes", len(writes))
            for kind, item, _ in batch:
                if kind == "barrier":
                    item.set()
            if any(kind == "stop" for kind, _, _ in batch):
                return

    def flush(self, timeout: float = 10.0) -> None:
        """Return once everything applied so far is committed to SQLite."""
        done = threading.Event()
        self._writes.put(("barrier", done, None))
        done.wait(timeout)

    def _tick_loop(self) -> None:
        """Time passing, through the inbox: a tick is handled after every message that
        arrived before it, so a backlog there never makes a heartbeat look late (a node
        falsely lost). One tick waits there at a time."""
        period = min(0.1, self.config.heartbeat_interval_s / 2)
        while not self._stop.wait(period):
            if not self._tick_waiting.is_set():
                self._tick_waiting.set()
                self.post(Tick(self.clock()))

    def sweep(self) -> Sweep:
        """Collect what the retention rules allow now (the collector's thread does this
        every ``sweep_every_s``)."""
        self.flush()  # what was applied is in the database the sweep reads
        report = self.collector.sweep(self.clock())
        self._swept(report)
        return report

    def _swept(self, report: Sweep) -> None:
        """Forget in memory what the sweep discarded; fetched outputs are read from the
        store if fetched again, so memory does not hold 2,000 jobs' outputs."""
        with self._lock:
            for job_id in report.outputs:
                job = self.state.jobs.get(job_id)
                if job is not None:
                    job.outputs, job.outputs_expired = b"", True
            for job_id in report.fetched:
                job = self.state.jobs.get(job_id)
                if job is not None and job.terminal:
                    job.outputs = b""

    def authenticate(self, token: str) -> None:
        """Raise ``AuthenticationError`` unless ``token`` is this scheduler's token."""
        if self.token is None:
            return
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise AuthenticationError(
                "the scheduler refused the token: pass the token the scheduler printed at"
                " start (--token or ANYPU_TOKEN)"
            )

    # -------------------------------------------------------------- agents

    def attach_agent(
        self, send: SendFn, drop: DropFn, direct: DirectFn | None = None
    ) -> AgentSession:
        """A new agent stream: ``send`` queues a message down it, ``drop`` ends it.

        ``direct``: how to hand the agent a call under a lease (in-process agents only).
        """
        session = AgentSession(self, send, drop)
        session.direct = direct
        return session

    def _join(
        self,
        join: m.Join,
        send: SendFn,
        drop: DropFn,
        credential: Enrolment | None = None,
        direct: DirectFn | None = None,
    ) -> tuple[str, int]:
        """``credential``: the enrolment behind the stream's verified certificate (mTLS);
        without one the Join's token must be the scheduler's (plaintext, in-process)."""
        if credential is None:
            self.authenticate(join.token)
        validate_join(join)
        if join.direct_runs and direct is None:
            raise ConfigError("this agent offers direct runs, which only in-process agents can")
        if credential is not None:
            memory = sum(d.memory_bytes for d in join.devices)
            credential.admit(join.name, join.tier, len(join.devices), memory)
        with self._lock:
            actions = self.state.handle(AgentConnected(join, self.clock()))
            node = self.state.nodes[join.name]
            self._links[node.node_id] = (node.epoch, send, drop)
            if direct is not None:
                self._direct[node.node_id] = direct
            self._apply(actions)
        devices = ", ".join(d.describe() for d in join.devices) or "no devices"
        log.info(
            "node %s joined (tier %s, epoch %d, agent %s, %d job(s) still running): %s [join-%s]",
            node.node_id,
            node.tier,
            node.epoch,
            join.agent_version or "?",
            len(join.running),
            devices,
            node.node_id,
        )
        return node.node_id, node.epoch

    def _leave(self, node_id: str, epoch: int) -> None:
        with self._lock:
            link = self._links.get(node_id)
            if link is not None and link[0] == epoch:
                del self._links[node_id]
                self._direct.pop(node_id, None)
            current = link is not None and link[0] == epoch
            self._apply(self.state.handle(AgentDisconnected(node_id, epoch, self.clock())))
        if current:
            after = self.config.lost_after_s
            log.info(
                "node %s disconnected (epoch %d); its jobs wait %.1f s for it to re-join"
                " [leave-%s-%d]",
                node_id,
                epoch,
                after,
                node_id,
                epoch,
            )

    # -------------------------------------------------------------- jobs

    def submit(self, request: m.SubmitRequest) -> m.JobInfo:
        """Queue the job and place it with every other one that arrived meanwhile.

        Whoever takes the lock next places all arrivals in one round (as group commit
        writes many rows at once): alone, a job is placed at once; in a burst, the jobs
        that came while a round ran are planned together, which is when CP-SAT runs.
        """
        validate_submit(request, self.blobs)
        job_id = new_job_id()
        with self._arrivals_lock:
            self._arrivals.append(JobSubmitted(job_id, request, self.clock()))
        with self._lock:
            with self._arrivals_lock:
                batch, self._arrivals = self._arrivals, []
            if len(batch) == 1:
                self._apply(self.state.handle(batch[0]))
            elif batch:
                self._apply(self.state.handle(JobsSubmitted(tuple(batch), self.clock())))
        if not request.wait:
            self.flush()  # acknowledged means durable
        return self.job_info(job_id)

    def submit_and_wait(self, request: m.SubmitRequest) -> tuple[m.JobInfo, bytes, bool]:
        info = self.submit(request)
        return self.wait(info.job_id, request.wait_timeout_s or None)

    def wait(self, job_id: str, timeout: float | None) -> tuple[m.JobInfo, bytes, bool]:
        """Block until the job is terminal: ``(info, outputs, timed_out)``.

        Handing a succeeded job's outputs over counts as their fetch (see ``_retention``);
        ``OutputsGoneError`` once they were discarded.
        """
        with self._lock:
            job = self._job(job_id)
            if not job.terminal:
                done = threading.Event()
                self._waiters[job_id].append(done)
        if not job.terminal:
            done.wait(timeout)
            with self._lock:
                job = self._job(job_id)
            if not job.terminal:
                return job.info(), b"", True
        return job.info(), self._outputs(job), False

    def _outputs(self, job: JobRecord) -> bytes:
        if job.state != "succeeded":
            return b""
        if job.outputs_expired:
            r = self.collector.retention
            raise OutputsGoneError(
                f"the outputs of job {job.job_id} are gone: a result is kept"
                f" {duration(r.results_after_fetch_s)} after it is first fetched"
                f" ({duration(r.unfetched_results_s)} if never fetched); the scheduler's"
                " --keep-results and --keep-unfetched-results set how long"
            )
        self.collector.fetched(job.job_id, self.clock())
        if job.outputs or job.outputs_digest:
            return job.outputs
        stored = self.store.load_job(job.job_id)  # fetched before: memory let it go
        return stored.outputs if stored is not None else b""

    def lease_of(self, job_id: str) -> m.Lease | None:
        """The lease a just-finished job granted its caller, while it holds."""
        with self._lock:
            job = self.state.jobs.get(job_id)
            held = self.state.leases.active.get(job.lease_id) if job and job.lease_id else None
            return held.lease if held is not None else None

    def run_leased(self, lease: m.Lease, inputs: bytes | tuple) -> m.JobResult | None:
        """Run a call on its leased slice, bypassing placement; None: the lease is gone.

        Not under the scheduler's lock: the agent checks the lease itself (a revocation
        reaches it before any later placement is dispatched) and reports the run later.
        """
        direct = self._direct.get(lease.node_id)
        return direct(lease.lease_id, inputs) if direct is not None else None

    def cancel(self, job_id: str) -> m.JobInfo:
        with self._lock:
            self._job(job_id)
            self._apply(self.state.handle(CancelRequested(job_id, self.clock())))
            return self._job(job_id).info()

    def job_info(self, job_id: str) -> m.JobInfo:
        with self._lock:
            return self._job(job_id).info()

    def list_jobs(self, limit: int = 100, state: str = "") -> list[m.JobInfo]:
        limit = max(1, min(limit or 100, 10_000))
        with self._lock:
            live = [j.info() for j in self.state.jobs.values() if not state or j.state == state]
        live.sort(key=lambda j: j.submitted_at, reverse=True)
        if len(live) >= limit:
            return live[:limit]
        seen = {j.job_id for j in live}
        older = [j.info() for j in self.store.recent_jobs(limit, state) if j.job_id not in seen]
        return (live + older)[:limit]

    def inspect(self, read: Callable[[SchedulerState, float], _T]) -> _T:
        """Return ``read(state, now)`` run under the lock; ``read`` must not mutate.

        Observability hook (issue 4): the dashboard and metrics take one consistent view.
        """
        with self._lock:
            return read(self.state, self.clock())

    def remove_node(self, node_id: str) -> m.NodeInfo:
        """Forget a node that is not connected; its listing as it was before.

        ``NotFoundError`` for an unknown node; ``ConfigError`` for a connected one (stop
        its agent first: removing it would only have it join again).
        """
        with self._lock:
            node = self.state.nodes.get(node_id)
            if node is None:
                known = ", ".join(sorted(self.state.nodes)) or "none"
                raise NotFoundError(f"no node {node_id!r} (known: {known})")
            if node.connected:
                raise ConfigError(
                    f"node {node_id} is connected: stop its agent first (it would join again)"
                )
            info = node.info(self.clock())
            self._apply(self.state.handle(NodeRemoved(node_id, self.clock())))
        self.flush()
        return info

    # -------------------------------------------------------------- deployments

    def deploy(
        self,
        name: str,
        request: m.SubmitRequest,
        replicas: int,
        inputs: tuple[m.TensorSpec, ...] = (),
        outputs: tuple[m.TensorSpec, ...] = (),
        options: m.DeployOptions = m.DEFAULT_DEPLOY_OPTIONS,
    ) -> m.DeploymentInfo:
        """Publish (or replace) ``name``; ``ConfigError`` for what a user got wrong.
        ``options``: autoscaling bounds, a canary, the caller token's hash."""
        validate_deployment(name, replicas, options)
        validate_submit(request, self.blobs)
        if not request.inputs or request.inputs_digest:
            raise ConfigError(
                f"deployment {name}: its example inputs must travel inline (at most"
                f" {format_bytes(MAX_EXAMPLE_BYTES)}): deploy with a smaller example"
            )
        if options.canary_percent:
            with self._lock:
                serving = self.state.deployments.get(name)
                refusal = canary_refusal(serving, request, inputs, outputs, self.state.leases, name)
            if refusal:
                raise ConfigError(refusal)
        event = DeploymentApplied(
            name,
            request,
            replicas,
            self.clock(),
            inputs=inputs,
            outputs=outputs,
            bounds=options.bounds,
            canary_percent=options.canary_percent,
            caller_token_sha256=options.caller_token_sha256,
            autoscaling=options.autoscaling,
        )
        return self._deployment_event(event)

    def rollout(self, name: str, action: str) -> m.DeploymentInfo:
        """Promote ``name``'s canary or roll it back (``ConfigError`` when it cannot)."""
        with self._lock:
            self._known_deployment(name)
            refusal = rollout_refusal(self.state.deployments[name], action)
            if refusal:
                raise ConfigError(refusal)
            self._apply(self.state.handle(DeploymentRolledOut(name, action, self.clock())))
            info = self.state.deployment_info(name)
        self.flush()
        assert info is not None
        return info

    def may_call(self, name: str, token: str) -> bool:
        """Whether ``token`` is ``name``'s caller token (it may call that deployment by
        the inference protocol, and nothing else)."""
        with self._lock:
            record = self.state.deployments.get(name)
            wanted = record.caller_token_sha256 if record is not None else ""
        if not wanted or not token:
            return False
        given = hashlib.sha256(token.encode()).hexdigest()
        return hmac.compare_digest(given, wanted)

    def refusal(self, token: str, model: str = "") -> str:
        """Why ``token`` may not make an inference request (to ``model``), or "": the
        scheduler's token may, and for ``model`` its caller token."""
        try:
            self.authenticate(token)
        except AuthenticationError as error:
            if model and self.may_call(model, token):
                return ""
            return str(error)
        return ""

    def calls_reported(self, traffic: m.Traffic, node_id: str = "") -> None:
        """Callers' calls to deployments since they last said (``_traffic``): from
        gateway node ``node_id``'s site, else from where ``traffic`` says."""
        if not traffic.calls and not traffic.times:
            return
        with self._lock:
            self._apply(self.state.handle(DeploymentsCalled(traffic, self.clock(), node_id)))

    def look_up_deployment(self, lookup: m.DeploymentLookup) -> m.DeploymentLookupReply:
        """A gateway agent's look-up (``agents`` ``--gateway-port``): the deployment, the
        names deployed, and whether the caller's token may call it. Its calls since the
        last look-up count as traffic from its node's site."""
        self.calls_reported(m.Traffic(calls=lookup.calls, times=lookup.times), lookup.node_id)
        info = self.deployment(lookup.name) if lookup.name else None
        if info is not None and lookup.wake_replicas and info.max_replicas:
            if info.replicas_wanted == 0:
                replicas = min(lookup.wake_replicas, info.max_replicas)
                info = self.scale(
                    lookup.name, replicas, f"a call at gateway {lookup.node_id} woke it from zero"
                )
        refusal = self.refusal(lookup.token, lookup.name) if lookup.token else ""
        deployed = tuple(d.name for d in self.deployments()) if info is None else ()
        return m.DeploymentLookupReply(info, deployed, refusal)

    def scale(self, name: str, replicas: int, reason: str = "") -> m.DeploymentInfo:
        """Keep ``replicas`` (an autoscaled deployment: from now, within its bounds)."""
        info = self._known_deployment(name)
        validate_deployment(
            name, replicas, m.DeployOptions(bounds=(info.min_replicas, info.max_replicas))
        )
        event = DeploymentApplied(name, None, replicas, self.clock(), reason=reason)
        return self._deployment_event(event)

    def undeploy(self, name: str) -> m.DeploymentInfo:
        """Delete ``name``, releasing its replicas; its listing as it was."""
        with self._lock:
            info = self._known_deployment(name)
            self._apply(self.state.handle(DeploymentDeleted(name, self.clock())))
        self.flush()
        return info

    def deployment(self, name: str) -> m.DeploymentInfo | None:
        with self._lock:
            return self.state.deployment_info(name, self.clock())

    def deployments(self) -> list[m.DeploymentInfo]:
        with self._lock:
            now = self.clock()
            infos = [self.state.deployment_info(n, now) for n in sorted(self.state.deployments)]
        return [i for i in infos if i is not None]

    def _known_deployment(self, name: str) -> m.DeploymentInfo:
        with self._lock:
            info = self.state.deployment_info(name)
            if info is None:
                known = ", ".join(sorted(self.state.deployments)) or "none"
                raise NotFoundError(f"no deployment {name!r} (deployed: {known})")
        return info

    def _deployment_event(self, event: DeploymentApplied) -> m.DeploymentInfo:
        with self._lock:
            self._apply(self.state.handle(event))
            info = self.state.deployment_info(event.name)
        self.flush()
        assert info is not None
        return info

    def usage(self) -> m.ClusterUsage:
        """Capacity on ready nodes and what live jobs reserve (what ``anypu status`` shows)."""
        view = read_view(self)
        return cluster_usage(view.nodes, view.active)

    def list_nodes(self) -> list[m.NodeInfo]:
        now = self.clock()
        with self._lock:
            held = self.state.reservations()
            nodes = sorted(self.state.nodes.values(), key=_node_order)
            return [n.info(now, held.get(n.node_id, ())) for n in nodes]

    def _job(self, job_id: str) -> JobRecord:
        job = self.state.jobs.get(job_id) or self.store.load_job(job_id)
        if job is None:
            r = self.collector.retention
            raise NotFoundError(
                f"no job {job_id!r} on this scheduler (it keeps the newest {r.jobs} finished"
                f" jobs for at most {duration(r.jobs_for_s)}: --keep-jobs, --keep-jobs-for)"
            )
        return job


class AgentSession:
    """One agent connection: the first message must be a Join, then anything else."""

    def __init__(self, service: SchedulerService, send: SendFn, drop: DropFn) -> None:
        self.service = service
        self.send = send
        self.drop = drop
        self.node_id: str | None = None
        self.epoch = 0
        #: Set by the transport when the stream is mutual TLS: who the certificate says.
        self.credential: Enrolment | None = None
        self.direct: DirectFn | None = None

    def receive(self, message: m.AgentMessage, post: bool = False) -> None:
        """``post``: hand a message after the Join to the service's inbox, handled in a
        batch by its thread, instead of handling it here under the lock."""
        if self.node_id is None:
            if not isinstance(message, m.Join):
                raise ConfigError("the first message on an agent stream must be a Join")
            self.node_id, self.epoch = self.service._join(
                message, self.send, self.drop, self.credential, self.direct
            )
            return
        if isinstance(message, m.Join):
            raise ConfigError("this stream has already joined; open a new stream to re-join")
        said = AgentSaid(self.node_id, self.epoch, message, self.service.clock())
        if post:
            self.service.post(said)
        else:
            self.service._handle(said)

    def close(self, post: bool = False) -> None:
        """``post``: the leaving goes through the inbox, behind the messages posted."""
        if self.node_id is not None:
            if post:
                self.service.post(_Leave(self.node_id, self.epoch))
            else:
                self.service._leave(self.node_id, self.epoch)


@dataclass(frozen=True)
class _Leave:
    """In the inbox: an agent's stream ended."""

    node_id: str
    epoch: int


def _node_order(node: NodeRecord) -> tuple[int, str]:
    return (TIERS.index(node.tier), node.node_id)  # tiers are validated at join
