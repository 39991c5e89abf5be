"""How the SDK reaches a scheduler: the ``Transport`` protocol and its gRPC implementation.

Like httpx's transports: the client code above is the same for every transport, and
tests can hand the SDK an ``InProcessTransport`` (``_embedded``) around a scheduler they
built themselves.
"""

from __future__ import annotations

import functools
import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from anypu.comm import (
    INLINE_BYTES,
    channel_credentials,
    grpc_channel,
    raise_for_rpc,
    read_frame,
    result_from_frame,
    speaks_tls,
    write_frame,
)
from anypu.errors import AnypuError, ConfigError
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.protos import convert
from anypu.protos import messages as m
from anypu.protos.convert import pb

__all__ = ["INLINE_LIMIT", "GrpcTransport", "Transport"]

log = logging.getLogger("anypu.sdk")

_CHUNK = 1 << 20
INLINE_LIMIT = INLINE_BYTES  # inputs above this travel as a blob, and are never sent directly

_Request = TypeVar("_Request", contravariant=True)
_Response = TypeVar("_Response", covariant=True)
_RequestT = TypeVar("_RequestT")
_ResponseT = TypeVar("_ResponseT")


class _Rpc(Protocol[_Request, _Response]):
    """A unary-response method of a stub (a request, or an iterator of them for a stream)."""

    def __call__(
        self,
        request: _Request,
        /,
        timeout: float | None = ...,
        metadata: tuple[tuple[str, str | bytes], ...] | None = ...,
    ) -> _Response: ...


# The service methods the SDK calls. grpcio-tools generates the stub classes without
# annotations; these say what their attributes are, at the SDK's boundary.
class _JobStub(Protocol):
    Submit: grpc.UnaryUnaryMultiCallable[pb.SubmitRequest, pb.SubmitResponse]
    Wait: grpc.UnaryUnaryMultiCallable[pb.WaitRequest, pb.WaitResponse]
    Cancel: grpc.UnaryUnaryMultiCallable[pb.CancelRequest, pb.CancelResponse]
    ListJobs: grpc.UnaryUnaryMultiCallable[pb.ListJobsRequest, pb.ListJobsResponse]
    ListNodes: grpc.UnaryUnaryMultiCallable[pb.ListNodesRequest, pb.ListNodesResponse]
    Explain: grpc.UnaryUnaryMultiCallable[pb.ExplainRequest, pb.ExplainResponse]
    Usage: grpc.UnaryUnaryMultiCallable[pb.UsageRequest, pb.UsageResponse]
    RemoveNode: grpc.UnaryUnaryMultiCallable[pb.RemoveNodeRequest, pb.RemoveNodeResponse]
    Deploy: grpc.UnaryUnaryMultiCallable[pb.DeployRequest, pb.DeploymentResponse]
    ScaleDeployment: grpc.UnaryUnaryMultiCallable[pb.ScaleDeploymentRequest, pb.DeploymentResponse]
    DeleteDeployment: grpc.UnaryUnaryMultiCallable[
        pb.DeleteDeploymentRequest, pb.DeploymentResponse
    ]
    ListDeployments: grpc.UnaryUnaryMultiCallable[
        pb.ListDeploymentsRequest, pb.ListDeploymentsResponse
    ]
    RolloutDeployment: grpc.UnaryUnaryMultiCallable[
        pb.RolloutDeploymentRequest, pb.DeploymentResponse
    ]


class _BlobStub(Protocol):
    HasBlobs: grpc.UnaryUnaryMultiCallable[pb.HasBlobsRequest, pb.HasBlobsResponse]
    PutBlob: grpc.StreamUnaryMultiCallable[pb.BlobChunk, pb.PutBlobResponse]
    GetBlob: grpc.UnaryStreamMultiCallable[pb.GetBlobRequest, pb.BlobChunk]


class _DirectStub(Protocol):
    Run: grpc.UnaryUnaryMultiCallable[pb.DirectRunRequest, pb.DirectRunResponse]
    Ping: grpc.UnaryUnaryMultiCallable[pb.PingRequest, pb.PingReply]


_job_stub: Callable[[grpc.Channel], _JobStub] = rpc.JobServiceStub
_blob_stub: Callable[[grpc.Channel], _BlobStub] = rpc.BlobServiceStub
_direct_stub: Callable[[grpc.Channel], _DirectStub] = rpc.DirectServiceStub


class Transport(Protocol):
    address: str

    def missing_blobs(self, digests: list[str]) -> list[str]: ...
    def put_blob(self, digest: str, data: bytes | Sequence[memoryview]) -> None: ...
    def submit(self, request: m.SubmitRequest) -> tuple[m.JobInfo, bytes | bytearray]: ...
    def wait(
        self, job_id: str, timeout: float | None
    ) -> tuple[m.JobInfo, bytes | bytearray, bool]: ...
    def cancel(self, job_id: str) -> m.JobInfo: ...
    def job(self, job_id: str) -> m.JobInfo: ...
    def list_jobs(self, limit: int = 100, state: str = "") -> list[m.JobInfo]: ...
    def list_nodes(self) -> list[m.NodeInfo]: ...
    def usage(self) -> m.ClusterUsage: ...
    def remove_node(self, node_id: str) -> m.NodeInfo: ...
    def deploy(
        self,
        name: str,
        request: m.SubmitRequest,
        replicas: int,
        inputs: tuple[m.TensorSpec, ...] = (),
        outputs: tuple[m.TensorSpec, ...] = (),
        options: m.DeployOptions = m.DEFAULT_DEPLOY_OPTIONS,
    ) -> m.DeploymentInfo: ...
    def rollout(self, name: str, action: str) -> m.DeploymentInfo: ...
    def scale(self, name: str, replicas: int, reason: str = "") -> m.DeploymentInfo: ...
    def undeploy(self, name: str) -> m.DeploymentInfo: ...
    def deployments(self, traffic: m.Traffic | None = None) -> list[m.DeploymentInfo]:
        """Every deployment; ``traffic``: the caller's calls since it last said."""
        ...

    def lease_of(self, job_id: str) -> m.Lease | None: ...
    def run_leased(self, lease: m.Lease, args: tuple[Any, ...]) -> m.JobResult | None: ...
    def round_trips(self) -> tuple[tuple[str, float], ...]: ...
    def close(self) -> None: ...


#: The network vertex of the scheduler (``placement.SCHEDULER_VERTEX``; not imported:
#: clients do not load the solver).
SCHEDULER_VERTEX = "scheduler"


def _least_of(call: Callable[[], object], samples: int) -> float | None:
    """The least of ``samples`` timed calls after one that opens the connection; None
    when a call fails."""
    try:
        call()
        best = math.inf
        for _ in range(samples):
            started = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - started)
    except grpc.RpcError as error:
        log.debug("round trip not timed: %s", error)
        return None
    return best


class GrpcTransport:
    def __init__(self, address: str, token: str = "", ca_pem: bytes | None = None) -> None:
        """``ca_pem``: the scheduler's CA, for TLS (see ``anypu.comm.client_ca``); None:
        plaintext."""
        self.address = address
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        credentials = channel_credentials(ca_pem) if ca_pem is not None else None
        self._credentials = credentials
        # Direct calls to a worker: TLS trusting only the scheduler's CA, when it has one.
        self._worker_tls = (
            ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem is not None else None
        )
        self._channel = grpc_channel(address, credentials)
        self._jobs = _job_stub(self._channel)
        self._blobs = _blob_stub(self._channel)
        self._granted: dict[str, m.Lease] = {}  # job id -> the lease its answer carried
        # (agent's direct address, its node) -> (channel, stub)
        self._agents: dict[tuple[str, str], tuple[grpc.Channel, _DirectStub]] = {}
        self._agents_lock = threading.Lock()
        # lease id -> the worker process serving it, as its agent named it, and the open
        # connection to it (a lease serves one call at a time, so one each)
        self._workers: dict[str, str] = {}
        self._connections: dict[str, socket.socket] = {}

    def _call(
        self,
        method: _Rpc[_RequestT, _ResponseT],
        request: _RequestT,
        timeout: float | None = None,
    ) -> _ResponseT:
        try:
            return method(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise AnypuError(error.details()) from None
            self._raise(error)

    def _raise(self, error: grpc.RpcError) -> NoReturn:
        if (
            self._credentials is None
            and error.code() == grpc.StatusCode.UNAVAILABLE
            and speaks_tls(self.address)
        ):
            raise ConfigError(
                f"the scheduler at {self.address} speaks TLS and this client spoke plaintext:"
                " pass the CA hash the scheduler printed (ca_hash= in sdk.connect, --ca-hash,"
                " or ANYPU_CA_HASH)"
            ) from None
        raise_for_rpc(error, self.address)

    def round_trips(self, samples: int = 3, timeout: float = 1.0) -> tuple[tuple[str, float], ...]:
        """Round trips to the scheduler and to one agent per site that takes direct
        calls (vertex, least of ``samples`` seconds): what the scheduler infers this
        client's origin from when it names none. An agent that does not answer within
        ``timeout`` is left out."""
        request = pb.HasBlobsRequest()
        found: dict[str, float] = {}
        rtt = _least_of(
            lambda: self._blobs.HasBlobs(request, metadata=self._metadata, timeout=timeout),
            samples,
        )
        if rtt is not None:
            found[SCHEDULER_VERTEX] = rtt
        for node in self.list_nodes(timeout=timeout):
            if node.direct_address and node.site and node.site not in found:
                stub = self._agent(node.direct_address, node.node_id)
                ping = functools.partial(stub.Ping, pb.PingRequest(), timeout=timeout)
                rtt = _least_of(ping, samples)
                if rtt is not None:
                    found[node.site] = rtt
        return tuple(found.items())

    def check(self, timeout: float = 5.0) -> None:
        """Fail fast, with an actionable message, if no scheduler answers."""
        self.list_nodes(timeout=timeout)

    def missing_blobs(self, digests: list[str]) -> list[str]:
        response = self._call(self._blobs.HasBlobs, convert.has_blobs_request(digests))
        return list(response.missing)

    def put_blob(self, digest: str, data: bytes | Sequence[memoryview]) -> None:
        self._call(self._blobs.PutBlob, convert.blob_chunks(digest, data, _CHUNK))

    def get_blob(self, digest: str) -> bytearray:
        """A blob, streamed in chunks (a job's outputs too large for one message)."""
        try:
            chunks = self._blobs.GetBlob(convert.get_blob_request(digest), metadata=self._metadata)
            return convert.join_blob_chunks(chunks, digest)
        except grpc.RpcError as error:
            self._raise(error)

    def _outputs(self, info: m.JobInfo, inline: bytes) -> bytes | bytearray:
        if inline or not info.outputs_digest:
            return inline
        return self.get_blob(info.outputs_digest)

    def submit(self, request: m.SubmitRequest) -> tuple[m.JobInfo, bytes | bytearray]:
        response = self._call(self._jobs.Submit, convert.submit_request_to_pb(request))
        info = convert.job_info_from_pb(response.job)
        lease = convert.submit_response_lease(response)
        if lease is not None:
            self._granted[info.job_id] = lease
        return info, self._outputs(info, response.outputs)

    def lease_of(self, job_id: str) -> m.Lease | None:
        return self._granted.pop(job_id, None)

    def run_leased(self, lease: m.Lease, args: tuple[Any, ...]) -> m.JobResult | None:
        """Send the call under ``lease`` directly; None: place it (lease gone, node away).

        The first call goes to the agent, which names the slice's worker process; later
        ones go to that process.
        """
        from anypu import _codec  # torch: not loaded by clients that never run a model

        parts = _codec.encode_parts(args, "inputs")
        if sum(part.nbytes for part in parts) > INLINE_LIMIT or not lease.address:
            return None
        payload = b"".join(parts)
        worker = self._workers.get(lease.lease_id)
        try:
            if worker is not None:
                result = self._call_worker(lease, worker, payload)
            else:
                request = convert.direct_run_request(lease.lease_id, payload)
                response = self._agent(lease.address, lease.node_id).Run(request)
                result, worker = convert.direct_run_result(response)
                if result is not None and worker:
                    self._workers[lease.lease_id] = worker
        except (grpc.RpcError, OSError, EOFError, ValueError) as error:
            # The node or worker may have died mid-call: the scheduler places it again,
            # and the user still gets exactly one answer.
            log.info("direct call under a lease failed (%s); placing it", error)
            result = None
        if result is None:
            self._forget(lease.lease_id)
        return result

    def _call_worker(self, lease: m.Lease, address: str, payload: bytes) -> m.JobResult | None:
        connection = self._connections.get(lease.lease_id)
        if connection is None:
            host, _, port = address.rpartition(":")
            connection = socket.create_connection((host, int(port)), timeout=10)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._worker_tls is not None:  # it must show the leased node's certificate
                connection = self._worker_tls.wrap_socket(connection, server_hostname=lease.node_id)
            connection.settimeout(None)  # a call runs as long as its model does
            self._connections[lease.lease_id] = connection
        channel = connection.fileno() if self._worker_tls is None else connection
        write_frame(channel, {"lease_id": lease.lease_id}, payload)
        return result_from_frame(*read_frame(channel, 2 * INLINE_LIMIT))

    def _forget(self, lease_id: str) -> None:
        self._workers.pop(lease_id, None)
        connection = self._connections.pop(lease_id, None)
        if connection is not None:
            connection.close()

    def _agent(self, address: str, node_id: str) -> _DirectStub:
        with self._agents_lock:
            known = self._agents.get((address, node_id))
            if known is None:
                # With TLS the agent must show a certificate from the scheduler's CA that
                # names the node the lease is on: another node's will not do.
                channel = grpc_channel(address, self._credentials, server_name=node_id)
                stub = _direct_stub(channel)
                known = self._agents[(address, node_id)] = (channel, stub)
        return known[1]

    def wait(self, job_id: str, timeout: float | None) -> tuple[m.JobInfo, bytes | bytearray, bool]:
        request = convert.wait_request(job_id, timeout or 0.0)
        response = self._call(self._jobs.Wait, request)
        info = convert.job_info_from_pb(response.job)
        return info, self._outputs(info, response.outputs), response.timed_out

    def cancel(self, job_id: str) -> m.JobInfo:
        response = self._call(self._jobs.Cancel, convert.job_request(job_id))
        return convert.job_info_from_pb(response.job)

    def job(self, job_id: str) -> m.JobInfo:
        response = self._call(self._jobs.Explain, convert.explain_request(job_id))
        return convert.job_info_from_pb(response.job)

    def list_jobs(self, limit: int = 100, state: str = "") -> list[m.JobInfo]:
        response = self._call(self._jobs.ListJobs, convert.list_jobs_request(limit, state))
        return [convert.job_info_from_pb(j) for j in response.jobs]

    def list_nodes(self, timeout: float | None = None) -> list[m.NodeInfo]:
        response = self._call(self._jobs.ListNodes, convert.list_nodes_request(), timeout)
        return [convert.node_info_from_pb(n) for n in response.nodes]

    def usage(self) -> m.ClusterUsage:
        return convert.usage_from_pb(self._call(self._jobs.Usage, convert.usage_request()))

    def remove_node(self, node_id: str) -> m.NodeInfo:
        response = self._call(self._jobs.RemoveNode, convert.remove_node_request(node_id))
        return convert.node_info_from_pb(response.node)

    def deploy(
        self,
        name: str,
        request: m.SubmitRequest,
        replicas: int,
        inputs: tuple[m.TensorSpec, ...] = (),
        outputs: tuple[m.TensorSpec, ...] = (),
        options: m.DeployOptions = m.DEFAULT_DEPLOY_OPTIONS,
    ) -> m.DeploymentInfo:
        message = convert.deploy_request(name, request, replicas, inputs, outputs, options)
        response = self._call(self._jobs.Deploy, message)
        return convert.deployment_info_from_pb(response.deployment)

    def rollout(self, name: str, action: str) -> m.DeploymentInfo:
        request = convert.rollout_deployment_request(name, action)
        return convert.deployment_info_from_pb(
            self._call(self._jobs.RolloutDeployment, request).deployment
        )

    def scale(self, name: str, replicas: int, reason: str = "") -> m.DeploymentInfo:
        request = convert.scale_deployment_request(name, replicas, reason)
        return convert.deployment_info_from_pb(
            self._call(self._jobs.ScaleDeployment, request).deployment
        )

    def undeploy(self, name: str) -> m.DeploymentInfo:
        request = convert.delete_deployment_request(name)
        return convert.deployment_info_from_pb(
            self._call(self._jobs.DeleteDeployment, request).deployment
        )

    def deployments(self, traffic: m.Traffic | None = None) -> list[m.DeploymentInfo]:
        request = convert.list_deployments_request(traffic)
        response = self._call(self._jobs.ListDeployments, request)
        return [convert.deployment_info_from_pb(d) for d in response.deployments]

    def close(self) -> None:
        self._channel.close()
        for lease_id in list(self._connections):
            self._forget(lease_id)
        with self._agents_lock:
            for channel, _ in self._agents.values():
                channel.close()
            self._agents.clear()
