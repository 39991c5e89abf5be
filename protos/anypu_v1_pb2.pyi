from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Device(_message.Message):
    __slots__ = ("device_id", "kind", "vendor", "model", "memory_bytes", "tflops", "torch_device", "simulated", "slices", "threads", "sharing", "extra", "shared")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    TFLOPS_FIELD_NUMBER: _ClassVar[int]
    TORCH_DEVICE_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    SHARING_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    kind: str
    vendor: str
    model: str
    memory_bytes: int
    tflops: float
    torch_device: str
    simulated: bool
    slices: int
    threads: int
    sharing: str
    extra: _containers.ScalarMap[str, str]
    shared: bool
    def __init__(self, device_id: _Optional[str] = ..., kind: _Optional[str] = ..., vendor: _Optional[str] = ..., model: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., tflops: _Optional[float] = ..., torch_device: _Optional[str] = ..., simulated: _Optional[bool] = ..., slices: _Optional[int] = ..., threads: _Optional[int] = ..., sharing: _Optional[str] = ..., extra: _Optional[_Mapping[str, str]] = ..., shared: _Optional[bool] = ...) -> None: ...

class DeviceUsage(_message.Message):
    __slots__ = ("device_id", "utilisation", "free_memory_bytes", "busy_slices", "memory_used_bytes", "measured")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    UTILISATION_FIELD_NUMBER: _ClassVar[int]
    FREE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLICES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEASURED_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    utilisation: float
    free_memory_bytes: int
    busy_slices: int
    memory_used_bytes: int
    measured: bool
    def __init__(self, device_id: _Optional[str] = ..., utilisation: _Optional[float] = ..., free_memory_bytes: _Optional[int] = ..., busy_slices: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., measured: _Optional[bool] = ...) -> None: ...

class JobUsage(_message.Message):
    __slots__ = ("job_id", "attempt", "device_id", "memory_used_bytes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    device_id: str
    memory_used_bytes: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., device_id: _Optional[str] = ..., memory_used_bytes: _Optional[int] = ...) -> None: ...

class Reservation(_message.Message):
    __slots__ = ("job_id", "device_id", "slice_index", "memory_bytes", "milli")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MILLI_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    device_id: str
    slice_index: int
    memory_bytes: int
    milli: int
    def __init__(self, job_id: _Optional[str] = ..., device_id: _Optional[str] = ..., slice_index: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., milli: _Optional[int] = ...) -> None: ...

class Join(_message.Message):
    __slots__ = ("protocol_version", "token", "name", "tier", "site", "labels", "devices", "warm_digests", "agent_version", "running", "direct_address")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    WARM_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    DIRECT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    token: str
    name: str
    tier: str
    site: str
    labels: _containers.ScalarMap[str, str]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    warm_digests: _containers.RepeatedScalarFieldContainer[str]
    agent_version: str
    running: _containers.RepeatedCompositeFieldContainer[RunningAttempt]
    direct_address: str
    def __init__(self, protocol_version: _Optional[int] = ..., token: _Optional[str] = ..., name: _Optional[str] = ..., tier: _Optional[str] = ..., site: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., warm_digests: _Optional[_Iterable[str]] = ..., agent_version: _Optional[str] = ..., running: _Optional[_Iterable[_Union[RunningAttempt, _Mapping]]] = ..., direct_address: _Optional[str] = ...) -> None: ...

class RunningAttempt(_message.Message):
    __slots__ = ("job_id", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_at", "usage", "warm_digests", "running_jobs", "jobs", "rtt_s", "wants_echo", "bandwidth_bps", "peers")
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    WARM_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    RTT_S_FIELD_NUMBER: _ClassVar[int]
    WANTS_ECHO_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BPS_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    sent_at: float
    usage: _containers.RepeatedCompositeFieldContainer[DeviceUsage]
    warm_digests: _containers.RepeatedScalarFieldContainer[str]
    running_jobs: int
    jobs: _containers.RepeatedCompositeFieldContainer[JobUsage]
    rtt_s: float
    wants_echo: bool
    bandwidth_bps: float
    peers: _containers.RepeatedCompositeFieldContainer[PeerSample]
    def __init__(self, sent_at: _Optional[float] = ..., usage: _Optional[_Iterable[_Union[DeviceUsage, _Mapping]]] = ..., warm_digests: _Optional[_Iterable[str]] = ..., running_jobs: _Optional[int] = ..., jobs: _Optional[_Iterable[_Union[JobUsage, _Mapping]]] = ..., rtt_s: _Optional[float] = ..., wants_echo: _Optional[bool] = ..., bandwidth_bps: _Optional[float] = ..., peers: _Optional[_Iterable[_Union[PeerSample, _Mapping]]] = ...) -> None: ...

class PeerSample(_message.Message):
    __slots__ = ("site", "rtt_s", "bandwidth_bps")
    SITE_FIELD_NUMBER: _ClassVar[int]
    RTT_S_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BPS_FIELD_NUMBER: _ClassVar[int]
    site: str
    rtt_s: float
    bandwidth_bps: float
    def __init__(self, site: _Optional[str] = ..., rtt_s: _Optional[float] = ..., bandwidth_bps: _Optional[float] = ...) -> None: ...

class JobStarted(_message.Message):
    __slots__ = ("job_id", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("ok", "failure_code", "error_type", "error_message", "error_traceback", "load_seconds", "run_seconds", "memory_used_bytes")
    OK_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    failure_code: str
    error_type: str
    error_message: str
    error_traceback: str
    load_seconds: float
    run_seconds: float
    memory_used_bytes: int
    def __init__(self, ok: _Optional[bool] = ..., failure_code: _Optional[str] = ..., error_type: _Optional[str] = ..., error_message: _Optional[str] = ..., error_traceback: _Optional[str] = ..., load_seconds: _Optional[float] = ..., run_seconds: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("job_id", "attempt", "outputs", "node_id", "device_id", "outcome", "outputs_digest")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    outputs: bytes
    node_id: str
    device_id: str
    outcome: Outcome
    outputs_digest: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., outputs: _Optional[bytes] = ..., node_id: _Optional[str] = ..., device_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, _Mapping]] = ..., outputs_digest: _Optional[str] = ...) -> None: ...

class LeasedRun(_message.Message):
    __slots__ = ("lease_id", "job_id", "started_at", "finished_at", "outcome")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    job_id: str
    started_at: float
    finished_at: float
    outcome: Outcome
    def __init__(self, lease_id: _Optional[str] = ..., job_id: _Optional[str] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., outcome: _Optional[_Union[Outcome, _Mapping]] = ...) -> None: ...

class LeasedRuns(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[LeasedRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[LeasedRun, _Mapping]]] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("join", "heartbeat", "started", "result", "leased_runs", "leave")
    JOIN_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    LEASED_RUNS_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    join: Join
    heartbeat: Heartbeat
    started: JobStarted
    result: JobResult
    leased_runs: LeasedRuns
    leave: Leave
    def __init__(self, join: _Optional[_Union[Join, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., started: _Optional[_Union[JobStarted, _Mapping]] = ..., result: _Optional[_Union[JobResult, _Mapping]] = ..., leased_runs: _Optional[_Union[LeasedRuns, _Mapping]] = ..., leave: _Optional[_Union[Leave, _Mapping]] = ...) -> None: ...

class Leave(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class JoinAck(_message.Message):
    __slots__ = ("node_id", "heartbeat_interval_s", "lost_after_s", "epoch", "protocol_version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    LOST_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    heartbeat_interval_s: float
    lost_after_s: float
    epoch: int
    protocol_version: int
    def __init__(self, node_id: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ..., lost_after_s: _Optional[float] = ..., epoch: _Optional[int] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class Launch(_message.Message):
    __slots__ = ("job_id", "attempt", "artifact_digest", "device_id", "slice_index", "inputs", "inputs_digest", "timeout_s", "memory_limit_bytes", "compute_milli")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MILLI_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    artifact_digest: str
    device_id: str
    slice_index: int
    inputs: bytes
    inputs_digest: str
    timeout_s: float
    memory_limit_bytes: int
    compute_milli: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., artifact_digest: _Optional[str] = ..., device_id: _Optional[str] = ..., slice_index: _Optional[int] = ..., inputs: _Optional[bytes] = ..., inputs_digest: _Optional[str] = ..., timeout_s: _Optional[float] = ..., memory_limit_bytes: _Optional[int] = ..., compute_milli: _Optional[int] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("job_id", "attempt", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "node_id", "device_id", "slice_index", "artifact_digest", "address")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    node_id: str
    device_id: str
    slice_index: int
    artifact_digest: str
    address: str
    def __init__(self, lease_id: _Optional[str] = ..., node_id: _Optional[str] = ..., device_id: _Optional[str] = ..., slice_index: _Optional[int] = ..., artifact_digest: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class LeaseGranted(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class LeaseRevoked(_message.Message):
    __slots__ = ("lease_id", "reason")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    reason: str
    def __init__(self, lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class HeartbeatEcho(_message.Message):
    __slots__ = ("sent_at", "held_s")
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    HELD_S_FIELD_NUMBER: _ClassVar[int]
    sent_at: float
    held_s: float
    def __init__(self, sent_at: _Optional[float] = ..., held_s: _Optional[float] = ...) -> None: ...

class SchedulerMessage(_message.Message):
    __slots__ = ("ack", "launch", "cancel", "lease_granted", "lease_revoked", "echo", "peers")
    ACK_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANTED_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    ECHO_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    ack: JoinAck
    launch: Launch
    cancel: Cancel
    lease_granted: LeaseGranted
    lease_revoked: LeaseRevoked
    echo: HeartbeatEcho
    peers: Peers
    def __init__(self, ack: _Optional[_Union[JoinAck, _Mapping]] = ..., launch: _Optional[_Union[Launch, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., lease_granted: _Optional[_Union[LeaseGranted, _Mapping]] = ..., lease_revoked: _Optional[_Union[LeaseRevoked, _Mapping]] = ..., echo: _Optional[_Union[HeartbeatEcho, _Mapping]] = ..., peers: _Optional[_Union[Peers, _Mapping]] = ...) -> None: ...

class Peers(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[Peer]
    def __init__(self, peers: _Optional[_Iterable[_Union[Peer, _Mapping]]] = ...) -> None: ...

class Peer(_message.Message):
    __slots__ = ("node_id", "site", "direct_address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    DIRECT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    site: str
    direct_address: str
    def __init__(self, node_id: _Optional[str] = ..., site: _Optional[str] = ..., direct_address: _Optional[str] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class ProbeReply(_message.Message):
    __slots__ = ("received_bytes",)
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    received_bytes: int
    def __init__(self, received_bytes: _Optional[int] = ...) -> None: ...

class LookUpDeploymentRequest(_message.Message):
    __slots__ = ("node_id", "name", "token", "wake_replicas", "calls", "times")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    WAKE_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    token: str
    wake_replicas: int
    calls: _containers.RepeatedCompositeFieldContainer[DeploymentCalls]
    times: _containers.RepeatedCompositeFieldContainer[CallTimes]
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ..., token: _Optional[str] = ..., wake_replicas: _Optional[int] = ..., calls: _Optional[_Iterable[_Union[DeploymentCalls, _Mapping]]] = ..., times: _Optional[_Iterable[_Union[CallTimes, _Mapping]]] = ...) -> None: ...

class LookUpDeploymentReply(_message.Message):
    __slots__ = ("found", "deployment", "deployed", "refusal")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    found: bool
    deployment: DeploymentInfo
    deployed: _containers.RepeatedScalarFieldContainer[str]
    refusal: str
    def __init__(self, found: _Optional[bool] = ..., deployment: _Optional[_Union[DeploymentInfo, _Mapping]] = ..., deployed: _Optional[_Iterable[str]] = ..., refusal: _Optional[str] = ...) -> None: ...

class Profile(_message.Message):
    __slots__ = ("flops", "memory_bytes", "input_bytes", "output_bytes", "param_bytes", "operator_calls", "matmul_flops", "conv_flops", "attention_flops", "bytes_moved")
    FLOPS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    INPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    PARAM_BYTES_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_CALLS_FIELD_NUMBER: _ClassVar[int]
    MATMUL_FLOPS_FIELD_NUMBER: _ClassVar[int]
    CONV_FLOPS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_FLOPS_FIELD_NUMBER: _ClassVar[int]
    BYTES_MOVED_FIELD_NUMBER: _ClassVar[int]
    flops: float
    memory_bytes: int
    input_bytes: int
    output_bytes: int
    param_bytes: int
    operator_calls: int
    matmul_flops: float
    conv_flops: float
    attention_flops: float
    bytes_moved: int
    def __init__(self, flops: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., input_bytes: _Optional[int] = ..., output_bytes: _Optional[int] = ..., param_bytes: _Optional[int] = ..., operator_calls: _Optional[int] = ..., matmul_flops: _Optional[float] = ..., conv_flops: _Optional[float] = ..., attention_flops: _Optional[float] = ..., bytes_moved: _Optional[int] = ...) -> None: ...

class Constraints(_message.Message):
    __slots__ = ("device_kinds", "tiers", "sites", "nodes", "labels")
    DEVICE_KINDS_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    SITES_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    device_kinds: _containers.RepeatedScalarFieldContainer[str]
    tiers: _containers.RepeatedScalarFieldContainer[str]
    sites: _containers.RepeatedScalarFieldContainer[str]
    nodes: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.RepeatedCompositeFieldContainer[LabelRequirement]
    def __init__(self, device_kinds: _Optional[_Iterable[str]] = ..., tiers: _Optional[_Iterable[str]] = ..., sites: _Optional[_Iterable[str]] = ..., nodes: _Optional[_Iterable[str]] = ..., labels: _Optional[_Iterable[_Union[LabelRequirement, _Mapping]]] = ...) -> None: ...

class LabelRequirement(_message.Message):
    __slots__ = ("key", "operator", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    operator: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., operator: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("artifact_digest", "inputs", "inputs_digest", "profile", "constraints", "origin", "priority", "slo_seconds", "name", "timeout_s", "max_retries", "wait", "wait_timeout_s", "lease", "compute_milli", "precision", "operators", "deadline_ms", "best_effort", "splits", "round_trips")
    ARTIFACT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SLO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MILLI_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    BEST_EFFORT_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    ROUND_TRIPS_FIELD_NUMBER: _ClassVar[int]
    artifact_digest: str
    inputs: bytes
    inputs_digest: str
    profile: Profile
    constraints: Constraints
    origin: str
    priority: int
    slo_seconds: float
    name: str
    timeout_s: float
    max_retries: int
    wait: bool
    wait_timeout_s: float
    lease: bool
    compute_milli: int
    precision: str
    operators: _containers.RepeatedScalarFieldContainer[str]
    deadline_ms: float
    best_effort: bool
    splits: _containers.RepeatedCompositeFieldContainer[SplitOption]
    round_trips: _containers.RepeatedCompositeFieldContainer[RoundTrip]
    def __init__(self, artifact_digest: _Optional[str] = ..., inputs: _Optional[bytes] = ..., inputs_digest: _Optional[str] = ..., profile: _Optional[_Union[Profile, _Mapping]] = ..., constraints: _Optional[_Union[Constraints, _Mapping]] = ..., origin: _Optional[str] = ..., priority: _Optional[int] = ..., slo_seconds: _Optional[float] = ..., name: _Optional[str] = ..., timeout_s: _Optional[float] = ..., max_retries: _Optional[int] = ..., wait: _Optional[bool] = ..., wait_timeout_s: _Optional[float] = ..., lease: _Optional[bool] = ..., compute_milli: _Optional[int] = ..., precision: _Optional[str] = ..., operators: _Optional[_Iterable[str]] = ..., deadline_ms: _Optional[float] = ..., best_effort: _Optional[bool] = ..., splits: _Optional[_Iterable[_Union[SplitOption, _Mapping]]] = ..., round_trips: _Optional[_Iterable[_Union[RoundTrip, _Mapping]]] = ...) -> None: ...

class RoundTrip(_message.Message):
    __slots__ = ("vertex", "rtt_s")
    VERTEX_FIELD_NUMBER: _ClassVar[int]
    RTT_S_FIELD_NUMBER: _ClassVar[int]
    vertex: str
    rtt_s: float
    def __init__(self, vertex: _Optional[str] = ..., rtt_s: _Optional[float] = ...) -> None: ...

class SplitOption(_message.Message):
    __slots__ = ("label", "activation_bytes", "head", "tail")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BYTES_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    label: str
    activation_bytes: int
    head: SubmitRequest
    tail: SubmitRequest
    def __init__(self, label: _Optional[str] = ..., activation_bytes: _Optional[int] = ..., head: _Optional[_Union[SubmitRequest, _Mapping]] = ..., tail: _Optional[_Union[SubmitRequest, _Mapping]] = ...) -> None: ...

class Term(_message.Message):
    __slots__ = ("name", "seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    seconds: float
    def __init__(self, name: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...

class PlacementInfo(_message.Message):
    __slots__ = ("node_id", "device_id", "slice_index", "predicted_seconds", "terms", "solver", "tier", "device_description", "simulated", "runner_up_node", "runner_up_device", "runner_up_seconds", "runner_up_terms", "memory_bytes", "milli", "compute_from")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    SOLVER_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    RUNNER_UP_NODE_FIELD_NUMBER: _ClassVar[int]
    RUNNER_UP_DEVICE_FIELD_NUMBER: _ClassVar[int]
    RUNNER_UP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RUNNER_UP_TERMS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MILLI_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FROM_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    device_id: str
    slice_index: int
    predicted_seconds: float
    terms: _containers.RepeatedCompositeFieldContainer[Term]
    solver: str
    tier: str
    device_description: str
    simulated: bool
    runner_up_node: str
    runner_up_device: str
    runner_up_seconds: float
    runner_up_terms: _containers.RepeatedCompositeFieldContainer[Term]
    memory_bytes: int
    milli: int
    compute_from: str
    def __init__(self, node_id: _Optional[str] = ..., device_id: _Optional[str] = ..., slice_index: _Optional[int] = ..., predicted_seconds: _Optional[float] = ..., terms: _Optional[_Iterable[_Union[Term, _Mapping]]] = ..., solver: _Optional[str] = ..., tier: _Optional[str] = ..., device_description: _Optional[str] = ..., simulated: _Optional[bool] = ..., runner_up_node: _Optional[str] = ..., runner_up_device: _Optional[str] = ..., runner_up_seconds: _Optional[float] = ..., runner_up_terms: _Optional[_Iterable[_Union[Term, _Mapping]]] = ..., memory_bytes: _Optional[int] = ..., milli: _Optional[int] = ..., compute_from: _Optional[str] = ...) -> None: ...

class NodeReason(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "state", "name", "attempt", "placement", "pending_reasons", "submitted_at", "finished_at", "unschedulable", "origin", "artifact_digest", "latency_seconds", "outcome", "outputs_digest", "deadline_ms", "split", "head_job_id", "origin_inferred")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASONS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    UNSCHEDULABLE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    LATENCY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    HEAD_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_INFERRED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: str
    name: str
    attempt: int
    placement: PlacementInfo
    pending_reasons: _containers.RepeatedCompositeFieldContainer[NodeReason]
    submitted_at: float
    finished_at: float
    unschedulable: bool
    origin: str
    artifact_digest: str
    latency_seconds: float
    outcome: Outcome
    outputs_digest: str
    deadline_ms: float
    split: str
    head_job_id: str
    origin_inferred: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[str] = ..., name: _Optional[str] = ..., attempt: _Optional[int] = ..., placement: _Optional[_Union[PlacementInfo, _Mapping]] = ..., pending_reasons: _Optional[_Iterable[_Union[NodeReason, _Mapping]]] = ..., submitted_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., unschedulable: _Optional[bool] = ..., origin: _Optional[str] = ..., artifact_digest: _Optional[str] = ..., latency_seconds: _Optional[float] = ..., outcome: _Optional[_Union[Outcome, _Mapping]] = ..., outputs_digest: _Optional[str] = ..., deadline_ms: _Optional[float] = ..., split: _Optional[str] = ..., head_job_id: _Optional[str] = ..., origin_inferred: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("job", "outputs", "lease")
    JOB_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    outputs: bytes
    lease: Lease
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ..., outputs: _Optional[bytes] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class WaitRequest(_message.Message):
    __slots__ = ("job_id", "timeout_s")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    timeout_s: float
    def __init__(self, job_id: _Optional[str] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class WaitResponse(_message.Message):
    __slots__ = ("job", "outputs", "timed_out")
    JOB_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    outputs: bytes
    timed_out: bool
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ..., outputs: _Optional[bytes] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("limit", "state")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    limit: int
    state: str
    def __init__(self, limit: _Optional[int] = ..., state: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "tier", "site", "state", "labels", "devices", "usage", "warm_digests", "last_heartbeat_age_s", "running_jobs", "epoch", "job_usage", "reservations", "rtt_p50_s", "rtt_p95_s", "rtt_age_s", "bandwidth_bps", "bandwidth_age_s", "direct_address", "peers")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    WARM_DIGESTS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    JOB_USAGE_FIELD_NUMBER: _ClassVar[int]
    RESERVATIONS_FIELD_NUMBER: _ClassVar[int]
    RTT_P50_S_FIELD_NUMBER: _ClassVar[int]
    RTT_P95_S_FIELD_NUMBER: _ClassVar[int]
    RTT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BPS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_AGE_S_FIELD_NUMBER: _ClassVar[int]
    DIRECT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    tier: str
    site: str
    state: str
    labels: _containers.ScalarMap[str, str]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    usage: _containers.RepeatedCompositeFieldContainer[DeviceUsage]
    warm_digests: _containers.RepeatedScalarFieldContainer[str]
    last_heartbeat_age_s: float
    running_jobs: int
    epoch: int
    job_usage: _containers.RepeatedCompositeFieldContainer[JobUsage]
    reservations: _containers.RepeatedCompositeFieldContainer[Reservation]
    rtt_p50_s: float
    rtt_p95_s: float
    rtt_age_s: float
    bandwidth_bps: float
    bandwidth_age_s: float
    direct_address: str
    peers: _containers.RepeatedCompositeFieldContainer[PeerSample]
    def __init__(self, node_id: _Optional[str] = ..., tier: _Optional[str] = ..., site: _Optional[str] = ..., state: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., usage: _Optional[_Iterable[_Union[DeviceUsage, _Mapping]]] = ..., warm_digests: _Optional[_Iterable[str]] = ..., last_heartbeat_age_s: _Optional[float] = ..., running_jobs: _Optional[int] = ..., epoch: _Optional[int] = ..., job_usage: _Optional[_Iterable[_Union[JobUsage, _Mapping]]] = ..., reservations: _Optional[_Iterable[_Union[Reservation, _Mapping]]] = ..., rtt_p50_s: _Optional[float] = ..., rtt_p95_s: _Optional[float] = ..., rtt_age_s: _Optional[float] = ..., bandwidth_bps: _Optional[float] = ..., bandwidth_age_s: _Optional[float] = ..., direct_address: _Optional[str] = ..., peers: _Optional[_Iterable[_Union[PeerSample, _Mapping]]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("tier", "kind", "devices", "simulated", "slices", "reserved_slices", "memory_bytes", "reserved_memory_bytes", "tflops", "reserved_tflops")
    TIER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    RESERVED_SLICES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESERVED_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    TFLOPS_FIELD_NUMBER: _ClassVar[int]
    RESERVED_TFLOPS_FIELD_NUMBER: _ClassVar[int]
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
    def __init__(self, tier: _Optional[str] = ..., kind: _Optional[str] = ..., devices: _Optional[int] = ..., simulated: _Optional[int] = ..., slices: _Optional[int] = ..., reserved_slices: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., reserved_memory_bytes: _Optional[int] = ..., tflops: _Optional[float] = ..., reserved_tflops: _Optional[float] = ...) -> None: ...

class DeviceReservation(_message.Message):
    __slots__ = ("node_id", "device_id", "reserved_slices")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVED_SLICES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    device_id: str
    reserved_slices: int
    def __init__(self, node_id: _Optional[str] = ..., device_id: _Optional[str] = ..., reserved_slices: _Optional[int] = ...) -> None: ...

class UsageRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UsageResponse(_message.Message):
    __slots__ = ("rows", "fragmentation", "reserved")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTATION_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    fragmentation: float
    reserved: _containers.RepeatedCompositeFieldContainer[DeviceReservation]
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., fragmentation: _Optional[float] = ..., reserved: _Optional[_Iterable[_Union[DeviceReservation, _Mapping]]] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("name", "request", "replicas", "inputs", "outputs", "min_replicas", "max_replicas", "canary_percent", "caller_token_sha256", "autoscaling")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CALLER_TOKEN_SHA256_FIELD_NUMBER: _ClassVar[int]
    AUTOSCALING_FIELD_NUMBER: _ClassVar[int]
    name: str
    request: SubmitRequest
    replicas: int
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    min_replicas: int
    max_replicas: int
    canary_percent: int
    caller_token_sha256: str
    autoscaling: Autoscaling
    def __init__(self, name: _Optional[str] = ..., request: _Optional[_Union[SubmitRequest, _Mapping]] = ..., replicas: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., canary_percent: _Optional[int] = ..., caller_token_sha256: _Optional[str] = ..., autoscaling: _Optional[_Union[Autoscaling, _Mapping]] = ...) -> None: ...

class Autoscaling(_message.Message):
    __slots__ = ("target_in_flight", "target_latency_s", "scale_down_after_s", "scale_to_zero_after_s")
    TARGET_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    TARGET_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    SCALE_DOWN_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    SCALE_TO_ZERO_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    target_in_flight: float
    target_latency_s: float
    scale_down_after_s: float
    scale_to_zero_after_s: float
    def __init__(self, target_in_flight: _Optional[float] = ..., target_latency_s: _Optional[float] = ..., scale_down_after_s: _Optional[float] = ..., scale_to_zero_after_s: _Optional[float] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ScaleDeploymentRequest(_message.Message):
    __slots__ = ("name", "replicas", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    replicas: int
    reason: str
    def __init__(self, name: _Optional[str] = ..., replicas: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class DeleteDeploymentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeploymentCalls(_message.Message):
    __slots__ = ("deployment", "calls")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    calls: int
    def __init__(self, deployment: _Optional[str] = ..., calls: _Optional[int] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("calls", "origin", "round_trips", "times")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    ROUND_TRIPS_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[DeploymentCalls]
    origin: str
    round_trips: _containers.RepeatedCompositeFieldContainer[RoundTrip]
    times: _containers.RepeatedCompositeFieldContainer[CallTimes]
    def __init__(self, calls: _Optional[_Iterable[_Union[DeploymentCalls, _Mapping]]] = ..., origin: _Optional[str] = ..., round_trips: _Optional[_Iterable[_Union[RoundTrip, _Mapping]]] = ..., times: _Optional[_Iterable[_Union[CallTimes, _Mapping]]] = ...) -> None: ...

class CallTimes(_message.Message):
    __slots__ = ("deployment", "buckets", "seconds")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    deployment: str
    buckets: _containers.RepeatedScalarFieldContainer[int]
    seconds: float
    def __init__(self, deployment: _Optional[str] = ..., buckets: _Optional[_Iterable[int]] = ..., seconds: _Optional[float] = ...) -> None: ...

class RolloutDeploymentRequest(_message.Message):
    __slots__ = ("name", "action")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    action: str
    def __init__(self, name: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class Replica(_message.Message):
    __slots__ = ("replica_id", "state", "node_id", "device_id", "tier", "lease", "version", "placed_for")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLACED_FOR_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    state: str
    node_id: str
    device_id: str
    tier: str
    lease: Lease
    version: int
    placed_for: str
    def __init__(self, replica_id: _Optional[str] = ..., state: _Optional[str] = ..., node_id: _Optional[str] = ..., device_id: _Optional[str] = ..., tier: _Optional[str] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ..., version: _Optional[int] = ..., placed_for: _Optional[str] = ...) -> None: ...

class SiteCalls(_message.Message):
    __slots__ = ("site", "calls")
    SITE_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    site: str
    calls: int
    def __init__(self, site: _Optional[str] = ..., calls: _Optional[int] = ...) -> None: ...

class DeploymentInfo(_message.Message):
    __slots__ = ("name", "artifact_digest", "replicas_wanted", "replicas", "created_at", "message", "model_name", "inputs", "outputs", "min_replicas", "max_replicas", "events", "version", "calls_per_s", "run_p50_s", "run_p99_s", "canary_percent", "stable_version", "caller_token", "cold_starts", "last_cold_start_s", "autoscaling", "traffic", "caller_calls_per_s", "caller_p50_s", "caller_p99_s", "caller_buckets", "caller_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_WANTED_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    MIN_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CALLS_PER_S_FIELD_NUMBER: _ClassVar[int]
    RUN_P50_S_FIELD_NUMBER: _ClassVar[int]
    RUN_P99_S_FIELD_NUMBER: _ClassVar[int]
    CANARY_PERCENT_FIELD_NUMBER: _ClassVar[int]
    STABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CALLER_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COLD_STARTS_FIELD_NUMBER: _ClassVar[int]
    LAST_COLD_START_S_FIELD_NUMBER: _ClassVar[int]
    AUTOSCALING_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_FIELD_NUMBER: _ClassVar[int]
    CALLER_CALLS_PER_S_FIELD_NUMBER: _ClassVar[int]
    CALLER_P50_S_FIELD_NUMBER: _ClassVar[int]
    CALLER_P99_S_FIELD_NUMBER: _ClassVar[int]
    CALLER_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    CALLER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    artifact_digest: str
    replicas_wanted: int
    replicas: _containers.RepeatedCompositeFieldContainer[Replica]
    created_at: float
    message: str
    model_name: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    min_replicas: int
    max_replicas: int
    events: _containers.RepeatedScalarFieldContainer[str]
    version: int
    calls_per_s: float
    run_p50_s: float
    run_p99_s: float
    canary_percent: int
    stable_version: int
    caller_token: bool
    cold_starts: int
    last_cold_start_s: float
    autoscaling: Autoscaling
    traffic: _containers.RepeatedCompositeFieldContainer[SiteCalls]
    caller_calls_per_s: float
    caller_p50_s: float
    caller_p99_s: float
    caller_buckets: _containers.RepeatedScalarFieldContainer[int]
    caller_seconds: float
    def __init__(self, name: _Optional[str] = ..., artifact_digest: _Optional[str] = ..., replicas_wanted: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[Replica, _Mapping]]] = ..., created_at: _Optional[float] = ..., message: _Optional[str] = ..., model_name: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., min_replicas: _Optional[int] = ..., max_replicas: _Optional[int] = ..., events: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ..., calls_per_s: _Optional[float] = ..., run_p50_s: _Optional[float] = ..., run_p99_s: _Optional[float] = ..., canary_percent: _Optional[int] = ..., stable_version: _Optional[int] = ..., caller_token: _Optional[bool] = ..., cold_starts: _Optional[int] = ..., last_cold_start_s: _Optional[float] = ..., autoscaling: _Optional[_Union[Autoscaling, _Mapping]] = ..., traffic: _Optional[_Iterable[_Union[SiteCalls, _Mapping]]] = ..., caller_calls_per_s: _Optional[float] = ..., caller_p50_s: _Optional[float] = ..., caller_p99_s: _Optional[float] = ..., caller_buckets: _Optional[_Iterable[int]] = ..., caller_seconds: _Optional[float] = ...) -> None: ...

class DeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: DeploymentInfo
    def __init__(self, deployment: _Optional[_Union[DeploymentInfo, _Mapping]] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments",)
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[DeploymentInfo]
    def __init__(self, deployments: _Optional[_Iterable[_Union[DeploymentInfo, _Mapping]]] = ...) -> None: ...

class CreateJoinTokenRequest(_message.Message):
    __slots__ = ("ttl_s", "tiers", "max_devices", "max_memory_bytes")
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVICES_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    ttl_s: float
    tiers: _containers.RepeatedScalarFieldContainer[str]
    max_devices: int
    max_memory_bytes: int
    def __init__(self, ttl_s: _Optional[float] = ..., tiers: _Optional[_Iterable[str]] = ..., max_devices: _Optional[int] = ..., max_memory_bytes: _Optional[int] = ...) -> None: ...

class CreateJoinTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class ListJoinTokensRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JoinTokenInfo(_message.Message):
    __slots__ = ("id", "created_at", "expires_at", "tiers", "max_devices", "max_memory_bytes", "state", "used_by")
    ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    MAX_DEVICES_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    USED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    created_at: float
    expires_at: float
    tiers: str
    max_devices: int
    max_memory_bytes: int
    state: str
    used_by: str
    def __init__(self, id: _Optional[str] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., tiers: _Optional[str] = ..., max_devices: _Optional[int] = ..., max_memory_bytes: _Optional[int] = ..., state: _Optional[str] = ..., used_by: _Optional[str] = ...) -> None: ...

class ListJoinTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[JoinTokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[JoinTokenInfo, _Mapping]]] = ...) -> None: ...

class RemoveNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class RemoveNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: NodeInfo
    def __init__(self, node: _Optional[_Union[NodeInfo, _Mapping]] = ...) -> None: ...

class HasBlobsRequest(_message.Message):
    __slots__ = ("digests",)
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    digests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, digests: _Optional[_Iterable[str]] = ...) -> None: ...

class HasBlobsResponse(_message.Message):
    __slots__ = ("missing",)
    MISSING_FIELD_NUMBER: _ClassVar[int]
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, missing: _Optional[_Iterable[str]] = ...) -> None: ...

class BlobChunk(_message.Message):
    __slots__ = ("digest", "total_bytes", "data")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    digest: str
    total_bytes: int
    data: bytes
    def __init__(self, digest: _Optional[str] = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class PutBlobResponse(_message.Message):
    __slots__ = ("digest", "stored_bytes")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    digest: str
    stored_bytes: int
    def __init__(self, digest: _Optional[str] = ..., stored_bytes: _Optional[int] = ...) -> None: ...

class GetBlobRequest(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    def __init__(self, digest: _Optional[str] = ...) -> None: ...

class DirectRunRequest(_message.Message):
    __slots__ = ("lease_id", "inputs")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    inputs: bytes
    def __init__(self, lease_id: _Optional[str] = ..., inputs: _Optional[bytes] = ...) -> None: ...

class DirectRunResponse(_message.Message):
    __slots__ = ("lease_lost", "result", "worker_address")
    LEASE_LOST_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    lease_lost: bool
    result: JobResult
    worker_address: str
    def __init__(self, lease_lost: _Optional[bool] = ..., result: _Optional[_Union[JobResult, _Mapping]] = ..., worker_address: _Optional[str] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
