"""How the SDK reaches a scheduler: gRPC, or a direct in-process call (embedded mode).

Like httpx's transports: the client code above is the same for both, and tests can hand
the SDK an ``InProcessTransport`` around a scheduler they built themselves.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any, Protocol

import grpc

from anypu import _codec
from anypu.agents._workers import run_dispatched_here
from anypu.errors import AnypuError
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.protos import convert
from anypu.protos import messages as m

__all__ = ["INLINE_LIMIT", "GrpcTransport", "InProcessTransport", "Transport"]

log = logging.getLogger("anypu.sdk")

_CHUNK = 1 << 20
INLINE_LIMIT = 4 << 20  # inputs above this travel as a blob, and are never sent directly


class Transport(Protocol):
    address: str

    def missing_blobs(self, digests: list[str]) -> list[str]: ...
    def put_blob(self, digest: str, data: bytes) -> None: ...
    def submit(self, request: m.SubmitRequest) -> tuple[m.JobInfo, bytes]: ...
    def wait(self, job_id: str, timeout: float | None) -> tuple[m.JobInfo, bytes, bool]: ...
    def cancel(self, job_id: str) -> m.JobInfo: ...
    def job(self, job_id: str) -> m.JobInfo: ...
    def list_jobs(self, limit: int = 100, state: str = "") -> list[m.JobInfo]: ...
    def list_nodes(self) -> list[m.NodeInfo]: ...
    def lease_of(self, job_id: str) -> m.Lease | None: ...
    def run_leased(self, lease: m.Lease, args: tuple[Any, ...]) -> m.JobResult | None: ...
    def close(self) -> None: ...


class InProcessTransport:
    def __init__(self, service: Any, address: str = "embedded") -> None:
        self.service = service
        self.address = address

    def missing_blobs(self, digests: list[str]) -> list[str]:
        return [d for d in digests if not self.service.blobs.has(d)]

    def put_blob(self, digest: str, data: bytes) -> None:
        self.service.blobs.put(data, digest)

    def submit(self, request: m.SubmitRequest) -> tuple[m.JobInfo, bytes]:
        if request.wait and not request.wait_timeout_s and not request.timeout_s:
            # The caller blocks until the outcome anyway: let it run the job itself when
            # an in-process slice takes it at once, rather than wake a worker thread. Not
            # with a timeout: the caller must get JobTimeout when it expires, and a thread
            # running a model cannot be interrupted.
            with run_dispatched_here():
                info = self.service.submit(request)
            info, outputs, _ = self.service.wait(info.job_id, None)
            return info, outputs
        if request.wait:
            info, outputs, _ = self.service.submit_and_wait(request)
            return info, outputs
        return self.service.submit(request), b""

    def wait(self, job_id: str, timeout: float | None) -> tuple[m.JobInfo, bytes, bool]:
        return self.service.wait(job_id, timeout)

    # Leases (see ``scheduler._leases``).

    def lease_of(self, job_id: str) -> m.Lease | None:
        return self.service.lease_of(job_id)

    def run_leased(self, lease: m.Lease, args: tuple[Any, ...]) -> m.JobResult | None:
        # In-process: the tensors themselves, nothing encoded either way.
        return self.service.run_leased(lease, args)

    def cancel(self, job_id: str) -> m.JobInfo:
        return self.service.cancel(job_id)

    def job(self, job_id: str) -> m.JobInfo:
        return self.service.job_info(job_id)

    def list_jobs(self, limit: int = 100, state: str = "") -> list[m.JobInfo]:
        return self.service.list_jobs(limit, state)

    def list_nodes(self) -> list[m.NodeInfo]:
        return self.service.list_nodes()

    def close(self) -> None:
        pass


class GrpcTransport:
    def __init__(self, address: str, token: str = "", ca_pem: bytes | None = None) -> None:
        """``ca_pem``: the scheduler's CA, for TLS (see ``client_ca``); None: plaintext."""
        from anypu.agents._link import grpc_channel

        self.address = address
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        credentials = None
        if ca_pem is not None:
            from anypu.scheduler._tls import channel_credentials

            credentials = channel_credentials(ca_pem)
        self._credentials = credentials
        # Direct calls to a worker: TLS trusting only the scheduler's CA, when it has one.
        self._worker_tls = (
            ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem is not None else None
        )
        self._channel = grpc_channel(address, credentials)
        self._jobs = rpc.JobServiceStub(self._channel)
        self._blobs = rpc.BlobServiceStub(self._channel)
        self._granted: dict[str, m.Lease] = {}  # job id -> the lease its answer carried
        # (agent's direct address, its node) -> (channel, stub)
        self._agents: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._agents_lock = threading.Lock()
        # lease id -> the worker process serving it, as its agent named it, and the open
        # connection to it (a lease serves one call at a time, so one each)
        self._workers: dict[str, str] = {}
        self._connections: dict[str, socket.socket] = {}

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        from anypu.agents._link import raise_for_rpc

        try:
            return method(request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise AnypuError(error.details()) from None
            raise_for_rpc(error, self.address)
            raise

    def check(self, timeout: float = 5.0) -> None:
        """Fail fast, with an actionable message, if no scheduler answers."""
        self.list_nodes(timeout=timeout)

    def missing_blobs(self, digests: list[str]) -> list[str]:
        response = self._call(self._blobs.HasBlobs, convert.has_blobs_request(digests))
        return list(response.missing)

    def put_blob(self, digest: str, data: bytes) -> None:
        self._call(self._blobs.PutBlob, convert.blob_chunks(digest, data, _CHUNK))

    def submit(self, request: m.SubmitRequest) -> tuple[m.JobInfo, bytes]:
        response = self._call(self._jobs.Submit, convert.submit_request_to_pb(request))
        info = convert.job_info_from_pb(response.job)
        lease = convert.submit_response_lease(response)
        if lease is not None:
            self._granted[info.job_id] = lease
        return info, response.outputs

    def lease_of(self, job_id: str) -> m.Lease | None:
        return self._granted.pop(job_id, None)

    def run_leased(self, lease: m.Lease, args: tuple[Any, ...]) -> m.JobResult | None:
        """Send the call under ``lease`` directly; None: place it (lease gone, node away).

        The first call goes to the agent, which names the slice's worker process; later
        ones go to that process.
        """
        payload = _codec.encode(args, "inputs")
        if len(payload) > INLINE_LIMIT or not lease.address:
            return None
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
        from anypu.agents._direct import result_from_frame
        from anypu.agents._wire import read_frame, write_frame

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

    def _agent(self, address: str, node_id: str) -> Any:
        from anypu.agents._link import grpc_channel

        with self._agents_lock:
            known = self._agents.get((address, node_id))
            if known is None:
                # With TLS the agent must show a certificate from the scheduler's CA that
                # names the node the lease is on: another node's will not do.
                channel = grpc_channel(address, self._credentials, server_name=node_id)
                stub = rpc.DirectServiceStub(channel)
                known = self._agents[(address, node_id)] = (channel, stub)
        return known[1]

    def wait(self, job_id: str, timeout: float | None) -> tuple[m.JobInfo, bytes, bool]:
        request = convert.wait_request(job_id, timeout or 0.0)
        response = self._call(self._jobs.Wait, request)
        return convert.job_info_from_pb(response.job), response.outputs, response.timed_out

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

    def close(self) -> None:
        self._channel.close()
        for lease_id in list(self._connections):
            self._forget(lease_id)
        with self._agents_lock:
            for channel, _ in self._agents.values():
                channel.close()
            self._agents.clear()
