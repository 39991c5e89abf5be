"""The wire both sides share: channels, error mapping, frames, TLS, enrolment messages.

Agents, the scheduler and SDK clients meet only here (and in ``anypu.protos``, the
messages themselves): this package imports neither ``anypu.agents`` nor
``anypu.scheduler``, as Dask's ``distributed.comm`` serves its scheduler and workers.

- ``grpc_channel`` / ``server_options``: every connection is opened with the same limits
  and keepalives; ``raise_for_rpc`` turns a failed call into an ``anypu.errors`` error.
- ``read_frame`` / ``write_frame``: versioned frames between an agent and its workers, and
  between a client and a leased worker.
- TLS: the cluster CA, node and scheduler certificates, the CA pinned by hash.
- Enrolment: the messages a node exchanges to spend a join token on a certificate.
- ``ReplicaBalancer``: which replica a caller's next call goes to (predicted answer time).
- ``CallLog``: a caller's calls and end-to-end times, in buckets, for the scheduler.
- ``InferenceGateway`` / ``inference_handler``: the Open Inference Protocol over HTTP and
  gRPC, at the scheduler or a gateway agent, from a ``DeploymentDirectory``;
  ``FailureThrottle``: how both slow down token guessing; ``watch_gateway``: a gateway's
  requests and latency for Prometheus, at either.
"""

from anypu.comm._balance import DECAY_S, FAILURE_PENALTY_S, ReplicaBalancer
from anypu.comm._call_times import CALL_SECONDS_BUCKETS, CallLog, merged, quantile
from anypu.comm._channels import (
    BLOB_CHUNK_BYTES,
    INLINE_BYTES,
    MAX_MESSAGE_BYTES,
    MISSING_BLOB_KEY,
    MissingBlobError,
    grpc_channel,
    raise_for_rpc,
    server_options,
)
from anypu.comm._enrolment import (
    ENROL_METHOD,
    INFO_METHOD,
    MAX_JSON_BYTES,
    AgentPortInfo,
    EnrolAnswer,
    EnrolRequest,
    decode_json,
    encode_json,
)
from anypu.comm._frames import (
    FRAME_VERSION,
    Channel,
    FrameError,
    read_frame,
    result_from_frame,
    result_to_frame,
    write_frame,
)
from anypu.comm._gateway import (
    INFO_TTL_S,
    MAX_INFER_BYTES,
    DeploymentDirectory,
    GatewayRefusal,
    InferenceGateway,
)
from anypu.comm._gateway_grpc import inference_handler
from anypu.comm._gateway_http import GatewayHTTPServer, answer_over_http
from anypu.comm._gateway_metrics import ThrottleCollector, watch_gateway
from anypu.comm._throttle import FailureThrottle, ThrottledError, http_peer, peer_host
from anypu.comm._tls import (
    SERVER_NAME,
    CertificateAuthority,
    Identity,
    cert_hash,
    channel_credentials,
    client_ca,
    common_name,
    fetch_ca,
    new_key_and_csr,
    parse_ca_hash,
    server_credentials,
    serves_tls,
    speaks_tls,
)

__all__ = [
    "BLOB_CHUNK_BYTES",
    "CALL_SECONDS_BUCKETS",
    "DECAY_S",
    "ENROL_METHOD",
    "FAILURE_PENALTY_S",
    "FRAME_VERSION",
    "INFO_METHOD",
    "INFO_TTL_S",
    "INLINE_BYTES",
    "MAX_INFER_BYTES",
    "MAX_JSON_BYTES",
    "MAX_MESSAGE_BYTES",
    "MISSING_BLOB_KEY",
    "SERVER_NAME",
    "AgentPortInfo",
    "CallLog",
    "CertificateAuthority",
    "Channel",
    "DeploymentDirectory",
    "EnrolAnswer",
    "EnrolRequest",
    "FailureThrottle",
    "FrameError",
    "GatewayHTTPServer",
    "GatewayRefusal",
    "Identity",
    "InferenceGateway",
    "MissingBlobError",
    "ReplicaBalancer",
    "ThrottleCollector",
    "ThrottledError",
    "answer_over_http",
    "cert_hash",
    "channel_credentials",
    "client_ca",
    "common_name",
    "decode_json",
    "encode_json",
    "fetch_ca",
    "grpc_channel",
    "http_peer",
    "inference_handler",
    "merged",
    "new_key_and_csr",
    "parse_ca_hash",
    "peer_host",
    "quantile",
    "raise_for_rpc",
    "read_frame",
    "result_from_frame",
    "result_to_frame",
    "server_credentials",
    "server_options",
    "serves_tls",
    "speaks_tls",
    "watch_gateway",
    "write_frame",
]
