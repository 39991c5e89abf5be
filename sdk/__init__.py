"""What users import: ``from anypu import sdk``.

::

    y = sdk.run(model, x)                      # embedded: nothing to start
    sdk.connect("10.0.0.5:7070", token="T")    # or ANYPU_ADDRESS / ANYPU_TOKEN
    y = sdk.run(model, x)                      # same call, placed on the network
    fut = sdk.submit(model, x); fut.result()   # asynchronous form

Nobody names a device: the scheduler chooses where each job runs.

Names are imported on first use, so ``from anypu import sdk`` (and ``anypu status``)
does not load torch until a model is run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anypu._labels import DoesNotExist, Exists, In, NotIn
    from anypu.sdk._api import (
        client,
        connect,
        deploy,
        deployments,
        disconnect,
        jobs,
        nodes,
        promote,
        rollback,
        run,
        scale,
        submit,
        undeploy,
    )
    from anypu.sdk._client import Client, JobHandle, RunOptions
    from anypu.sdk._embedded import Embedded, InProcessTransport
    from anypu.sdk._service_commands import (
        deploy_command,
        deployments_command,
        scale_command,
    )
    from anypu.sdk._services import Service
    from anypu.sdk._status import node_command, status_command
    from anypu.sdk._transport import GrpcTransport, Transport

_HOMES = {
    "DoesNotExist": "anypu._labels",
    "Exists": "anypu._labels",
    "In": "anypu._labels",
    "NotIn": "anypu._labels",
    "Client": "anypu.sdk._client",
    "Embedded": "anypu.sdk._embedded",
    "GrpcTransport": "anypu.sdk._transport",
    "InProcessTransport": "anypu.sdk._embedded",
    "JobHandle": "anypu.sdk._client",
    "RunOptions": "anypu.sdk._client",
    "Service": "anypu.sdk._services",
    "client": "anypu.sdk._api",
    "deploy_command": "anypu.sdk._service_commands",
    "deployments_command": "anypu.sdk._service_commands",
    "scale_command": "anypu.sdk._service_commands",
    "deploy": "anypu.sdk._api",
    "deployments": "anypu.sdk._api",
    "scale": "anypu.sdk._api",
    "undeploy": "anypu.sdk._api",
    "Transport": "anypu.sdk._transport",
    "connect": "anypu.sdk._api",
    "disconnect": "anypu.sdk._api",
    "jobs": "anypu.sdk._api",
    "nodes": "anypu.sdk._api",
    "run": "anypu.sdk._api",
    "promote": "anypu.sdk._api",
    "rollback": "anypu.sdk._api",
    "node_command": "anypu.sdk._status",
    "status_command": "anypu.sdk._status",
    "submit": "anypu.sdk._api",
}

__all__ = [
    "Client",
    "DoesNotExist",
    "Embedded",
    "Exists",
    "GrpcTransport",
    "In",
    "InProcessTransport",
    "JobHandle",
    "NotIn",
    "RunOptions",
    "Service",
    "Transport",
    "client",
    "connect",
    "deploy",
    "deploy_command",
    "deployments",
    "deployments_command",
    "disconnect",
    "jobs",
    "node_command",
    "nodes",
    "promote",
    "rollback",
    "run",
    "scale",
    "scale_command",
    "status_command",
    "submit",
    "undeploy",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'anypu.sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found once; later lookups are ordinary attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
