"""The agent's liveness, readiness and metrics (``--health-address``).

``GET /healthz``: 200 while the agent's loops run (the housekeeping tick came within
``STALE_AFTER_S``), else 503. ``GET /readyz``: 200 once it has joined the scheduler and
while its stream holds, else 503 with why. Plain text. ``GET /metrics``: Prometheus'
text format (``agent_registry``): whether it is joined, its housekeeping's age, and at a
gateway agent the inference protocol's requests and latency, in the same families as
the scheduler's. Nothing else is served, and nothing here needs a credential: it says
no more than counts, so bind it where only the kubelet and Prometheus reach it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import prometheus_client as prom
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from anypu.comm import watch_gateway
from anypu.errors import ConfigError

__all__ = ["STALE_AFTER_S", "HealthServer", "agent_registry"]

log = logging.getLogger("anypu.agent")

#: A housekeeping tick older than this means the agent is wedged (it ticks 4 times a second).
STALE_AFTER_S = 10.0


class HealthServer:
    """Serves ``/healthz`` and ``/readyz`` at ``address`` (HOST:PORT; port 0: any)."""

    def __init__(
        self,
        address: str,
        last_tick: Callable[[], float],
        readiness: Callable[[], tuple[bool, str]],
        registry: CollectorRegistry | None = None,
    ) -> None:
        host, _, port = address.rpartition(":")
        self.last_tick = last_tick
        self.readiness = readiness
        self.registry = registry
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0].rstrip("/")
                if path == "/metrics" and outer.registry is not None:
                    body, kind = prom.generate_latest(outer.registry), prom.CONTENT_TYPE_LATEST
                    status = 200
                else:
                    status, text = outer.answer(path)
                    body, kind = (text + "\n").encode(), "text/plain; charset=utf-8"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("health %s " + format, self.address_string(), *args)

        if not host or not port.isdigit():
            raise ConfigError(
                f"--health-address {address!r} must be HOST:PORT, e.g. 0.0.0.0:8081 in a pod"
                " (its probes dial the pod's address) or 127.0.0.1:0 for any free port"
            )
        try:
            self._server = ThreadingHTTPServer((host, int(port)), Handler)
        except OSError as error:
            raise ConfigError(
                f"--health-address {address}: cannot listen there ({error})"
            ) from None
        self._server.daemon_threads = True
        self.address = f"{host}:{self._server.server_address[1]}"
        threading.Thread(
            target=self._server.serve_forever, name="anypu-agent-health", daemon=True
        ).start()

    def answer(self, path: str) -> tuple[int, str]:
        if path == "/healthz":
            age = time.monotonic() - self.last_tick()
            if age > STALE_AFTER_S:
                return 503, f"wedged: no housekeeping tick for {age:.0f} s"
            return 200, "ok"
        if path == "/readyz":
            ready, why = self.readiness()
            return (200, why) if ready else (503, why)
        served = "/healthz, /readyz and /metrics" if self.registry else "/healthz and /readyz"
        return 404, f"only {served} are served here"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _AgentCollector(Collector):
    """Whether the agent is joined, and how long since its housekeeping ticked."""

    def __init__(
        self,
        node: str,
        last_tick: Callable[[], float],
        readiness: Callable[[], tuple[bool, str]],
    ) -> None:
        self.node = node
        self.last_tick = last_tick
        self.readiness = readiness

    def collect(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "anypu_agent_ready",
            "1 while the agent is joined to the scheduler and its stream holds (/readyz), else 0.",
            labels=["node"],
        )
        ready.add_metric([self.node], 1.0 if self.readiness()[0] else 0.0)
        yield ready
        age = GaugeMetricFamily(
            "anypu_agent_housekeeping_age_seconds",
            "Seconds since the agent's housekeeping last ticked (4 a second when well;"
            f" /healthz fails past {STALE_AFTER_S:g} s).",
            labels=["node"],
        )
        age.add_metric([self.node], max(0.0, time.monotonic() - self.last_tick()))
        yield age


def agent_registry(
    node: str,
    last_tick: Callable[[], float],
    readiness: Callable[[], tuple[bool, str]],
    gateway: Any | None = None,
) -> CollectorRegistry:
    """The agent's ``/metrics``: its own state, and ``gateway``'s requests
    (an ``anypu.comm.InferenceGateway``) when it is a gateway agent."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_AgentCollector(node, last_tick, readiness))
    if gateway is not None:
        watch_gateway(registry, gateway, "this gateway agent", throttle=True)
    return registry
