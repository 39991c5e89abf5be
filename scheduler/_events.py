"""What the scheduler's state machine takes (events) and gives (actions): plain data.

``SchedulerState.handle(event) -> actions``; every action carries the ``stimulus_id`` of
the event that caused it, so one job's lines share an id in every log.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from anypu.protos import messages as m
from anypu.scheduler._learned import Lesson
from anypu.scheduler._records import JobRecord, NodeRecord

__all__ = [
    "Action",
    "AgentConnected",
    "AgentDisconnected",
    "AgentSaid",
    "CancelRequested",
    "DeploymentApplied",
    "DeploymentDeleted",
    "DeploymentRolledOut",
    "DeploymentsCalled",
    "Drop",
    "Event",
    "ForgetDeployment",
    "ForgetNode",
    "JobSubmitted",
    "JobsSubmitted",
    "NodeRemoved",
    "Notify",
    "PersistDeployment",
    "PersistJob",
    "PersistLearned",
    "PersistNode",
    "Send",
    "Tick",
    "new_job_id",
    "stimulus_of",
]


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


@dataclass(frozen=True)
class DeploymentApplied:
    """Publish ``request``'s model as ``name`` with ``replicas`` replicas, or change an
    existing deployment's count (``request`` None: scale only)."""

    name: str
    request: m.SubmitRequest | None
    replicas: int
    now: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log
    #: The model's inputs and outputs as the inference protocol names them.
    inputs: tuple[m.TensorSpec, ...] = ()
    outputs: tuple[m.TensorSpec, ...] = ()
    #: Autoscaling bounds (min, max); max 0: a fixed count.
    bounds: tuple[int, int] = (0, 0)
    #: Why the count changes, for the deployment's events ("" : an operator's scale).
    reason: str = ""
    #: A new model as a canary taking this percent of calls; 0: a rolling update.
    canary_percent: int = 0
    #: SHA-256 (hex) of the caller token; "": none; None: keep the one it has.
    caller_token_sha256: str | None = None
    #: Its autoscaling targets and delays (a scale-only event: None, kept as they are).
    autoscaling: m.Autoscaling | None = None


@dataclass(frozen=True)
class DeploymentRolledOut:
    """``action`` "promote" (a canary serves every call) or "rollback" (the version
    before serves again)."""

    name: str
    action: str
    now: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class DeploymentDeleted:
    name: str
    now: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class DeploymentsCalled:
    """A caller's calls to deployments since it last said: from gateway node
    ``node_id``'s site, else from where ``traffic`` says the caller is."""

    traffic: m.Traffic
    now: float
    node_id: str = ""
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
    | DeploymentApplied
    | DeploymentDeleted
    | DeploymentRolledOut
    | DeploymentsCalled
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
class PersistLearned:
    """Keep what a run taught about a model (``_learned.Lesson``) across restarts."""

    lesson: Lesson
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class Notify:
    job_id: str
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


@dataclass(frozen=True)
class PersistDeployment:
    """Keep a deployment (its name, template and replica count) across restarts."""

    name: str
    request: m.SubmitRequest
    replicas: int
    created_at: float
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log
    inputs: tuple[m.TensorSpec, ...] = ()
    outputs: tuple[m.TensorSpec, ...] = ()
    bounds: tuple[int, int] = (0, 0)
    version: int = 1
    latest_version: int = 1
    #: The version before (``_deployments.DeploymentVersion``), kept for a rollback.
    previous: Any = None
    canary_percent: int = 0
    caller_token_sha256: str = ""
    autoscaling: m.Autoscaling = m.Autoscaling()


@dataclass(frozen=True)
class ForgetDeployment:
    name: str
    stimulus_id: str = field(default="", compare=False)  # what caused it, for the log


Action = (
    Send
    | PersistJob
    | PersistNode
    | ForgetNode
    | Notify
    | Drop
    | PersistLearned
    | PersistDeployment
    | ForgetDeployment
)


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
    if isinstance(event, (DeploymentApplied, DeploymentDeleted)):
        return f"deploy-{event.name}"
    if isinstance(event, AgentConnected):
        return f"join-{event.join.name}"
    if isinstance(event, AgentDisconnected):
        return f"leave-{event.node_id}-{event.epoch}"
    if isinstance(event, NodeRemoved):
        return f"remove-{event.node_id}"
    return f"tick-{event.now:.3f}"


def new_job_id() -> str:
    return "job-" + secrets.token_hex(6)
