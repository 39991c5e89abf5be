"""One agent's stream, whatever serves it: ``AgentStream`` is what both gRPC adapters
(``_grpc``'s thread per stream on the client port, ``_agent_port``'s event loop on the
agent port) do with each message, so they differ only in how they wait.

Up the stream: the first message must be a Join, handled at once (it may be refused:
wrong token, name taken, bad inventory); everything after it is posted to the service's
inbox (``SchedulerService.post``), which one thread hands to the state in batches, so a
heartbeat costs no lock of its own and 10,000 agents' heartbeats are a few batches a
second. Down the stream: what the state sends, each heartbeat echo corrected by how long
the scheduler held its heartbeat (NTP's and TWAMP's correction). When the stream ends,
its leaving is posted behind its last messages.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import grpc

from anypu.comm import FailureThrottle, ThrottledError
from anypu.errors import AuthenticationError, ConfigError
from anypu.protos import convert
from anypu.protos import messages as m
from anypu.scheduler._guard import check_decoded
from anypu.scheduler._service import AgentSession, SchedulerService
from anypu.scheduler._tokens import AccessDeniedError, NameTakenError

__all__ = ["CLOSED", "AgentStream", "JoinAdmission", "JoinsBusyError"]

log = logging.getLogger("anypu.scheduler")

CONNECT_METHOD = "/anypu.v1.AgentService/Connect"
#: Put on a stream's outbox to end it.
CLOSED = object()
#: Heartbeat arrival times kept per stream for their echoes (one a second is asked for).
_ARRIVALS_KEPT = 64


class JoinsBusyError(Exception):
    """Too many Joins are waiting already (admission): the agent is to come back later;
    answered RESOURCE_EXHAUSTED, which agents retry with jittered backoff."""


class JoinAdmission:
    """At most ``limit`` Joins waiting at once (``enter`` .. ``leave``); one more is
    refused with ``JoinsBusyError``, and the refusals are logged at most once a second.
    Not thread-safe: an event loop's."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self.waiting = 0
        self.refused = 0  # since the last log line
        self.refused_total = 0
        self._logged_at = -math.inf

    def enter(self) -> None:
        if self.waiting < self.limit:
            self.waiting += 1
            return
        self.refused += 1
        self.refused_total += 1
        now = self.clock()
        if now - self._logged_at >= 1.0:
            log.warning(
                "admitting agents: %d join(s) refused since the last report, %d waiting"
                " (they come back with jittered backoff)",
                self.refused,
                self.waiting,
            )
            self.refused, self._logged_at = 0, now
        raise JoinsBusyError(
            f"the scheduler is admitting {self.limit} joins at once already: try again in a"
            " moment (anypu agents do, with jittered backoff)"
        )

    def leave(self) -> None:
        self.waiting -= 1


class AgentStream:
    """The messages of one agent stream (see the module docstring). ``send(item)``
    queues ``item`` (a scheduler message, or ``CLOSED``) for the adapter to write; it
    may be called from any thread. One reader calls ``receive`` and one writer
    ``outgoing``, on one thread (an event loop) or two (the client port's)."""

    def __init__(
        self,
        service: SchedulerService,
        send: Any,
        credential: Any,
        peer: str,
        throttle: FailureThrottle,
    ) -> None:
        self.session: AgentSession = service.attach_agent(send, lambda: send(CLOSED))
        self.session.credential = credential
        self.peer = peer
        self.throttle = throttle
        self.failure: Exception | None = None
        self._said: object = None
        # When each heartbeat that asks for an echo came off the stream, by its sent_at:
        # written by the reader, read by the writer.
        self._arrived: dict[float, float] = {}
        self._arrived_lock = threading.Lock()

    @property
    def joined(self) -> bool:
        return self.session.node_id is not None

    def receive(self, message: Any) -> None:
        """One message off the stream (protobuf). The Join blocks on the state's lock
        (an event loop runs it in a thread); every later message is only posted."""
        said = convert.agent_message_from_pb(check_decoded(message, CONNECT_METHOD))
        self._said = said
        if isinstance(said, m.Heartbeat) and said.wants_echo:
            with self._arrived_lock:
                self._arrived[said.sent_at] = time.time()
                if len(self._arrived) > _ARRIVALS_KEPT:  # echoes the state did not send
                    del self._arrived[next(iter(self._arrived))]
        self.session.receive(said, post=True)

    def outgoing(self, item: Any) -> Any:
        """``item`` as the protobuf to write, or None once the stream is to end."""
        if item is CLOSED:
            return None
        if isinstance(item, m.HeartbeatEcho):
            with self._arrived_lock:
                at = self._arrived.pop(item.sent_at, None)
            if at is not None:
                item = replace(item, held_s=max(0.0, time.time() - at))
        return convert.scheduler_message_to_pb(item)

    def failed(self, error: BaseException) -> None:
        """The reader stopped on ``error``: keep what the agent is to be told. A failed
        authentication counts against the peer, and may wait (``FailureThrottle``):
        an event loop calls this in a thread."""
        if isinstance(error, AuthenticationError):
            self.failure = error
            if not isinstance(error, AccessDeniedError):
                token = self._said.token if isinstance(self._said, m.Join) else ""
                try:
                    self.throttle.failed(self.peer, token)
                except ThrottledError as throttled:
                    self.failure = throttled
        elif isinstance(error, (NameTakenError, ConfigError, ValueError)):
            self.failure = error
        elif isinstance(error, grpc.RpcError):
            pass  # the agent went away; the deadline takes it from here
        elif isinstance(error, Exception):  # keep serving other agents; report this one
            log.error("agent stream failed", exc_info=error)
            self.failure = error

    def close(self) -> None:
        """The stream ended: the agent's leaving goes behind its last messages."""
        self.session.close(post=True)
