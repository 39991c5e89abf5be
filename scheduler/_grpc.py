"""gRPC servicers: thin adapters from the wire to ``SchedulerService``.

Clients authenticate with ``authorization: Bearer <token>`` metadata; agents carry the
token in their Join. Errors a user can cause map to gRPC status codes with a message
that says what to change: a bad token is UNAUTHENTICATED, a bad request
INVALID_ARGUMENT, an unknown job NOT_FOUND.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.protos import convert
from anypu.scheduler._service import NotFoundError, SchedulerService

from anypu.errors import AuthenticationError, ConfigError

__all__ = ["BLOB_CHUNK_BYTES", "MAX_MESSAGE_BYTES", "serve"]

log = logging.getLogger("anypu.scheduler")

MAX_MESSAGE_BYTES = 256 << 20
BLOB_CHUNK_BYTES = 1 << 20
_CLOSED = object()


def _fail(context: grpc.ServicerContext, error: Exception) -> None:
    if isinstance(error, AuthenticationError):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
    if isinstance(error, NotFoundError):
        context.abort(grpc.StatusCode.NOT_FOUND, error.args[0])
    if isinstance(error, (ConfigError, ValueError)):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
    raise error


class _Authenticated:
    def __init__(self, service: SchedulerService) -> None:
        self.service = service

    def _check(self, context: grpc.ServicerContext) -> None:
        if self.service.token is None:
            return
        metadata = dict(context.invocation_metadata())
        header = metadata.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        try:
            self.service.authenticate(token)
        except AuthenticationError as error:
            _fail(context, error)


class AgentServicer(rpc.AgentServiceServicer):
    def __init__(self, service: SchedulerService) -> None:
        self.service = service

    def Connect(self, request_iterator: Iterator[Any], context: grpc.ServicerContext):  # noqa: N802
        outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        session = self.service.attach_agent(outbox.put, lambda: outbox.put(_CLOSED))
        failure: list[Exception] = []

        def read() -> None:
            try:
                for message in request_iterator:
                    session.receive(convert.agent_message_from_pb(message))
            except (AuthenticationError, ConfigError, ValueError) as error:
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
            yield convert.scheduler_message_to_pb(item)
        if failure:
            _fail(context, failure[0])


class JobServicer(_Authenticated, rpc.JobServiceServicer):
    def Submit(self, request, context):  # noqa: N802
        self._check(context)
        try:
            submit = convert.submit_request_from_pb(request)
            if submit.wait:
                info, outputs, _ = self.service.submit_and_wait(submit)
                return convert.submit_response(info, outputs)
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


class BlobServicer(_Authenticated, rpc.BlobServiceServicer):
    def HasBlobs(self, request, context):  # noqa: N802
        self._check(context)
        try:
            missing = [d for d in request.digests if not self.service.blobs.has(d)]
        except ValueError as error:
            _fail(context, error)
        return convert.has_blobs_response(missing)

    def PutBlob(self, request_iterator, context):  # noqa: N802
        self._check(context)
        digest, expected, parts, size = "", 0, [], 0
        for chunk in request_iterator:
            if not digest:
                digest, expected = chunk.digest, chunk.total_bytes
                if expected > MAX_MESSAGE_BYTES * 8:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "blob larger than 2 GiB")
            size += len(chunk.data)
            if size > expected:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"blob longer than announced {expected}"
                )
            parts.append(chunk.data)
        try:
            stored = self.service.blobs.put(b"".join(parts), digest)
        except ValueError as error:
            _fail(context, error)
        return convert.put_blob_response(stored, size)

    def GetBlob(self, request, context):  # noqa: N802
        self._check(context)
        try:
            data = self.service.blobs.get(request.digest)
        except KeyError:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no blob {request.digest}")
        except ValueError as error:
            _fail(context, error)
        yield from convert.blob_chunks(request.digest, data, BLOB_CHUNK_BYTES)


def serve(
    service: SchedulerService, host: str = "127.0.0.1", port: int = 0
) -> tuple[grpc.Server, int]:
    """Start the gRPC server; return it and the bound port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="anypu-grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.optimization_target", "latency"),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    rpc.add_AgentServiceServicer_to_server(AgentServicer(service), server)
    rpc.add_JobServiceServicer_to_server(JobServicer(service), server)
    rpc.add_BlobServiceServicer_to_server(BlobServicer(service), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise ConfigError(f"cannot listen on {host}:{port}: is another process using the port?")
    server.start()
    return server, bound
