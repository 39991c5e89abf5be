"""DirectService: calls under a lease, straight from the client.

A lease (see ``scheduler._leases``) lets a client skip the scheduler for calls like one it
already placed. The agent serves DirectService at its ``--direct-address``; so does each
slice's worker process, on a port of its own, and the agent's answer to a lease's first
call names that worker (``worker_address``): from then on a call is one gRPC round trip
from the client to the process that runs it. The lease id is the capability: a call runs
only under a lease the scheduler granted and has not revoked (the agent passes grants and
revocations on to its workers), and the answer is ``lease_lost`` otherwise, so the client
places the call as usual. Plaintext only: an agent joined over mutual TLS does not serve
it (see ``anypu agent --direct-address``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures

import grpc
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.protos import convert
from anypu.protos import messages as m

from anypu.errors import ConfigError

__all__ = ["DirectServer"]

log = logging.getLogger("anypu.agent")

#: (lease id, encoded inputs) -> (the result, or None if the lease is not held here;
#: where the lease's next calls should go, or "").
RunLeased = Callable[[str, bytes], "tuple[m.JobResult | None, str]"]
_MAX_MESSAGE = 8 << 20  # inputs above 4 MiB are placed, never sent directly


class _Servicer(rpc.DirectServiceServicer):
    def __init__(self, run_leased: RunLeased) -> None:
        self.run_leased = run_leased

    def Run(self, request, context):  # noqa: N802
        try:
            result, worker_address = self.run_leased(request.lease_id, request.inputs)
        except Exception as error:  # our own failure, not the model's
            log.exception("direct call under %s failed", request.lease_id[:14])
            context.abort(grpc.StatusCode.INTERNAL, f"the direct call failed: {error}")
        return convert.direct_run_response(result, worker_address)


class DirectServer:
    """Serve ``run_leased`` at ``address`` (HOST:PORT; port 0 picks a free one)."""

    def __init__(self, run_leased: RunLeased, address: str, workers: int = 4) -> None:
        host, _, _ = address.rpartition(":")
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anypu-direct"),
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
            ],
        )
        rpc.add_DirectServiceServicer_to_server(_Servicer(run_leased), self._server)
        try:
            port = self._server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if not port:
            raise ConfigError(
                f"cannot listen on {address} for direct calls: the port is taken or the"
                " address is not this machine's; pick another --direct-address"
            )
        self.address = f"{host}:{port}"
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=0)
