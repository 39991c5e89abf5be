"""How an agent reaches its scheduler: over gRPC, or in-process for the embedded mode.

Both open one stream *from the agent* (so a node behind NAT needs no inbound port),
send the Join first, and yield the scheduler's messages until the stream ends.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from anypu.comm import (
    BLOB_CHUNK_BYTES,
    INLINE_BYTES,
    MAX_MESSAGE_BYTES,
    channel_credentials,
    grpc_channel,
    raise_for_rpc,
)
from anypu.errors import SchedulerUnavailableError
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.protos import convert
from anypu.protos import messages as m

if TYPE_CHECKING:
    from anypu.agents._enrolment import NodeTLS

__all__ = ["GrpcLink", "InProcessLink", "SchedulerLink"]

_END = object()


class SchedulerLink(Protocol):
    """``outputs_inline_bytes``: outputs above this go as a blob (``put_blob``) before the
    result that names them; None: always inline (the in-process link has no messages)."""

    outputs_inline_bytes: int | None

    def open(self, join: m.Join) -> Iterator[m.SchedulerMessage]: ...
    def send(self, message: m.AgentMessage) -> None: ...
    def fetch_blob(self, digest: str) -> bytes: ...
    def put_blob(self, digest: str, data: bytes) -> None: ...
    def look_up_deployment(self, lookup: m.DeploymentLookup) -> m.DeploymentLookupReply: ...
    def peer_credentials(self) -> grpc.ChannelCredentials | None: ...
    def close(self, drain_s: float = 3.0) -> None: ...


class GrpcLink:
    """``tls`` (a ``NodeTLS``): speak mutual TLS to the agent port; else plaintext Joins."""

    outputs_inline_bytes: int | None = INLINE_BYTES

    def __init__(self, address: str, token: str = "", tls: NodeTLS | None = None) -> None:
        self.address = address
        self.token = token
        self.tls = tls
        self._channel: grpc.Channel | None = None
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._call: Any = None
        self._peers: dict[tuple[str, str], Any] = {}

    def open(self, join: m.Join) -> Iterator[m.SchedulerMessage]:
        self.close()
        if self.tls is None:
            self._channel = grpc_channel(self.address)
        else:
            memory = sum(d.memory_bytes for d in join.devices)
            creds = self.tls.credentials(join.name, join.tier, len(join.devices), memory)
            self._channel = grpc_channel(self.tls.agent_address(), creds)
        self._outbox = queue.SimpleQueue()
        outbox = self._outbox
        outbox.put(convert.agent_message_to_pb(join))

        def requests() -> Iterator[Any]:
            while True:
                item = outbox.get()
                if item is _END:
                    return
                if item.WhichOneof("kind") == "heartbeat" and item.heartbeat.wants_echo:
                    # Timed from the wire, not from the tick that built it: the queue
                    # and thread hop before gRPC are the agent's, not the network's.
                    item.heartbeat.sent_at = time.time()
                yield item

        self._call = rpc.AgentServiceStub(self._channel).Connect(requests())
        return self._responses(self._call)

    def _responses(self, call: Any) -> Iterator[m.SchedulerMessage]:
        try:
            for message in call:
                yield convert.scheduler_message_from_pb(message)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED:
                return
            raise_for_rpc(error, self.address)

    def send(self, message: m.AgentMessage) -> None:
        """Queue ``message`` on the stream; ValueError if it is over the message limit
        (gRPC would end the whole stream for it)."""
        encoded = convert.agent_message_to_pb(message)
        size = encoded.ByteSize()
        if size > MAX_MESSAGE_BYTES:
            raise ValueError(
                f"a {type(message).__name__} of {size} bytes is over the {MAX_MESSAGE_BYTES}"
                " byte message limit and cannot be sent"
            )
        self._outbox.put(encoded)

    def _blob_stub(self) -> Any:
        if self._channel is None:
            raise SchedulerUnavailableError(f"not connected to {self.address}")
        return rpc.BlobServiceStub(self._channel)

    def fetch_blob(self, digest: str) -> bytes:
        stub = self._blob_stub()
        try:
            chunks = stub.GetBlob(convert.get_blob_request(digest), metadata=self._metadata())
            return bytes(convert.join_blob_chunks(chunks, digest))
        except grpc.RpcError as error:
            raise_for_rpc(error, self.address)

    def put_blob(self, digest: str, data: bytes) -> None:
        """Upload a blob in chunks (outputs too large for one message)."""
        stub = self._blob_stub()
        chunks = convert.blob_chunks(digest, data, BLOB_CHUNK_BYTES)
        try:
            stub.PutBlob(chunks, metadata=self._metadata())
        except grpc.RpcError as error:
            raise_for_rpc(error, self.address)

    def probe(self, payload: bytes) -> None:
        """Send a bandwidth probe; returns once the scheduler has all of it."""
        if self._channel is None:
            raise SchedulerUnavailableError(f"not connected to {self.address}")
        stub = rpc.AgentServiceStub(self._channel)
        try:
            stub.Probe(
                convert.pb.ProbeRequest(payload=payload), metadata=self._metadata(), timeout=60
            )
        except grpc.RpcError as error:
            raise_for_rpc(error, self.address)

    def look_up_deployment(self, lookup: m.DeploymentLookup) -> m.DeploymentLookupReply:
        """A gateway's look-up of a deployment (``_gateway``)."""
        if self._channel is None:
            raise SchedulerUnavailableError(f"not connected to {self.address}")
        stub = rpc.AgentServiceStub(self._channel)
        try:
            reply = stub.LookUpDeployment(
                convert.deployment_lookup_to_pb(lookup), metadata=self._metadata(), timeout=10
            )
        except grpc.RpcError as error:
            raise_for_rpc(error, self.address)
        return convert.deployment_lookup_reply_from_pb(reply)

    def peer_credentials(self) -> grpc.ChannelCredentials | None:
        """How to dial other agents' direct ports: TLS trusting the cluster CA, or None
        (plaintext) on an insecure link."""
        return None if self.tls is None else channel_credentials(self.tls.ca_pem())

    def _peer(self, peer: m.Peer) -> Any:
        """A DirectService stub for another site's agent: over TLS (the scheduler's CA,
        the certificate naming that node) when this link speaks TLS."""
        key = (peer.direct_address, peer.node_id)
        known = self._peers.get(key)
        if known is None:
            if self.tls is None:
                channel = grpc_channel(peer.direct_address)
            else:
                creds = channel_credentials(self.tls.ca_pem())
                channel = grpc_channel(peer.direct_address, creds, server_name=peer.node_id)
            known = self._peers[key] = rpc.DirectServiceStub(channel)
        return known

    def ping_peer(self, peer: m.Peer) -> None:
        self._peer(peer).Ping(convert.pb.PingRequest(), timeout=5)

    def probe_peer(self, peer: m.Peer, payload: bytes) -> None:
        self._peer(peer).Probe(convert.pb.ProbeRequest(payload=payload), timeout=60)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)

    def close(self, drain_s: float = 3.0) -> None:
        """End the stream: what was queued (a Leave) goes first, for up to ``drain_s``."""
        self._outbox.put(_END)
        if self._call is not None:
            deadline = time.monotonic() + drain_s
            while not self._call.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            self._call.cancel()
            self._call = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class InProcessLink:
    """The embedded mode: the same session code, with queues instead of sockets."""

    outputs_inline_bytes: int | None = None

    def __init__(self, service: Any) -> None:
        self.service = service
        self.handler: Any = None  # set by the agent: messages are delivered synchronously
        self.direct: Any = None  # set by an agent taking calls under leases
        self._session: Any = None
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def open(self, join: m.Join) -> Iterator[m.SchedulerMessage]:
        self._inbox = queue.SimpleQueue()
        inbox = self._inbox
        handler = self.handler

        def deliver(message: m.SchedulerMessage) -> None:
            # Straight into the agent, in the scheduler's thread: no hop on the hot path.
            if handler is not None and not isinstance(message, m.JoinAck):
                handler(message)
            else:
                inbox.put(message)

        self._session = self.service.attach_agent(
            deliver, lambda: inbox.put(_END), direct=self.direct
        )
        self._session.receive(join)
        return self._messages(inbox)

    @staticmethod
    def _messages(inbox: queue.SimpleQueue[Any]) -> Iterator[m.SchedulerMessage]:
        while True:
            item = inbox.get()
            if item is _END:
                return
            yield item

    def send(self, message: m.AgentMessage) -> None:
        if self._session is not None:
            self._session.receive(message)

    def fetch_blob(self, digest: str) -> bytes:
        return self.service.blobs.get(digest)

    def put_blob(self, digest: str, data: bytes) -> None:
        self.service.blobs.put(data, digest)

    def look_up_deployment(self, lookup: m.DeploymentLookup) -> m.DeploymentLookupReply:
        return self.service.look_up_deployment(lookup)

    def peer_credentials(self) -> grpc.ChannelCredentials | None:
        return None

    def close(self, drain_s: float = 3.0) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        self._inbox.put(_END)
