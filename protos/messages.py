"""The protocol's messages as plain Python objects.

Agents, the scheduler and the SDK speak these; ``convert`` maps them to and from the
generated protobuf classes at the gRPC boundary, and the in-process transport passes them
through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from anypu._labels import LabelRequirement
from anypu.devices import Device

__all__ = [
    "DEFAULT_DEPLOY_OPTIONS",
    "NODE_NAME",
    "NO_FAILURE",
    "TIERS",
    "AgentMessage",
    "Autoscaling",
    "CallTimes",
    "Cancel",
    "ClusterUsage",
    "DeployOptions",
    "DeploymentInfo",
    "DeploymentLookup",
    "DeploymentLookupReply",
    "DeviceReservation",
    "DeviceUsage",
    "FailureCode",
    "Heartbeat",
    "HeartbeatEcho",
    "JobInfo",
    "JobResult",
    "JobStarted",
    "JobUsage",
    "Join",
    "JoinAck",
    "Launch",
    "Lease",
    "LeaseGranted",
    "LeaseRevoked",
    "LeasedRun",
    "LeasedRuns",
    "Leave",
    "NodeInfo",
    "Outcome",
    "Peer",
    "PeerSample",
    "Peers",
    "PlacementInfo",
    "Replica",
    "Reservation",
    "SchedulerMessage",
    "SplitOption",
    "SubmitRequest",
    "TensorSpec",
    "Traffic",
    "UsageRow",
    "node_name_problem",
]


#: The tiers of the network, in order from the datacentre out to end devices.
TIERS = ("cloud", "edge", "device")

#: A node's name: also its certificate's common name and its id at the scheduler.
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def node_name_problem(name: str) -> str:
    """Why ``name`` cannot name a node, or "" when it can."""
    if NODE_NAME.match(name):
        return ""
    return f"node name {name[:80]!r} is invalid: use 1–63 letters, digits, '.', '_' or '-'"


class FailureCode(str, Enum):
    """Why a job (or a call under a lease) ended without outputs.

    ``user_error``: the submitter's doing (the model raised on its inputs, ran out of its
    memory or its time, or the artifact was refused): never retried, never the node's
    fault. ``retryable``: the node's or the worker's fault, so another placement may
    succeed. ``crashed``: the worker or its node died under the job, which counts towards
    marking the job poison. The rest are the scheduler's verdicts.
    """

    MODEL_RAISED = "ModelRaised"  # ``Outcome.error_type`` is the exception's class
    ARTIFACT_REFUSED = "ArtifactRefused"  # unsafe or malformed model artifact
    OUT_OF_MEMORY = "OutOfMemory"
    MEMORY_EXCEEDED = "MemoryExceeded"  # went over its memory share; its agent stopped it
    JOB_TIMEOUT = "JobTimeout"
    LOAD_FAILED = "LoadFailed"  # a valid artifact did not load on that node
    INPUTS_UNREADABLE = "InputsUnreadable"
    WORKER_DIED = "WorkerDied"
    NO_SUCH_SLICE = "NoSuchSlice"
    ARTIFACT_UNAVAILABLE = "ArtifactUnavailable"  # the node could not fetch it
    OUTPUTS_UNDELIVERABLE = "OutputsUndeliverable"  # the node could not upload them
    #: The device's backend lacks an operator the model needs: a placement failure (the
    #: job goes to another kind of device), never the user's error.
    OPERATOR_UNSUPPORTED = "OperatorUnsupported"
    CANCELLED = "Cancelled"
    UNSCHEDULABLE = "Unschedulable"
    #: No device is predicted to finish the job within its deadline (the message says the
    #: best there was); not retried: waiting only makes it later.
    DEADLINE_UNREACHABLE = "DeadlineUnreachable"
    RETRIES_EXHAUSTED = "RetriesExhausted"
    POISON = "Poison"

    @property
    def user_error(self) -> bool:
        return self in _USER_ERRORS

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE

    @property
    def crashed(self) -> bool:
        return self is FailureCode.WORKER_DIED


_USER_ERRORS = frozenset(
    {
        FailureCode.MODEL_RAISED,
        FailureCode.ARTIFACT_REFUSED,
        FailureCode.OUT_OF_MEMORY,
        FailureCode.MEMORY_EXCEEDED,
        FailureCode.JOB_TIMEOUT,
    }
)
_RETRYABLE = frozenset(
    {
        FailureCode.LOAD_FAILED,
        FailureCode.INPUTS_UNREADABLE,
        FailureCode.WORKER_DIED,
        FailureCode.NO_SUCH_SLICE,
        FailureCode.ARTIFACT_UNAVAILABLE,
        FailureCode.OUTPUTS_UNDELIVERABLE,
        FailureCode.OPERATOR_UNSUPPORTED,
    }
)
_CODES = {code.value: code for code in FailureCode}


@dataclass(frozen=True)
class Outcome:
    """How a job ended: nothing wrong (``code`` None), or a ``FailureCode`` with the words.

    Carried by ``JobResult``, ``LeasedRun``, ``JobInfo`` and the scheduler's ``JobRecord``
    (where it means something once the job is terminal). ``error_type`` is the
    exception's class on the worker for model and loading failures, else the code's name.
    """

    code: FailureCode | None = None
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    load_seconds: float = 0.0  # 0 when the model was warm
    run_seconds: float = 0.0
    #: A job stopped over its memory share: what it was measured using (its share when
    #: the allocation past it was refused); 0 otherwise.
    memory_used_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def user_error(self) -> bool:
        return self.code is not None and self.code.user_error

    @property
    def retryable(self) -> bool:
        return self.code is not None and self.code.retryable

    @classmethod
    def failed(
        cls,
        code: FailureCode,
        message: str,
        *,
        error_type: str = "",
        traceback: str = "",
        load_seconds: float = 0.0,
        run_seconds: float = 0.0,
    ) -> Outcome:
        return cls(code, error_type or code.value, message, traceback, load_seconds, run_seconds)

    def fields(self) -> dict[str, Any]:
        """The flat form frames, the state store and the JSON API carry."""
        return {
            "ok": self.ok,
            "failure_code": self.code.value if self.code is not None else "",
            "error_type": self.error_type,
            "error_message": self.message,
            "error_traceback": self.traceback,
            "user_error": self.user_error,
            "load_seconds": self.load_seconds,
            "run_seconds": self.run_seconds,
            "memory_used_bytes": self.memory_used_bytes,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Outcome:
        """Read ``fields()``'s form back; rows written before codes existed read as the
        code their ``error_type`` names, else as the model's or the node's failure."""
        load_seconds = float(fields.get("load_seconds") or 0.0)
        run_seconds = float(fields.get("run_seconds") or 0.0)
        text = str(fields.get("failure_code") or "")
        error_type = str(fields.get("error_type") or "")
        if not text and fields.get("ok", not error_type):
            return cls(load_seconds=load_seconds, run_seconds=run_seconds)
        code = _CODES.get(text) or _CODES.get(error_type)
        if code is None:
            code = FailureCode.MODEL_RAISED if fields.get("user_error") else FailureCode.LOAD_FAILED
        return cls(
            code,
            error_type or code.value,
            str(fields.get("error_message") or ""),
            str(fields.get("error_traceback") or ""),
            load_seconds=load_seconds,
            run_seconds=run_seconds,
            memory_used_bytes=int(fields.get("memory_used_bytes") or 0),
        )


#: A job that has not failed (so far), with no timings yet.
NO_FAILURE = Outcome()


@dataclass(frozen=True)
class DeviceUsage:
    device_id: str
    #: The vendor's busy fraction when ``measured``, else the share of busy slices.
    utilisation: float = 0.0
    free_memory_bytes: int = 0
    busy_slices: int = 0
    memory_used_bytes: int = 0  # the vendor's reading (0 when not measured)
    measured: bool = False


@dataclass(frozen=True)
class JobUsage:
    """A running job's own memory on its device, as its agent measured it."""

    job_id: str
    attempt: int
    device_id: str
    memory_used_bytes: int


@dataclass(frozen=True)
class Reservation:
    """What a placed or running job holds of a shared device: memory, and milli
    (thousandths) of its compute, on seat ``slice_index``."""

    job_id: str
    device_id: str
    slice_index: int
    memory_bytes: int
    milli: int


@dataclass(frozen=True)
class Join:
    protocol_version: int
    token: str
    name: str
    tier: str
    site: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    devices: tuple[Device, ...] = ()
    warm_digests: tuple[str, ...] = ()
    agent_version: str = ""
    running: tuple[tuple[str, int], ...] = ()
    #: host:port of this agent's DirectService, where clients send calls under leases.
    direct_address: str = ""
    #: Takes calls under leases in-process: the embedded mode's agent (not on the wire).
    direct_runs: bool = False


@dataclass(frozen=True)
class Heartbeat:
    sent_at: float
    usage: tuple[DeviceUsage, ...] = ()
    warm_digests: tuple[str, ...] = ()
    running_jobs: int = 0
    jobs: tuple[JobUsage, ...] = ()
    #: The last echo's round trip, on the agent's own clock; 0.0: none measured yet.
    rtt_s: float = 0.0
    #: Answer with a ``HeartbeatEcho`` (an agent that measures round trips).
    wants_echo: bool = False
    #: Bytes per second the agent's last bandwidth probe carried to the scheduler (sent
    #: once per probe); 0.0: none since the last heartbeat.
    bandwidth_bps: float = 0.0
    #: What the agent last timed to agents of other sites (sent once per measurement).
    peers: tuple[PeerSample, ...] = ()


@dataclass(frozen=True)
class PeerSample:
    """A round trip (and, where probed, the bandwidth) from an agent to another site's."""

    site: str
    rtt_s: float
    bandwidth_bps: float = 0.0


@dataclass(frozen=True)
class Peer:
    node_id: str
    site: str
    direct_address: str


@dataclass(frozen=True)
class Peers:
    """One agent per other site that takes direct calls: whom to time (``agents._peers``)."""

    peers: tuple[Peer, ...] = ()


@dataclass(frozen=True)
class JobStarted:
    job_id: str
    attempt: int


@dataclass(frozen=True)
class JobResult:
    job_id: str
    attempt: int
    outcome: Outcome = NO_FAILURE
    outputs: bytes = b""
    node_id: str = ""
    device_id: str = ""
    #: The outputs themselves, for a direct call run in this process (never on the wire).
    value: Any = None
    #: Outputs larger than a message travel as this blob, uploaded first; ``outputs`` is empty.
    outputs_digest: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome.ok


@dataclass(frozen=True)
class LeasedRun:
    """One call an agent ran directly under a lease (see ``Lease``), for the record."""

    lease_id: str
    job_id: str
    started_at: float
    finished_at: float
    outcome: Outcome = NO_FAILURE


@dataclass(frozen=True)
class LeasedRuns:
    """Direct runs since the last report, sent in batches off the callers' path."""

    runs: tuple[LeasedRun, ...]


@dataclass(frozen=True)
class Leave:
    """The agent is stopping on purpose: move its jobs now, list the node as ``left``."""

    reason: str = ""


AgentMessage = Join | Heartbeat | JobStarted | JobResult | LeasedRuns | Leave


@dataclass(frozen=True)
class JoinAck:
    node_id: str
    heartbeat_interval_s: float
    lost_after_s: float
    epoch: int
    protocol_version: int


@dataclass(frozen=True)
class Launch:
    job_id: str
    attempt: int
    artifact_digest: str
    device_id: str
    slice_index: int
    inputs: bytes = b""
    inputs_digest: str = ""
    timeout_s: float = 0.0
    #: On a shared device: the job's memory reservation, which its worker caps it at.
    memory_limit_bytes: int = 0
    #: ... and its compute share in milli, which MPS enforces where a daemon runs.
    compute_milli: int = 0


@dataclass(frozen=True)
class Cancel:
    job_id: str
    attempt: int
    reason: str = ""


@dataclass(frozen=True)
class Lease:
    """A slice kept for one client's further calls of one model, as Ray leases a worker.

    The scheduler grants it with the result of a placed job whose caller asked for one;
    until it is revoked the client hands calls of the same model and constraints to the
    agent directly (at ``address``, or in-process when empty), which runs them on that
    slice and reports them afterwards (``LeasedRuns``). Only agents that take direct calls
    (``Join.direct_address`` or ``Join.direct_runs``) get leases. The id is also the
    capability the client presents to the agent.
    """

    lease_id: str
    node_id: str
    device_id: str
    slice_index: int
    artifact_digest: str
    address: str = ""


@dataclass(frozen=True)
class LeaseGranted:
    lease: Lease


@dataclass(frozen=True)
class LeaseRevoked:
    lease_id: str
    reason: str = ""


@dataclass(frozen=True)
class HeartbeatEcho:
    """A heartbeat's ``sent_at``, returned at once: the agent times the round trip.
    ``held_s``: how long the scheduler held it between reading the heartbeat off the
    stream and writing this echo (stamped by the gRPC adapter; 0.0 in process)."""

    sent_at: float
    held_s: float = 0.0


SchedulerMessage = JoinAck | Launch | Cancel | LeaseGranted | LeaseRevoked | HeartbeatEcho | Peers


@dataclass(frozen=True)
class SubmitRequest:
    artifact_digest: str
    inputs: bytes = b""
    inputs_digest: str = ""
    flops: float = 0.0
    memory_bytes: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    param_bytes: int = 0
    device_kinds: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    origin: str = ""
    priority: int = 0
    slo_seconds: float = 0.0
    name: str = ""
    timeout_s: float = 0.0
    max_retries: int = 3
    wait: bool = False
    wait_timeout_s: float = 0.0
    #: With ``wait``: keep the slice for the caller's further calls like this one.
    lease: bool = False
    #: The compute share (thousandths of a device) to reserve on a shared device; 0: the
    #: scheduler derives it from the predicted time and the SLO.
    compute_milli: int = 0
    #: What the model computes in (fp32, fp16, bf16, int8…): which throughput figure of
    #: a device its compute is costed with. "" means fp32.
    precision: str = ""
    #: The operators the model's graph calls (``aten::linear``…), recorded at export.
    operators: tuple[str, ...] = ()
    #: Milliseconds from submission by which the outputs are wanted; 0: no deadline.
    #: Only placements predicted to meet it are chosen; where none is, the job fails at
    #: once (``FailureCode.DEADLINE_UNREACHABLE``) unless ``best_effort``.
    deadline_ms: float = 0.0
    best_effort: bool = False
    #: The work of one call (``sdk._estimate``): what run time is learnt from per device
    #: model (``scheduler._compute_model``); 0 from clients that do not say.
    operator_calls: int = 0
    matmul_flops: float = 0.0
    conv_flops: float = 0.0
    attention_flops: float = 0.0
    bytes_moved: int = 0
    #: Cuts of the model the scheduler may split the call at (``sdk._split``).
    splits: tuple[SplitOption, ...] = ()
    #: (vertex, round-trip seconds) the client timed; with no origin, the scheduler
    #: infers it from them (``placement.infer_origin``).
    round_trips: tuple[tuple[str, float], ...] = ()
    #: Labels the device's node must have (``anypu._labels``): every one must hold.
    label_selector: tuple[LabelRequirement, ...] = ()


@dataclass(frozen=True)
class SplitOption:
    """One cut: the head (the model's inputs to the activation) and the tail (it to the
    outputs) as requests of their own; only their artifacts and work are read."""

    label: str
    activation_bytes: int
    head: SubmitRequest
    tail: SubmitRequest


@dataclass(frozen=True)
class PlacementInfo:
    node_id: str
    device_id: str
    slice_index: int
    predicted_seconds: float
    terms: dict[str, float] = field(default_factory=dict)
    solver: str = ""
    tier: str = ""
    device_description: str = ""
    simulated: bool = False
    #: The cheapest slice on another node when it was placed, and its terms: why the
    #: other nodes lost ("" when none could take it, or a trace policy placed it).
    runner_up_node: str = ""
    runner_up_device: str = ""
    runner_up_seconds: float = 0.0
    runner_up_terms: dict[str, float] = field(default_factory=dict)
    #: What the job reserves of a shared device (0 on a slice, which owns its share).
    memory_bytes: int = 0
    milli: int = 0
    #: Where its compute term came from: ``measured`` (this model's runs on that device
    #: model), ``learned`` (other models' runs there, the throughput model) or
    #: ``estimate`` (FLOPs over the device's declared throughput).
    compute_from: str = ""


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the Open Inference Protocol names it."""

    name: str
    datatype: str
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Replica:
    """One replica of a deployment: a warm worker holding its model, on a slice leased
    to the deployment. ``replica_id`` is the job that placed and warmed it; ``lease``
    (set once ready) is how a caller reaches it."""

    replica_id: str
    state: str
    node_id: str = ""
    device_id: str = ""
    tier: str = ""
    lease: Lease | None = None
    #: The deployment's version it serves (older ones serve until the new are ready).
    version: int = 0
    #: The site whose calls it was placed for: its warm-up's origin (the deployment's
    #: declared one, or a site its calls were measured from).
    placed_for: str = ""


@dataclass(frozen=True)
class Autoscaling:
    """An autoscaled deployment's targets and delays; 0: the scheduler's default."""

    #: Calls in flight per replica aimed at (default 0.7).
    target_in_flight: float = 0.0
    #: The replicas' call time aimed at, queue at the replica and run (0: none).
    target_latency_s: float = 0.0
    #: How long the load must ask for fewer replicas before one is released.
    scale_down_after_s: float = 0.0
    #: How long without a call before it goes to zero (with ``min_replicas`` 0).
    scale_to_zero_after_s: float = 0.0


@dataclass(frozen=True)
class DeploymentInfo:
    """A model published under ``name`` and the replicas serving it; ``message`` says
    why replicas are missing, when they are."""

    name: str
    artifact_digest: str
    replicas_wanted: int
    replicas: tuple[Replica, ...] = ()
    created_at: float = 0.0
    message: str = ""
    model_name: str = ""
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    #: Autoscaling bounds (``max_replicas`` 0: a fixed count).
    min_replicas: int = 0
    max_replicas: int = 0
    #: Recent scale events with their reasons, oldest first.
    events: tuple[str, ...] = ()
    #: 1, then one more each time it is deployed anew (a rolling update).
    version: int = 0
    #: Over the last 10 s of its replicas' reported calls: calls a second, and the
    #: median and 99th percentile of their run time on the replica.
    calls_per_s: float = 0.0
    run_p50_s: float = 0.0
    run_p99_s: float = 0.0
    #: While a canary runs: the percent of calls to ``version``; the rest go to
    #: ``stable_version`` (which a rollback restores; 0: none).
    canary_percent: int = 0
    stable_version: int = 0
    #: A caller token may call it (by the inference protocol); never shown itself.
    caller_token: bool = False
    #: Cold starts since the scheduler started (a call woke it from zero) and the last's
    #: seconds from the call to a ready replica.
    cold_starts: int = 0
    last_cold_start_s: float = 0.0
    #: Its autoscaling targets and delays as deployed (0: the scheduler's default).
    autoscaling: Autoscaling = Autoscaling()
    #: Its callers' reported calls over the last minute: (site, calls), most first.
    traffic: tuple[tuple[str, int], ...] = ()
    #: Its callers' calls end to end where they stand (SDK clients, gateways), as they
    #: reported them over the last 10 s: calls a second, median and 99th percentile.
    caller_calls_per_s: float = 0.0
    caller_p50_s: float = 0.0
    caller_p99_s: float = 0.0
    #: All they reported since the scheduler started: counts per bucket of
    #: ``anypu.comm.CALL_SECONDS_BUCKETS`` (one more above it), and seconds in all.
    caller_buckets: tuple[int, ...] = ()
    caller_seconds: float = 0.0

    @property
    def ready(self) -> tuple[Replica, ...]:
        return tuple(r for r in self.replicas if r.state == "ready" and r.lease is not None)

    def serving(self, draw: float) -> tuple[Replica, ...]:
        """The ready replicas one call may go to, for ``draw`` uniform in [0, 1): during
        a canary, the canary's with probability ``canary_percent`` / 100, else the
        stable version's (either side alone when the other has none ready)."""
        ready = self.ready
        if not self.canary_percent:
            return ready
        canary = tuple(r for r in ready if r.version == self.version)
        # Not "any other version": a canary replacing a canary keeps its stable side,
        # and the replaced canary's replicas get none of its share while they last.
        stable = tuple(r for r in ready if r.version == self.stable_version)
        if not canary or not stable:
            return canary or stable
        return canary if draw * 100 < self.canary_percent else stable


@dataclass(frozen=True)
class DeployOptions:
    """How a deployment scales, rolls out a new model and who may call it."""

    #: Autoscale between (min, max) replicas; max 0: a fixed count.
    bounds: tuple[int, int] = (0, 0)
    #: A new model as a canary taking this percent of calls (1-99); 0: a rolling update.
    canary_percent: int = 0
    #: SHA-256 (hex) of the token that may call it by the inference protocol; "": none;
    #: None: keep the one it has.
    caller_token_sha256: str | None = None
    autoscaling: Autoscaling = Autoscaling()


DEFAULT_DEPLOY_OPTIONS = DeployOptions()


@dataclass(frozen=True)
class JobInfo:
    """A job as users and operators see it."""

    job_id: str
    state: str
    name: str = ""
    attempt: int = 0
    placement: PlacementInfo | None = None
    pending_reasons: dict[str, str] = field(default_factory=dict)
    submitted_at: float = 0.0
    finished_at: float = 0.0
    outcome: Outcome = NO_FAILURE
    unschedulable: bool = False
    origin: str = ""
    artifact_digest: str = ""
    latency_seconds: float = 0.0
    #: The outputs are in this blob, not inline (too large for one message).
    outputs_digest: str = ""
    #: As submitted (0: none); ``deadline_met`` says how it went.
    deadline_ms: float = 0.0
    #: Split across two devices: the cut and both devices ("" when it ran whole), and
    #: the head's own job.
    split: str = ""
    head_job_id: str = ""
    #: How ``origin`` was inferred from the client's round trips ("" when named).
    origin_inferred: str = ""

    @property
    def terminal(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")

    @property
    def deadline_met(self) -> bool | None:
        """Whether a succeeded job with a deadline ended within it, as the scheduler saw
        it (submit to result); None without a deadline or before it succeeded."""
        if not self.deadline_ms or self.state != "succeeded":
            return None
        return self.latency_seconds * 1000 <= self.deadline_ms

    def as_dict(self) -> dict[str, Any]:
        """The job as the JSON API and ``anypu status --json`` show it: the outcome's
        fields inline (``failure_code``, ``error_type``, …, ``run_seconds``)."""
        document = {k: v for k, v in vars(self).items() if k not in ("outcome", "placement")}
        document["placement"] = vars(self.placement) if self.placement is not None else None
        document["deadline_met"] = self.deadline_met
        outcome = self.outcome.fields()
        del outcome["ok"]  # ``state`` says it
        return document | outcome


@dataclass(frozen=True)
class NodeInfo:
    node_id: str
    tier: str
    site: str
    state: str
    labels: dict[str, str] = field(default_factory=dict)
    devices: tuple[Device, ...] = ()
    usage: tuple[DeviceUsage, ...] = ()
    warm_digests: tuple[str, ...] = ()
    last_heartbeat_age_s: float = 0.0
    running_jobs: int = 0
    epoch: int = 0
    job_usage: tuple[JobUsage, ...] = ()  # each running job's own memory, last heartbeat
    reservations: tuple[Reservation, ...] = ()  # what jobs hold of its shared devices
    #: Round trips on its stream (heartbeat echoes) over the last 64: median and 95th
    #: percentile (0.0: none measured), and the newest's age (-1.0: none).
    rtt_p50_s: float = 0.0
    rtt_p95_s: float = 0.0
    rtt_age_s: float = -1.0
    #: Its agent's last bandwidth probe to the scheduler (bytes per second; 0.0: none),
    #: and its age (-1.0: none).
    bandwidth_bps: float = 0.0
    bandwidth_age_s: float = -1.0
    #: Where it takes calls under leases straight from clients (HOST:PORT; "" none):
    #: clients time round trips to it (``DirectService.Ping``).
    direct_address: str = ""
    #: What its agent last timed to other sites' agents (``agents._peers``).
    peers: tuple[PeerSample, ...] = ()

    def reserved_on(self, device_id: str) -> tuple[int, int]:
        """(memory bytes, milli) its live jobs reserve of shared device ``device_id``."""
        mine = [r for r in self.reservations if r.device_id == device_id]
        return sum(r.memory_bytes for r in mine), sum(r.milli for r in mine)


@dataclass(frozen=True)
class UsageRow:
    """Capacity of one (tier, kind) on ready nodes, and how much of it jobs reserve.

    A slice is reserved while at least one placed or running job is bound to it; its
    memory and compute share count as reserved with it.
    """

    tier: str
    kind: str
    devices: int
    simulated: int
    slices: int
    reserved_slices: int
    memory_bytes: int
    reserved_memory_bytes: int
    tflops: float
    reserved_tflops: float

    @property
    def free_slices(self) -> int:
        return self.slices - self.reserved_slices

    @property
    def free_memory_bytes(self) -> int:
        return self.memory_bytes - self.reserved_memory_bytes

    @property
    def free_tflops(self) -> float:
        return self.tflops - self.reserved_tflops

    def as_dict(self) -> dict[str, Any]:
        """Every field and the free amounts, as the JSON API and ``status --json`` show it."""
        return {
            **vars(self),
            "free_slices": self.free_slices,
            "free_memory_bytes": self.free_memory_bytes,
            "free_tflops": self.free_tflops,
        }


@dataclass(frozen=True)
class DeviceReservation:
    node_id: str
    device_id: str
    reserved_slices: int


@dataclass(frozen=True)
class ClusterUsage:
    """The scheduler's answer to ``Usage``: rows by tier and kind, fragmentation, and the
    devices with reserved slices."""

    rows: tuple[UsageRow, ...] = ()
    fragmentation: float = 0.0
    reserved: tuple[DeviceReservation, ...] = ()


@dataclass(frozen=True)
class CallTimes:
    """A caller's answered calls to one deployment, end to end where it stands: counts
    per bucket of ``anypu.comm.CALL_SECONDS_BUCKETS`` (one more: above the last), and
    their seconds in all."""

    deployment: str
    buckets: tuple[int, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class Traffic:
    """Calls a caller sent to deployments since it last said (deployment, calls) and
    their ``times``, and where it is: ``origin`` named, or the ``round_trips`` it timed
    (the scheduler infers it, as for a job). Replicas are placed after where the calls
    come from."""

    calls: tuple[tuple[str, int], ...] = ()
    origin: str = ""
    round_trips: tuple[tuple[str, float], ...] = ()
    times: tuple[CallTimes, ...] = ()


@dataclass(frozen=True)
class DeploymentLookup:
    """A gateway agent asking for deployment ``name`` (the inference protocol there):
    ``token`` to check for it, ``wake_replicas`` > 0 when a call woke it from zero,
    ``calls`` answered at that gateway since its last look-up (its node's site's traffic)."""

    node_id: str
    name: str = ""
    token: str = ""
    wake_replicas: int = 0
    calls: tuple[tuple[str, int], ...] = ()
    times: tuple[CallTimes, ...] = ()


@dataclass(frozen=True)
class DeploymentLookupReply:
    """``deployment`` (None: not deployed), every name ``deployed``, and why the token
    may not call it (``refusal``; "": it may)."""

    deployment: DeploymentInfo | None
    deployed: tuple[str, ...] = ()
    refusal: str = ""
