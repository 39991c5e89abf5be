"""The agent's liveness and readiness for a kubelet's probes (``--health-address``).

``GET /healthz``: 200 while the agent's loops run (the housekeeping tick came within
``STALE_AFTER_S``), else 503. ``GET /readyz``: 200 once it has joined the scheduler and
while its stream holds, else 503 with why. Plain text; nothing else is served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from anypu.errors import ConfigError

__all__ = ["STALE_AFTER_S", "HealthServer"]

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
    ) -> None:
        host, _, port = address.rpartition(":")
        self.last_tick = last_tick
        self.readiness = readiness
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                status, text = outer.answer(self.path.split("?")[0].rstrip("/"))
                body = (text + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
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
        return 404, "only /healthz and /readyz are served here"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
