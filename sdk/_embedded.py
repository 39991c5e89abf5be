"""The embedded mode: a scheduler and a local agent in this process, no setup at all.

``sdk.run`` with no address configured starts them on first use and reuses them; the
scheduler keeps its SQLite state in a temporary directory and the agent runs jobs in
worker processes, exactly as a networked agent would.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import threading

from anypu.agents._agent import Agent, AgentConfig
from anypu.agents._link import InProcessLink
from anypu.devices import discover
from anypu.scheduler._service import SchedulerService
from anypu.scheduler._state import SchedulerConfig

__all__ = ["Embedded"]


class Embedded:
    """An in-process scheduler with one local agent."""

    def __init__(self, devices_file: str | None = None, tier: str = "device") -> None:
        self.state_dir = tempfile.mkdtemp(prefix="anypu-embedded-")
        self.service = SchedulerService(
            self.state_dir, token=None, config=SchedulerConfig(unschedulable_timeout_s=0.0)
        )
        name = (socket.gethostname().split(".")[0] or "local")[:40]
        self.agent = Agent(
            AgentConfig(
                name=f"local-{name}" if name[0].isalnum() else "local",
                tier=tier,
                devices=discover(devices_file),
                cache_dir=os.path.join(self.state_dir, "cache"),
                isolation="thread",
                direct_runs=True,
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
