"""gRPC channels and servers, opened the same way on every side, and what a failed call means.

The scheduler, agents and SDK clients all dial with ``grpc_channel`` and serve with
``server_options``, so message limits and keepalives cannot drift apart between the two
ends of a stream. ``raise_for_rpc`` turns a failed call into the ``anypu.errors`` error a
user can act on.
"""

from __future__ import annotations

from typing import NoReturn

import grpc

from anypu.comm._tls import SERVER_NAME
from anypu.errors import AnypuError, AuthenticationError, ConfigError, SchedulerUnavailableError

__all__ = [
    "BLOB_CHUNK_BYTES",
    "INLINE_BYTES",
    "MAX_MESSAGE_BYTES",
    "grpc_channel",
    "raise_for_rpc",
    "server_options",
]

#: The largest message either side sends or accepts on a scheduler connection.
MAX_MESSAGE_BYTES = 256 << 20
#: Blobs (artifacts, large inputs) travel as a stream of chunks of this size.
BLOB_CHUNK_BYTES = 1 << 20
#: Payloads (a job's inputs, its outputs) above this travel as blobs in chunks, never in
#: one message: a message must stay far below MAX_MESSAGE_BYTES and must not hold an
#: agent's stream (and its heartbeats) for long.
INLINE_BYTES = 4 << 20

_KEEPALIVE = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.optimization_target", "latency"),
    ("grpc.keepalive_permit_without_calls", 1),
)


def _limits(max_message_bytes: int) -> list[tuple[str, int | str]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def server_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int | str]]:
    """Options of a gRPC server that clients dialled with ``grpc_channel`` can talk to."""
    return [
        *_limits(max_message_bytes),
        *_KEEPALIVE,
        # Clients ping every 10 s while idle; a server refuses pings closer than this.
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


def grpc_channel(
    address: str, credentials: grpc.ChannelCredentials | None = None, server_name: str = ""
) -> grpc.Channel:
    """A channel to ``address``: TLS with ``credentials``, else plaintext (``--insecure``).

    Over TLS the server's certificate must name ``server_name`` (default: the scheduler's
    name, ``SERVER_NAME``) whatever address is dialled, so a node behind NAT may reach the
    scheduler by any address: the pinned CA is what makes the server authentic.
    """
    options = [*_limits(MAX_MESSAGE_BYTES), *_KEEPALIVE, ("grpc.enable_retries", 0)]
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    options.append(("grpc.ssl_target_name_override", server_name or SERVER_NAME))
    return grpc.secure_channel(address, credentials, options=options)


#: Trailing metadata naming the blob a FAILED_PRECONDITION answer says is missing.
MISSING_BLOB_KEY = "anypu-missing-blob"


class MissingBlobError(ConfigError):
    """A request named a blob the scheduler does not hold (never uploaded, or collected
    after it went unused): upload it and send the request again."""

    def __init__(self, message: str, digest: str = "") -> None:
        super().__init__(message)
        self.digest = digest


def raise_for_rpc(error: grpc.RpcError, address: str) -> NoReturn:
    """Raise the anypu error a user can act on for a failed call to ``address``."""
    code = error.code() if hasattr(error, "code") else None
    detail = error.details() if hasattr(error, "details") else str(error)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        raise AuthenticationError(detail) from None
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS):
        raise ConfigError(detail) from None
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        missing = [str(item.value) for item in metadata or () if item.key == MISSING_BLOB_KEY]
        if missing:
            raise MissingBlobError(detail or "", missing[0]) from None
        raise ConfigError(detail) from None
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        raise AnypuError(detail) from None  # throttled: worth retrying later
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        raise SchedulerUnavailableError(
            f"no anypu scheduler answers at {address} ({detail}). Start one with"
            f" `anypu scheduler --port {address.rsplit(':', 1)[-1]}`, or check the address"
            " and ANYPU_ADDRESS. Schedulers speak TLS (pass the CA hash one prints:"
            " --ca-hash, ca_hash= or ANYPU_CA_HASH); only one started with --insecure is"
            " reached without it."
        ) from None
    raise error
