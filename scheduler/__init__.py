"""The central scheduler: a state machine without I/O, and the servers around it.

``SchedulerState.handle(event) -> actions`` holds every rule (placement rounds, retries,
leases, exactly-once results); ``SchedulerService`` is the thread-safe shell that persists
to SQLite (``StateStore``, ``BlobStore``), sends down agents' streams and wakes waiting
clients; ``serve`` (gRPC) and ``serve_http`` (dashboard, JSON API, ``/metrics``) are thin
adapters around the service. ``scheduler_command`` and ``token_command`` are the
``anypu scheduler`` and ``anypu token`` commands.
"""

from anypu.comm import FailureThrottle, ThrottledError
from anypu.scheduler._commands import admin_token, scheduler_command, token_command
from anypu.scheduler._http import DashboardServer, serve_http
from anypu.scheduler._metrics import SchedulerMetrics, cluster_usage
from anypu.scheduler._records import JOB_STATES, TERMINAL, JobRecord, NodeRecord
from anypu.scheduler._retention import Retention, Sweep
from anypu.scheduler._security import ServerSecurity
from anypu.scheduler._servers import serve
from anypu.scheduler._service import (
    AgentSession,
    NotFoundError,
    OutputsGoneError,
    SchedulerService,
)
from anypu.scheduler._state import (
    Action,
    AgentConnected,
    AgentDisconnected,
    AgentSaid,
    CancelRequested,
    Drop,
    Event,
    ForgetNode,
    JobsSubmitted,
    JobSubmitted,
    NodeRemoved,
    Notify,
    PersistJob,
    PersistLearned,
    PersistNode,
    SchedulerConfig,
    SchedulerState,
    Send,
    Tick,
)
from anypu.scheduler._store import BlobStore, StateStore
from anypu.scheduler._tokens import (
    AccessDeniedError,
    Enrolment,
    NameTakenError,
    TokenStore,
    parse_ttl,
)

__all__ = [
    "JOB_STATES",
    "TERMINAL",
    "AccessDeniedError",
    "Action",
    "AgentConnected",
    "AgentDisconnected",
    "AgentSaid",
    "AgentSession",
    "BlobStore",
    "CancelRequested",
    "DashboardServer",
    "Drop",
    "Enrolment",
    "Event",
    "FailureThrottle",
    "ForgetNode",
    "JobRecord",
    "JobSubmitted",
    "JobsSubmitted",
    "NameTakenError",
    "NodeRecord",
    "NodeRemoved",
    "NotFoundError",
    "Notify",
    "OutputsGoneError",
    "PersistJob",
    "PersistLearned",
    "PersistNode",
    "Retention",
    "SchedulerConfig",
    "SchedulerMetrics",
    "SchedulerService",
    "SchedulerState",
    "Send",
    "ServerSecurity",
    "StateStore",
    "Sweep",
    "ThrottledError",
    "Tick",
    "TokenStore",
    "admin_token",
    "cluster_usage",
    "parse_ttl",
    "scheduler_command",
    "serve",
    "serve_http",
    "token_command",
]
