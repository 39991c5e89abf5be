"""The node agent: joins a scheduler, heartbeats, runs jobs in one worker per slice.

``Agent`` opens one stream *from* the node (so a node behind NAT needs no inbound port)
over a ``SchedulerLink``: ``GrpcLink`` to a scheduler on the network (mutual TLS once
``NodeTLS`` has enrolled the node), or ``InProcessLink`` in the embedded mode; what it
decides lives in ``AgentState`` (events in, instructions out, no I/O). Workers
load model artifacts with ``load_artifact``, which never unpickles; the SDK checks its own
exports with ``check_export_archive``, the rule an agent applies. ``agent_command`` is
the ``anypu agent`` command.
"""

from anypu.agents._agent import Agent, AgentConfig
from anypu.agents._artifact import (
    ArtifactError,
    LoadedModel,
    check_export_archive,
    load_artifact,
    run_model,
)
from anypu.agents._commands import agent_command, direct_tls_files
from anypu.agents._enrolment import NodeTLS
from anypu.agents._link import GrpcLink, InProcessLink, SchedulerLink
from anypu.agents._operators import graph_operators
from anypu.agents._state import AgentIdentity, AgentState, AgentStateConfig
from anypu.agents._workers import run_dispatched_here

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentIdentity",
    "AgentState",
    "AgentStateConfig",
    "ArtifactError",
    "GrpcLink",
    "InProcessLink",
    "LoadedModel",
    "NodeTLS",
    "SchedulerLink",
    "agent_command",
    "check_export_archive",
    "direct_tls_files",
    "graph_operators",
    "load_artifact",
    "run_dispatched_here",
    "run_model",
]
