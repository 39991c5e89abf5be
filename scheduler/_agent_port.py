"""The agent port: agents' streams held by one event loop, not a thread each.

A stream on the client port (``_grpc``) holds two threads for the agent's lifetime, so
a few thousand agents exhaust a process. Here ``grpc.aio`` serves ``AgentService`` on a
port of its own (mutual TLS with ``--ca-hash``; plaintext with ``--insecure``): each
stream is a coroutine, its messages go to the service's inbox (``_agent_stream``), and
what the state sends reaches the loop by ``call_soon_threadsafe``. Only what blocks
leaves the loop, for a small pool of threads: a Join (the state's lock, the token
check), a failed authentication's throttle delay, and the unary and blob calls
(``Probe``, ``LookUpDeployment``, ``GetBlob``/``PutBlob``, sync handlers gRPC runs in
that pool).

Measured before it was built (``docs/benchmarks.md``, 10,000 agents): on this 2-core
machine the thread-per-stream scheduler did not hold 3,000 simulated agents (they had
not all joined after 120 s).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from concurrent import futures
from typing import Any

import grpc

from anypu.comm import FailureThrottle, server_credentials, server_options
from anypu.errors import AuthenticationError, ConfigError
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.scheduler._agent_stream import CLOSED, AgentStream, JoinAdmission, JoinsBusyError
from anypu.scheduler._grpc import AgentServicer, BlobServicer, status_of, throttled
from anypu.scheduler._guard import AsyncDecodeGuard
from anypu.scheduler._security import ServerSecurity
from anypu.scheduler._service import SchedulerService

__all__ = ["AgentPort"]

log = logging.getLogger("anypu.scheduler")

#: Threads for the unary and blob calls (sync handlers gRPC runs off the loop).
BLOCKING_THREADS = 32
#: Threads for Joins and failed authentications' delays. A rejoin storm queues its
#: Joins here: they take the state's lock one at a time anyway, and every thread more
#: takes the interpreter from the loop that reads everyone's heartbeats.
JOIN_THREADS = 2
#: Joins waiting at once before more are refused (RESOURCE_EXHAUSTED; agents retry with
#: jittered backoff): a rejoin storm is admitted at the pace the state takes Joins, and
#: the loop keeps reading the joined agents' heartbeats meanwhile.
MAX_JOINING = 64


async def _abort(context: Any, error: Exception) -> None:
    status = status_of(error)
    if status is None:
        raise error
    await context.abort(*status)


class LoopAgentServicer(AgentServicer):
    """``AgentService`` with ``Connect`` as a coroutine (the rest as on the client port)."""

    def __init__(
        self,
        service: SchedulerService,
        throttle: FailureThrottle,
        security: ServerSecurity | None,
        pool: futures.ThreadPoolExecutor,
    ) -> None:
        """``pool``: where Joins and throttle delays wait, off the loop."""
        super().__init__(service, throttle, security)
        self.pool = pool
        self.admission = JoinAdmission(MAX_JOINING)  # used on the loop only

    async def Connect(  # type: ignore[override]  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        try:
            credential = self.enrolment(context)
        except AuthenticationError as error:
            peer = context.peer()
            answer = await loop.run_in_executor(
                self.pool, throttled, self.throttle, peer, "", error
            )
            await _abort(context, answer)
            return
        outbox: asyncio.Queue[Any] = asyncio.Queue()

        def send(item: Any) -> None:
            loop.call_soon_threadsafe(outbox.put_nowait, item)

        stream = AgentStream(self.service, send, credential, context.peer(), self.throttle)

        async def read() -> None:
            try:
                async for message in request_iterator:
                    if stream.joined:
                        stream.receive(message)  # posted: nothing here waits
                    else:
                        await self._join(loop, stream, message)
            except asyncio.CancelledError:
                pass
            except JoinsBusyError as busy:
                stream.failure = busy
            except Exception as error:
                await loop.run_in_executor(self.pool, stream.failed, error)
            finally:
                stream.close()
                outbox.put_nowait(CLOSED)

        reader = asyncio.ensure_future(read())
        try:
            while (message := stream.outgoing(await outbox.get())) is not None:
                yield message
        finally:
            reader.cancel()
        if stream.failure is not None:
            await _abort(context, stream.failure)

    async def _join(
        self, loop: asyncio.AbstractEventLoop, stream: AgentStream, message: Any
    ) -> None:
        """Hand the stream's first message to a join thread, once admitted."""
        self.admission.enter()
        try:
            await loop.run_in_executor(self.pool, stream.receive, message)
        finally:
            self.admission.leave()


class AgentPort:
    """``AgentService`` and ``BlobService`` on ``host:port`` from an event loop thread of
    their own; ``security``: mutual TLS with node certificates (None: plaintext)."""

    def __init__(
        self,
        service: SchedulerService,
        host: str,
        port: int,
        security: ServerSecurity | None,
        throttle: FailureThrottle,
    ) -> None:
        self.pool = futures.ThreadPoolExecutor(BLOCKING_THREADS, "anypu-agent-port")
        self.joins = futures.ThreadPoolExecutor(JOIN_THREADS, "anypu-agent-joins")
        self.loop = asyncio.new_event_loop()
        self._server: Any = None
        self.port = 0
        started = threading.Event()
        failed: list[BaseException] = []

        async def start() -> None:
            server = grpc.aio.server(
                migration_thread_pool=self.pool,
                interceptors=[AsyncDecodeGuard()],
                options=server_options(),
            )
            agents = LoopAgentServicer(service, throttle, security, self.joins)
            rpc.add_AgentServiceServicer_to_server(agents, server)
            rpc.add_BlobServiceServicer_to_server(BlobServicer(service, throttle, security), server)
            if security is None:
                self.port = server.add_insecure_port(f"{host}:{port}")
            else:
                mtls = server_credentials(security.server, security.ca.cert_pem, True)
                self.port = server.add_secure_port(f"{host}:{port}", mtls)
            if self.port == 0:
                raise ConfigError(
                    f"cannot listen on {host}:{port} (agent port): is another process"
                    " using it? pick one with --agent-port"
                )
            await server.start()
            self._server = server

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(start())
            except BaseException as error:
                failed.append(error)
                started.set()
                return
            started.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="anypu-agent-port", daemon=True)
        self._thread.start()
        started.wait()
        if failed:
            self.pool.shutdown(wait=False)
            self.joins.shutdown(wait=False)
            raise failed[0]

    def stop(self, grace: float | None = None) -> None:
        """Stop serving (streams get ``grace`` seconds to end) and the loop with it."""
        if self._server is not None and self.loop.is_running():
            done = asyncio.run_coroutine_threadsafe(self._server.stop(grace), self.loop)
            try:
                done.result(timeout=(grace or 0) + 10)
            except Exception:
                log.warning("the agent port did not stop cleanly", exc_info=True)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.pool.shutdown(wait=False)
        self.joins.shutdown(wait=False)
