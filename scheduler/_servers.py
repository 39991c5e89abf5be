"""The scheduler's gRPC ports, started together: ``serve``.

- The **client port** (``--port``): SDK clients, ``anypu`` commands, the inference
  protocol's gRPC, enrolment; sync gRPC, a thread per call, which answers a unary call
  faster than an event loop does here (measured: 32 KiB echo, median 0.64 ms against
  0.72–0.84 ms). With ``--insecure`` agents may join here too, a stream holding two
  threads (fine for hundreds; ``AgentStream`` does the same work either way).
- The **agent port** (``--agent-port``, default ``--port`` + 1): agents' streams, blobs
  and probes from one event loop (``_agent_port``): mutual TLS with node certificates,
  or plaintext with ``--insecure``. Agents enrolled with ``--ca-hash`` find it through
  the client port's ``Info``; plaintext ones are pointed at it.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc

from anypu.comm import (
    FailureThrottle,
    InferenceGateway,
    channel_credentials,
    inference_handler,
    server_credentials,
    server_options,
)
from anypu.errors import ConfigError
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.scheduler._agent_port import AgentPort
from anypu.scheduler._grpc import AgentServicer, BlobServicer, EnrolmentServicer, JobServicer
from anypu.scheduler._guard import DecodeGuard
from anypu.scheduler._inference import scheduler_gateway
from anypu.scheduler._security import ServerSecurity
from anypu.scheduler._service import SchedulerService

__all__ = ["Servers", "serve"]

#: Client calls in flight at once (a waiting ``sdk.run`` holds one); threads start lazily.
MAX_HANDLER_THREADS = 4096


class Servers:
    """The client port's server and the agent port, stopped together."""

    def __init__(self, clients: grpc.Server, agents: AgentPort) -> None:
        self.clients = clients
        self.agents = agents

    @property
    def agent_port(self) -> int:
        return self.agents.port

    def stop(self, grace: float | None = None) -> threading.Event:
        """Stop both; the event is set once they have (as ``grpc.Server.stop``'s)."""
        stopped = self.clients.stop(grace)
        self.agents.stop(grace)
        return stopped

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.clients.wait_for_termination(timeout)


def serve(
    service: SchedulerService,
    host: str = "127.0.0.1",
    port: int = 0,
    security: ServerSecurity | None = None,
    agent_port: int | None = 0,
    throttle: FailureThrottle | None = None,
    inference: InferenceGateway | None = None,
) -> tuple[Servers, int]:
    """Start the client port and the agent port (module docstring); return both and the
    bound client port.

    With ``security`` the client port speaks TLS and the agent port (``agent_port``;
    None or 0: a free one; recorded in ``security.agent_port``) mutual TLS; without it
    both are plaintext (``--insecure``; the agent port's number is ``Servers.agent_port``).
    ``throttle``: how failed authentications are rate-limited (default
    ``security.throttle``, else 5 per minute per peer). The Open Inference Protocol's
    gRPC service is served beside the SDK's, through ``inference`` (default: a gateway
    of its own that calls replicas over the CA's TLS).
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=MAX_HANDLER_THREADS, thread_name_prefix="anypu-grpc"
        ),
        interceptors=[DecodeGuard()],
        options=server_options(),
    )
    if throttle is None:
        throttle = security.throttle if security is not None else FailureThrottle()
    rpc.add_AgentServiceServicer_to_server(AgentServicer(service, throttle, security), server)
    rpc.add_JobServiceServicer_to_server(JobServicer(service, throttle, security), server)
    rpc.add_BlobServiceServicer_to_server(BlobServicer(service, throttle, security), server)
    if inference is None:
        direct = channel_credentials(security.ca.cert_pem) if security is not None else None
        inference = scheduler_gateway(service, direct, throttle)
    server.add_generic_rpc_handlers((inference_handler(inference),))
    if security is None:
        bound = server.add_insecure_port(f"{host}:{port}")
    else:
        server.add_generic_rpc_handlers((EnrolmentServicer(security, throttle).handler(),))
        ca, identity = security.ca.cert_pem, security.server
        bound = server.add_secure_port(f"{host}:{port}", server_credentials(identity, ca, False))
    if bound == 0:
        raise ConfigError(f"cannot listen on {host}:{port}: is another process using the port?")
    agents = AgentPort(service, host, agent_port or 0, security, throttle)
    if security is not None:
        security.agent_port = agents.port
    server.start()
    return Servers(server, agents), bound
