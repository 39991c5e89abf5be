"""DirectService: calls under a lease, straight from the client.

A lease (see ``scheduler._leases``) lets a client skip the scheduler for calls like one it
already placed. The agent serves DirectService (gRPC) at its ``--direct-address``; each
slice's worker process takes calls too, as frames (``anypu.comm``) on a TCP port of its own
(``FrameServer``), and the agent's answer to a lease's first call names that worker
(``worker_address``): from then on a call is one round trip from the client to the
process that runs it. The lease id is the capability: a call runs
only under a lease the scheduler granted and has not revoked (the agent passes grants and
revocations on to its workers), and the answer is ``lease_lost`` otherwise, so the client
places the call as usual. With a TLS scheduler both speak TLS with the node's certificate
(server auth, named after the node), and the client checks that name against the lease's
node; with ``--insecure`` they are plaintext (see ``anypu agent --direct-address``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from concurrent import futures

import grpc

from anypu.agents._probes import MAX_BYTES
from anypu.comm import read_frame, result_to_frame, server_options, write_frame
from anypu.errors import ConfigError
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.protos import convert
from anypu.protos import messages as m
from anypu.protos.convert import pb

__all__ = ["DirectServer", "FrameServer"]

log = logging.getLogger("anypu.agent")

#: (lease id, encoded inputs) -> (the result, or None if the lease is not held here;
#: where the lease's next calls should go, or "").
RunLeased = Callable[[str, bytes], "tuple[m.JobResult | None, str]"]
_MAX_MESSAGE = 8 << 20  # inputs above 4 MiB are placed, never sent directly


class _Servicer(rpc.DirectServiceServicer):
    def __init__(self, run_leased: RunLeased) -> None:
        self.run_leased = run_leased
        self.probe_bytes = 0

    def Run(self, request, context):  # noqa: N802
        try:
            result, worker_address = self.run_leased(request.lease_id, request.inputs)
        except Exception as error:  # our own failure, not the model's
            log.exception("direct call under %s failed", request.lease_id[:14])
            context.abort(grpc.StatusCode.INTERNAL, f"the direct call failed: {error}")
        return convert.direct_run_response(result, worker_address)

    def Ping(self, request, context):  # noqa: N802
        return pb.PingReply()

    def Probe(self, request, context):  # noqa: N802
        # Another site's agent timing its upload here: only the bytes are counted.
        self.probe_bytes += len(request.payload)
        return pb.ProbeReply(received_bytes=len(request.payload))


class DirectServer:
    """Serve ``run_leased`` at ``address`` (HOST:PORT; port 0 picks a free one)."""

    def __init__(
        self,
        run_leased: RunLeased,
        address: str,
        workers: int = 4,
        tls: tuple[bytes, bytes] | None = None,
        handlers: tuple[grpc.GenericRpcHandler, ...] = (),
    ) -> None:
        """``tls``: (certificate, key) PEM of this node; clients then check the certificate
        names the node their lease is on. None: plaintext (``--insecure`` schedulers).
        ``handlers``: more services on the same port (a gateway's inference protocol)."""
        host, _, _ = address.rpartition(":")
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="anypu-direct"),
            # A peer's bandwidth probe may carry up to MAX_BYTES, with its framing.
            options=server_options(max(_MAX_MESSAGE, MAX_BYTES) + (1 << 20)),
        )
        rpc.add_DirectServiceServicer_to_server(_Servicer(run_leased), self._server)
        if handlers:
            self._server.add_generic_rpc_handlers(handlers)
        try:
            if tls is None:
                port = self._server.add_insecure_port(address)
            else:
                cert, key = tls
                credentials = grpc.ssl_server_credentials([(key, cert)])
                port = self._server.add_secure_port(address, credentials)
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


# ---------------------------------------------------------------- frames (worker data plane)

_MAX_CONNECTIONS = 64


class FrameServer:
    """A worker's direct calls as frames (``anypu.comm``) on TCP, one thread per connection.

    The data plane of a lease: after the agent's DirectService named this worker, a client
    sends ``{"lease_id": …}`` + encoded inputs and reads the result frame back. Python
    gRPC's server loop and thread pool cost ≈ 0.5 ms of CPU and a thread wake-up per call
    here, as much as the model itself; a connection's own thread blocked on its socket is
    woken once. Frames are bounded in size, and a connection past ``_MAX_CONNECTIONS`` is
    closed at once. ``tls``: (certificate file, key file) of this node, to serve TLS as
    the agent's DirectService does.
    """

    def __init__(
        self, run_leased: RunLeased, host: str, tls: tuple[str, str] | None = None
    ) -> None:
        self.run_leased = run_leased
        self._tls: ssl.SSLContext | None = None
        if tls is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
            self._tls.load_cert_chain(*tls)
        self._socket = socket.create_server((host, 0))
        self.address = f"{host}:{self._socket.getsockname()[1]}"
        self._open = threading.BoundedSemaphore(_MAX_CONNECTIONS)
        threading.Thread(target=self._accept, name="anypu-frames", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # stopped
            if not self._open.acquire(blocking=False):
                connection.close()
                continue
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            channel: int | socket.socket = connection.fileno()
            if self._tls is not None:
                connection.settimeout(10)  # a peer that never finishes its handshake
                connection = self._tls.wrap_socket(connection, server_side=True)
                connection.settimeout(None)
                channel = connection
            while True:
                try:
                    header, payload = read_frame(channel, _MAX_MESSAGE)
                except (EOFError, OSError, ValueError):
                    return  # closed, or not our protocol: drop the connection
                try:
                    result, _ = self.run_leased(str(header.get("lease_id", "")), payload)
                    reply, outputs = result_to_frame(result)
                except Exception as error:  # our own failure, not the model's
                    log.exception("direct call failed")
                    reply, outputs = {"error": f"the direct call failed: {error}"}, b""
                write_frame(channel, reply, outputs)
        except OSError:
            pass  # the client went away mid-answer, or its TLS handshake failed
        finally:
            connection.close()
            self._open.release()

    def stop(self) -> None:
        self._socket.close()
