"""The embedded mode: a scheduler and a local agent in this process, no setup at all.

``sdk.run`` with no address configured starts them on first use and reuses them; the
scheduler keeps its SQLite state in a temporary directory and the agent runs jobs in
threads of this process (the user's process already runs their model). This is the one
place where scheduler and agent meet in one process; ``InProcessTransport`` is how the
SDK reaches a scheduler here without encoding anything.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

from anypu.agents import Agent, AgentConfig, InProcessLink, run_dispatched_here
from anypu.devices import discover, make_probes
from anypu.errors import AnypuError
from anypu.protos import messages as m
from anypu.scheduler import SchedulerConfig, SchedulerService

__all__ = ["Embedded", "InProcessTransport"]


class Embedded:
    """An in-process scheduler with one local agent."""

    def __init__(self, devices_file: str | None = None, tier: str = "device") -> None:
        self.state_dir = tempfile.mkdtemp(prefix="anypu-embedded-")
        self.service = SchedulerService(
            self.state_dir, token=None, config=SchedulerConfig(unschedulable_timeout_s=0.0)
        )
        probes = make_probes()
        devices = discover(devices_file, probes=probes)
        name = (socket.gethostname().split(".")[0] or "local")[:40]
        self.agent = Agent(
            AgentConfig(
                name=f"local-{name}" if name[0].isalnum() else "local",
                tier=tier,
                devices=devices,
                cache_dir=os.path.join(self.state_dir, "cache"),
                isolation="thread",
                direct_runs=True,
                probes=tuple(probe for probe in probes if probe.found),
            ),
            InProcessLink(self.service),
        )
        self._thread = threading.Thread(
            target=self.agent.run, name="anypu-local-agent", daemon=True
        )
        self._thread.start()
        if not self.agent.connected.wait(30):
            raise RuntimeError("the embedded agent did not join its scheduler within 30 s")
        atexit.register(self.close)

    def close(self) -> None:
        self.agent.stop()
        self.service.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)


class InProcessTransport:
    """A ``Transport`` straight into a ``SchedulerService`` in this process."""

    def __init__(self, service: SchedulerService, address: str = "embedded") -> None:
        self.service = service
        self.address = address

    def missing_blobs(self, digests: list[str]) -> list[str]:
        return [d for d in digests if not self.service.blobs.has(d)]

    def put_blob(self, digest: str, data: bytes | Sequence[memoryview]) -> None:
        if isinstance(data, bytes):
            self.service.blobs.put(data, digest)
        else:
            self.service.blobs.put_chunks(data, digest)

    def submit(self, request: m.SubmitRequest) -> tuple[m.JobInfo, bytes | bytearray]:
        if request.wait and not request.wait_timeout_s and not request.timeout_s:
            # The caller blocks until the outcome anyway: let it run the job itself when
            # an in-process slice takes it at once, rather than wake a worker thread. Not
            # with a timeout: the caller must get JobTimeout when it expires, and a thread
            # running a model cannot be interrupted.
            with run_dispatched_here():
                info = self.service.submit(request)
            info, outputs, _ = self.service.wait(info.job_id, None)
            return info, outputs
        if request.wait:
            info, outputs, _ = self.service.submit_and_wait(request)
            return info, outputs
        return self.service.submit(request), b""

    def wait(self, job_id: str, timeout: float | None) -> tuple[m.JobInfo, bytes | bytearray, bool]:
        return self.service.wait(job_id, timeout)

    # Leases (see ``scheduler._leases``).

    def lease_of(self, job_id: str) -> m.Lease | None:
        return self.service.lease_of(job_id)

    def run_leased(self, lease: m.Lease, args: tuple[Any, ...]) -> m.JobResult | None:
        # In-process: the tensors themselves, nothing encoded either way.
        return self.service.run_leased(lease, args)

    def cancel(self, job_id: str) -> m.JobInfo:
        return self.service.cancel(job_id)

    def job(self, job_id: str) -> m.JobInfo:
        return self.service.job_info(job_id)

    def list_jobs(self, limit: int = 100, state: str = "") -> list[m.JobInfo]:
        return self.service.list_jobs(limit, state)

    def list_nodes(self) -> list[m.NodeInfo]:
        return self.service.list_nodes()

    def usage(self) -> m.ClusterUsage:
        return self.service.usage()

    def remove_node(self, node_id: str) -> m.NodeInfo:
        return self.service.remove_node(node_id)

    def deploy(
        self,
        name: str,
        request: m.SubmitRequest,
        replicas: int,
        inputs: tuple[m.TensorSpec, ...] = (),
        outputs: tuple[m.TensorSpec, ...] = (),
        options: m.DeployOptions = m.DEFAULT_DEPLOY_OPTIONS,
    ) -> m.DeploymentInfo:
        return self.service.deploy(name, request, replicas, inputs, outputs, options)

    def rollout(self, name: str, action: str) -> m.DeploymentInfo:
        try:
            return self.service.rollout(name, action)
        except KeyError as error:  # the service's NotFoundError, as gRPC's NOT_FOUND reads
            raise AnypuError(error.args[0]) from None

    def scale(self, name: str, replicas: int, reason: str = "") -> m.DeploymentInfo:
        try:
            return self.service.scale(name, replicas, reason)
        except KeyError as error:  # the service's NotFoundError, as gRPC's NOT_FOUND reads
            raise AnypuError(error.args[0]) from None

    def undeploy(self, name: str) -> m.DeploymentInfo:
        try:
            return self.service.undeploy(name)
        except KeyError as error:
            raise AnypuError(error.args[0]) from None

    def deployments(self, traffic: m.Traffic | None = None) -> list[m.DeploymentInfo]:
        if traffic is not None:
            self.service.calls_reported(traffic)
        return self.service.deployments()

    def round_trips(self) -> tuple[tuple[str, float], ...]:
        return ()  # in this process: no network between the caller and the scheduler

    def close(self) -> None:
        pass
