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
    MissingBlobError,
    ThrottledError,
)
from anypu.devices import format_bytes
from anypu.errors import AuthenticationError, ConfigError
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.protos import convert
from anypu.scheduler._agent_stream import CLOSED, AgentStream, JoinsBusyError
from anypu.scheduler._security import ServerSecurity
from anypu.scheduler._service import NotFoundError, SchedulerService
from anypu.scheduler._tokens import AccessDeniedError, NameTakenError

__all__ = [
    "AgentServicer",
    "BlobServicer",
    "EnrolmentServicer",
    "JobServicer",
    "status_of",
    "throttled",
]

log = logging.getLogger("anypu.scheduler")

#: The largest bandwidth probe taken (``agents._probes.MAX_BYTES``).
PROBE_LIMIT_BYTES = 8 << 20


def status_of(error: Exception) -> tuple[grpc.StatusCode, str] | None:
    """The status a user's mistake is answered with (None: a bug, raised as it is)."""
    if isinstance(error, (ThrottledError, JoinsBusyError)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
    if isinstance(error, AccessDeniedError):
        return grpc.StatusCode.PERMISSION_DENIED, str(error)
    if isinstance(error, NameTakenError):
        return grpc.StatusCode.ALREADY_EXISTS, str(error)
    if isinstance(error, AuthenticationError):
        return grpc.StatusCode.UNAUTHENTICATED, str(error)
    if isinstance(error, MissingBlobError):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    if isinstance(error, NotFoundError):
        return grpc.StatusCode.NOT_FOUND, error.args[0]
    if isinstance(error, (ConfigError, ValueError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    return None


def _fail(context: grpc.ServicerContext, error: Exception) -> NoReturn:
    status = status_of(error)
    if status is None:
        raise error
    if isinstance(error, MissingBlobError):
        context.set_trailing_metadata(((MISSING_BLOB_KEY, error.digest),))
    context.abort(*status)


def throttled(
    throttle: FailureThrottle, peer: str, credential: str, error: AuthenticationError
) -> Exception:
    """What a failed authentication is answered with, once the throttle's delay is over:
    ``error``, or the throttle's refusal."""
    try:
        throttle.failed(peer, credential)
    except ThrottledError as refusal:
        return refusal
    return error


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
    _fail(context, throttled(throttle, context.peer(), credential, error))


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

    def enrolment(self, context: Any) -> Any:
        """With TLS on, the node's enrolment from its certificate (None: plaintext mode);
        raises ``AuthenticationError`` when the stream shows none."""
        if self.security is None:
            return None
        enrolment = self.security.node_enrolment(_peer_auth(context))
        if enrolment is None:
            raise AuthenticationError(
                "agents connect to the scheduler's agent port with a node certificate:"
                " start the agent with --ca-hash and a join token to enrol it"
            )
        return enrolment

    def _credential(self, context: grpc.ServicerContext) -> Any:
        try:
            return self.enrolment(context)
        except AuthenticationError as error:
            _throttled_fail(context, self.throttle, "", error)

    def Connect(self, request_iterator: Iterator[Any], context: grpc.ServicerContext):  # noqa: N802
        """An agent's stream, a thread for its reader and one for its writer (see
        ``_agent_port`` for the event loop that holds thousands)."""
        credential = self._credential(context)
        outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        stream = AgentStream(self.service, outbox.put, credential, context.peer(), self.throttle)

        def read() -> None:
            try:
                for message in request_iterator:
                    stream.receive(message)
            except BaseException as error:
                stream.failed(error)
            finally:
                stream.close()
                outbox.put(CLOSED)

        threading.Thread(target=read, name="anypu-agent-reader", daemon=True).start()
        while (message := stream.outgoing(outbox.get())) is not None:
            yield message
        if stream.failure is not None:
            _fail(context, stream.failure)

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
