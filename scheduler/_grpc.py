"""gRPC servicers: thin adapters from the wire to ``SchedulerService``.

Clients authenticate with ``authorization: Bearer <token>`` metadata; agents carry the
token in their Join. Errors a user can cause map to gRPC status codes with a message
that says what to change: a bad token is UNAUTHENTICATED, a bad request
INVALID_ARGUMENT, an unknown job NOT_FOUND.
"""

from __future__ import annotations

import itertools
import logging
import queue
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import replace
from typing import Any, NoReturn, cast

import grpc

from anypu.comm import (
    BLOB_CHUNK_BYTES,
    ENROL_METHOD,
    INFO_METHOD,
    MISSING_BLOB_KEY,
    EnrolRequest,
    FailureThrottle,
    InferenceGateway,
    MissingBlobError,
    ThrottledError,
    channel_credentials,
    inference_handler,
    server_credentials,
    server_options,
)
from anypu.devices import format_bytes
from anypu.errors import AuthenticationError, ConfigError
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.protos import convert
from anypu.protos import messages as m
from anypu.scheduler._guard import DecodeGuard
from anypu.scheduler._inference import scheduler_gateway
from anypu.scheduler._security import ServerSecurity
from anypu.scheduler._service import NotFoundError, SchedulerService
from anypu.scheduler._tokens import AccessDeniedError, NameTakenError

__all__ = ["serve"]

log = logging.getLogger("anypu.scheduler")

MAX_HANDLER_THREADS = 4096
#: The largest bandwidth probe taken (``agents._probes.MAX_BYTES``).
PROBE_LIMIT_BYTES = 8 << 20
_CLOSED = object()
#: Heartbeat arrival times kept per stream for their echoes (one a second is asked for).
_ARRIVALS_KEPT = 64


def _fail(context: grpc.ServicerContext, error: Exception) -> NoReturn:
    if isinstance(error, ThrottledError):
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    if isinstance(error, AccessDeniedError):
        context.abort(grpc.StatusCode.PERMISSION_DENIED, str(error))
    if isinstance(error, NameTakenError):
        context.abort(grpc.StatusCode.ALREADY_EXISTS, str(error))
    if isinstance(error, AuthenticationError):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
    if isinstance(error, MissingBlobError):
        context.set_trailing_metadata(((MISSING_BLOB_KEY, error.digest),))
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
    if isinstance(error, NotFoundError):
        context.abort(grpc.StatusCode.NOT_FOUND, error.args[0])
    if isinstance(error, (ConfigError, ValueError)):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    raise error


def _peer_auth(context: grpc.ServicerContext) -> Mapping[str, Sequence[bytes]]:
    """The call's auth properties: gRPC gives a list of values per key (its stub says one)."""
    return cast(Mapping[str, Sequence[bytes]], context.auth_context())


def _throttled_fail(
    context: grpc.ServicerContext,
    throttle: FailureThrottle,
    credential: str,
    error: AuthenticationError,
) -> NoReturn:
    """Answer a failed authentication, after the throttle's delay (or its refusal)."""
    try:
        throttle.failed(context.peer(), credential)
    except ThrottledError as throttled:
        _fail(context, throttled)
    _fail(context, error)


class _Authenticated:
    def __init__(
        self,
        service: SchedulerService,
        throttle: FailureThrottle | None = None,
        security: ServerSecurity | None = None,
    ) -> None:
        self.service = service
        self.throttle = throttle or FailureThrottle()
        self.security = security

    def _check(self, context: grpc.ServicerContext, nodes_may: bool = False) -> None:
        """Let the call through or abort it; every failure counts against the peer.

        ``nodes_may``: an enrolled node's certificate is enough (agents fetch blobs
        with it); otherwise the bearer token must be the scheduler's.
        """
        token = ""
        try:
            if nodes_may and self.security is not None:
                if self.security.node_enrolment(_peer_auth(context)) is not None:
                    return
            if self.service.token is None:
                return
            metadata = dict(context.invocation_metadata())
            header = metadata.get("authorization", "")
            if isinstance(header, bytes):  # only "-bin" keys carry bytes
                header = header.decode("latin-1")
            token = header[7:] if header.startswith("Bearer ") else ""
            self.service.authenticate(token)
        except AuthenticationError as error:
            _throttled_fail(context, self.throttle, token, error)


class AgentServicer(_Authenticated, rpc.AgentServiceServicer):
    _probe_lock = threading.Lock()

    def _credential(self, context: grpc.ServicerContext) -> Any:
        """With TLS on, the node's enrolment from its certificate (None: plaintext mode)."""
        try:
            if self.security is None:
                return None
            enrolment = self.security.node_enrolment(_peer_auth(context))
            if enrolment is None:
                raise AuthenticationError(
                    "agents connect to the scheduler's agent port with a node certificate:"
                    " start the agent with --ca-hash and a join token to enrol it"
                )
            return enrolment
        except AuthenticationError as error:
            _throttled_fail(context, self.throttle, "", error)

    def Connect(self, request_iterator: Iterator[Any], context: grpc.ServicerContext):  # noqa: N802
        credential = self._credential(context)
        outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        session = self.service.attach_agent(outbox.put, lambda: outbox.put(_CLOSED))
        session.credential = credential
        failure: list[Exception] = []
        peer = context.peer()
        # When each heartbeat that asks for an echo came off the stream, by its sent_at:
        # the echo says how long the scheduler held it (NTP's and TWAMP's correction).
        arrived: dict[float, float] = {}
        arrived_lock = threading.Lock()

        def read() -> None:
            said: object = None
            try:
                for message in request_iterator:
                    said = convert.agent_message_from_pb(message)
                    if isinstance(said, m.Heartbeat) and said.wants_echo:
                        with arrived_lock:
                            arrived[said.sent_at] = time.time()
                            if len(arrived) > _ARRIVALS_KEPT:  # echoes the state did not send
                                del arrived[next(iter(arrived))]
                    session.receive(said)
            except AuthenticationError as error:
                failure.append(error)
                if not isinstance(error, AccessDeniedError):
                    token = said.token if isinstance(said, m.Join) else ""
                    try:
                        self.throttle.failed(peer, token)
                    except ThrottledError as throttled:
                        failure[-1] = throttled
            except (NameTakenError, ConfigError, ValueError) as error:
                failure.append(error)
            except grpc.RpcError:
                pass  # the agent went away; the deadline takes it from here
            except Exception as error:  # keep serving other agents; report this one
                log.exception("agent stream failed")
                failure.append(error)
            finally:
                session.close()
                outbox.put(_CLOSED)

        threading.Thread(target=read, name="anypu-agent-reader", daemon=True).start()
        while True:
            item = outbox.get()
            if item is _CLOSED:
                break
            if isinstance(item, m.HeartbeatEcho):
                with arrived_lock:
                    at = arrived.pop(item.sent_at, None)
                if at is not None:
                    item = replace(item, held_s=max(0.0, time.time() - at))
            yield convert.scheduler_message_to_pb(item)
        if failure:
            _fail(context, failure[0])

    def Probe(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """A bandwidth probe (``agents._probes``): counted, nothing kept."""
        self._check(context, nodes_may=True)
        size = len(request.payload)
        if size > PROBE_LIMIT_BYTES:
            _fail(
                context,
                ConfigError(f"a probe carries at most {PROBE_LIMIT_BYTES} bytes, got {size}"),
            )
        with self._probe_lock:
            self.service.probe_bytes += size
        return convert.pb.ProbeReply(received_bytes=size)

    def LookUpDeployment(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """A gateway agent serving the inference protocol (``agents`` ``--gateway-port``)."""
        self._check(context, nodes_may=True)
        lookup = convert.deployment_lookup_from_pb(request)
        if self.security is not None:  # with TLS the certificate names the node
            enrolment = self.security.node_enrolment(_peer_auth(context))
            if enrolment is not None:
                lookup = replace(lookup, node_id=enrolment.name)
        try:
            reply = self.service.look_up_deployment(lookup)
        except Exception as error:
            _fail(context, error)
        return convert.deployment_lookup_reply_to_pb(reply)


class JobServicer(_Authenticated, rpc.JobServiceServicer):
    def Submit(self, request, context):  # noqa: N802
        self._check(context)
        try:
            submit = convert.submit_request_from_pb(request)
            if submit.wait:
                info, outputs, _ = self.service.submit_and_wait(submit)
                lease = self.service.lease_of(info.job_id) if submit.lease else None
                return convert.submit_response(info, outputs, lease)
            return convert.submit_response(self.service.submit(submit), b"")
        except Exception as error:
            _fail(context, error)

    def Wait(self, request, context):  # noqa: N802
        self._check(context)
        try:
            info, outputs, timed_out = self.service.wait(request.job_id, request.timeout_s or None)
        except Exception as error:
            _fail(context, error)
        return convert.wait_response(info, outputs, timed_out)

    def Cancel(self, request, context):  # noqa: N802
        self._check(context)
        try:
            return convert.cancel_response(self.service.cancel(request.job_id))
        except Exception as error:
            _fail(context, error)

    def ListJobs(self, request, context):  # noqa: N802
        self._check(context)
        return convert.list_jobs_response(self.service.list_jobs(request.limit, request.state))

    def ListNodes(self, request, context):  # noqa: N802
        self._check(context)
        return convert.list_nodes_response(self.service.list_nodes())

    def Explain(self, request, context):  # noqa: N802
        self._check(context)
        try:
            return convert.explain_response(self.service.job_info(request.job_id))
        except Exception as error:
            _fail(context, error)

    def Usage(self, request, context):  # noqa: N802
        self._check(context)
        return convert.usage_response(self.service.usage())

    def RemoveNode(self, request, context):  # noqa: N802
        self._check(context)
        try:
            return convert.remove_node_response(self.service.remove_node(request.node_id))
        except Exception as error:
            _fail(context, error)

    def Deploy(self, request, context):  # noqa: N802
        self._check(context)
        try:
            name, submit, replicas, inputs, outputs, options = convert.deploy_request_from_pb(
                request
            )
            info = self.service.deploy(name, submit, replicas, inputs, outputs, options)
            return convert.deployment_response(info)
        except Exception as error:
            _fail(context, error)

    def RolloutDeployment(self, request, context):  # noqa: N802
        self._check(context)
        try:
            info = self.service.rollout(request.name, request.action)
            return convert.deployment_response(info)
        except Exception as error:
            _fail(context, error)

    def ScaleDeployment(self, request, context):  # noqa: N802
        self._check(context)
        try:
            info = self.service.scale(request.name, request.replicas, request.reason)
            return convert.deployment_response(info)
        except Exception as error:
            _fail(context, error)

    def DeleteDeployment(self, request, context):  # noqa: N802
        self._check(context)
        try:
            return convert.deployment_response(self.service.undeploy(request.name))
        except Exception as error:
            _fail(context, error)

    def ListDeployments(self, request, context):  # noqa: N802
        self._check(context)
        self.service.calls_reported(convert.traffic_from_pb(request))
        return convert.list_deployments_response(self.service.deployments())

    def CreateJoinToken(self, request, context):  # noqa: N802
        self._check(context)
        tokens = self._join_tokens(context)
        try:
            token = tokens.create(
                request.ttl_s,
                list(request.tiers) or ["edge"],
                time.time(),
                request.max_devices,
                request.max_memory_bytes,
            )
        except Exception as error:
            _fail(context, error)
        log.info(
            "minted a join token for tier %s, valid %.0f s, at an admin's request",
            "/".join(request.tiers) or "edge",
            request.ttl_s,
        )
        return convert.create_join_token_response(token)

    def ListJoinTokens(self, request, context):  # noqa: N802
        self._check(context)
        return convert.join_tokens_response(self._join_tokens(context).tokens(time.time()))

    def _join_tokens(self, context: grpc.ServicerContext) -> Any:
        if self.security is None:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this scheduler runs --insecure: agents join with its own token (--token);"
                " join tokens are for TLS schedulers",
            )
        return self.security.tokens


class BlobServicer(_Authenticated, rpc.BlobServiceServicer):
    def HasBlobs(self, request, context):  # noqa: N802
        self._check(context, nodes_may=True)
        try:
            missing = [d for d in request.digests if not self.service.blobs.has(d)]
        except ValueError as error:
            _fail(context, error)
        return convert.has_blobs_response(missing)

    def PutBlob(self, request_iterator, context):  # noqa: N802
        """A blob in chunks (a job's inputs from a client, its outputs from an agent),
        written to disk as it arrives: any size the state folder's disk can hold."""
        self._check(context, nodes_may=True)
        first = next(request_iterator, None)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an empty blob stream")
            return None  # abort raises; this tells the type checker
        digest, expected = first.digest, first.total_bytes
        free = shutil.disk_usage(self.service.blobs.root).free
        if expected > free:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"a blob of {format_bytes(expected)} does not fit on the scheduler's disk"
                f" ({format_bytes(free)} free in its state folder)",
            )

        def chunks() -> Iterator[bytes]:
            size = 0
            for chunk in itertools.chain((first,), request_iterator):
                size += len(chunk.data)
                if size > expected:
                    raise ValueError(f"blob longer than announced ({expected} bytes)")
                yield chunk.data
            if size != expected:
                raise ValueError(f"blob of {size} bytes, announced as {expected}")

        try:
            stored, size = self.service.blobs.put_chunks(chunks(), digest)
        except ValueError as error:
            _fail(context, error)
        return convert.put_blob_response(stored, size)

    def GetBlob(self, request, context):  # noqa: N802
        self._check(context, nodes_may=True)
        try:
            size = self.service.blobs.size(request.digest)
        except KeyError:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no blob {request.digest}")
        except ValueError as error:
            _fail(context, error)
        parts = self.service.blobs.read_chunks(request.digest, BLOB_CHUNK_BYTES)
        yield convert.blob_chunk(next(parts, b""), request.digest, size)
        for part in parts:
            yield convert.blob_chunk(part)


class EnrolmentServicer:
    """``Enrol`` (a token for a node certificate) and ``Info`` (where the agent port is)."""

    def __init__(self, security: ServerSecurity, throttle: FailureThrottle) -> None:
        self.security = security
        self.throttle = throttle

    def Enrol(self, request: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        try:
            enrol = EnrolRequest.decode(request)
            return self.security.enrol(enrol).encode()
        except AuthenticationError as error:
            if isinstance(error, AccessDeniedError):
                _fail(context, error)
            _throttled_fail(context, self.throttle, enrol.token, error)
        except Exception as error:
            _fail(context, error)
        raise AssertionError("unreachable")

    def Info(self, request: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        return self.security.info().encode()

    def handler(self) -> grpc.GenericRpcHandler:
        service, enrol = ENROL_METHOD.rsplit("/", 2)[1:]
        info = INFO_METHOD.rsplit("/", 1)[1]
        return grpc.method_handlers_generic_handler(
            service,
            {
                enrol: grpc.unary_unary_rpc_method_handler(self.Enrol),
                info: grpc.unary_unary_rpc_method_handler(self.Info),
            },
        )


def serve(
    service: SchedulerService,
    host: str = "127.0.0.1",
    port: int = 0,
    security: ServerSecurity | None = None,
    agent_port: int = 0,
    throttle: FailureThrottle | None = None,
    inference: InferenceGateway | None = None,
) -> tuple[grpc.Server, int]:
    """Start the gRPC server; return it and the bound (client) port.

    With ``security`` the client port speaks TLS and a second port, ``agent_port``
    (0: a free one; recorded in ``security.agent_port``), mutual TLS; without it the
    one port is plaintext (``--insecure``). ``throttle``: how failed authentications
    are rate-limited (default ``security.throttle``, else 5 per minute per peer).
    The Open Inference Protocol's gRPC service is served beside the SDK's, through
    ``inference`` (default: a gateway of its own that calls replicas over the CA's TLS).
    """
    server = grpc.server(
        # Every agent's stream holds one handler thread for its lifetime (sync gRPC), so
        # the pool bounds how many agents one scheduler holds; threads start lazily.
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
        if bound:
            mtls = server_credentials(identity, ca, True)
            security.agent_port = server.add_secure_port(f"{host}:{agent_port}", mtls)
            if security.agent_port == 0:
                raise ConfigError(
                    f"cannot listen on {host}:{agent_port} (agent port): is another process"
                    " using it? pick one with --agent-port"
                )
    if bound == 0:
        raise ConfigError(f"cannot listen on {host}:{port}: is another process using the port?")
    server.start()
    return server, bound
