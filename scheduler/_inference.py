"""The scheduler as a gateway of the Open Inference Protocol: its own state as the
gateway's directory (``anypu.comm.InferenceGateway`` serves the protocol itself)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from anypu.comm import CallLog, FailureThrottle, InferenceGateway
from anypu.protos import messages as m

if TYPE_CHECKING:
    from anypu.scheduler._service import SchedulerService

__all__ = ["SchedulerDirectory", "scheduler_gateway"]


class SchedulerDirectory:
    """``DeploymentDirectory`` over the scheduler's own state. Callers' sites are not
    known here (an address is not a site), so calls are not counted as traffic; their
    times are, as callers' (told with each listing, as a gateway agent tells them)."""

    def __init__(self, service: SchedulerService) -> None:
        self.service = service
        self.calls = CallLog()

    def deployment(self, name: str) -> m.DeploymentInfo | None:
        _, times = self.calls.drain()
        if times:
            self.service.calls_reported(m.Traffic(times=times))
        return self.service.deployment(name)

    def deployed(self) -> list[str]:
        return [d.name for d in self.service.deployments()]

    def authorize(self, token: str, model: str) -> str:
        return self.service.refusal(token, model)

    def wake(self, name: str, replicas: int, reason: str) -> None:
        self.service.scale(name, replicas, reason)

    def answered(self, name: str, seconds: float) -> None:
        self.calls.add(name, seconds)


def scheduler_gateway(
    service: SchedulerService,
    credentials: grpc.ChannelCredentials | None = None,
    throttle: FailureThrottle | None = None,
) -> InferenceGateway:
    """The protocol's gateway at the scheduler (``credentials``: TLS to the agents)."""
    return InferenceGateway(SchedulerDirectory(service), credentials, throttle)
