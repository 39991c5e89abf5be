"""The protocol's messages as plain Python objects.

Agents, the scheduler and the SDK speak these; ``convert`` maps them to and from the
generated protobuf classes at the gRPC boundary, and the in-process transport passes them
through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from anypu.devices import Device

__all__ = [
    "AgentMessage",
    "Cancel",
    "DeviceUsage",
    "Heartbeat",
    "JobInfo",
    "JobResult",
    "JobStarted",
    "Join",
    "JoinAck",
    "Launch",
    "NodeInfo",
    "PlacementInfo",
    "SchedulerMessage",
    "SubmitRequest",
]


@dataclass(frozen=True)
class DeviceUsage:
    device_id: str
    utilisation: float = 0.0
    free_memory_bytes: int = 0
    busy_slices: int = 0


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


@dataclass(frozen=True)
class Heartbeat:
    sent_at: float
    usage: tuple[DeviceUsage, ...] = ()
    warm_digests: tuple[str, ...] = ()
    running_jobs: int = 0


@dataclass(frozen=True)
class JobStarted:
    job_id: str
    attempt: int


@dataclass(frozen=True)
class JobResult:
    job_id: str
    attempt: int
    ok: bool
    outputs: bytes = b""
    error_type: str = ""
    error_message: str = ""
    error_traceback: str = ""
    load_seconds: float = 0.0
    run_seconds: float = 0.0
    node_id: str = ""
    device_id: str = ""
    user_error: bool = False


AgentMessage = Join | Heartbeat | JobStarted | JobResult


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


@dataclass(frozen=True)
class Cancel:
    job_id: str
    attempt: int
    reason: str = ""


SchedulerMessage = JoinAck | Launch | Cancel


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
    load_seconds: float = 0.0
    run_seconds: float = 0.0
    error_type: str = ""
    error_message: str = ""
    error_traceback: str = ""
    unschedulable: bool = False
    origin: str = ""
    artifact_digest: str = ""
    latency_seconds: float = 0.0
    user_error: bool = False

    @property
    def terminal(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")


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
