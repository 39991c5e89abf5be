"""An agent as a gateway of the Open Inference Protocol (``anypu agent --gateway-http``).

Callers at an edge site call the site's agent instead of the scheduler, with the same
requests and tokens: REST at ``--gateway-http HOST:PORT`` (HTTPS with the node's
certificate when the agent has one), gRPC (``inference.GRPCInferenceService``) on its
``--direct-address`` beside DirectService. The gateway is the scheduler's own core
(``anypu.comm.InferenceGateway``); what it knows of deployments comes from look-ups over
the agent's link (``LinkDirectory``: ``AgentService.LookUpDeployment``, authenticated by
the node's certificate), each listing kept ``INFO_TTL_S``. A call goes from here straight
to the replica predicted to answer first *from this site* (its measured answer times), so
a replica at the same site wins while it keeps up. The calls answered here are reported
with the next look-up: the scheduler counts them as traffic from this node's site and
places replicas after it (``scheduler._traffic``).

Tokens: the scheduler decides (its token, or the deployment's caller token); the answer
for a token and model is kept ``INFO_TTL_S``, so a caller token removed stops working
here within that. Failed tokens count against the caller's address in the agent's own
throttle. With the scheduler unreachable, requests are refused with 503 and why.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from http import HTTPStatus

from anypu.agents._link import SchedulerLink
from anypu.comm import (
    INFO_TTL_S,
    CallLog,
    GatewayHTTPServer,
    GatewayRefusal,
    InferenceGateway,
    inference_handler,
)
from anypu.errors import AnypuError, ConfigError
from anypu.protos import messages as m

__all__ = ["AgentGateway", "LinkDirectory"]

log = logging.getLogger("anypu.agent")

#: How long an authorizing look-up's listing stands in for the call's own look-up.
BROUGHT_S = 0.1


class LinkDirectory:
    """``DeploymentDirectory`` by look-ups over the agent's link to the scheduler."""

    def __init__(self, link: SchedulerLink, node_id: str) -> None:
        self.link = link
        self.node_id = node_id
        self._lock = threading.Lock()
        self._calls = CallLog()  # answered here since the last look-up
        self._deployed: tuple[str, ...] = ()
        #: (token's SHA-256, model) -> (the scheduler's refusal, "" for none; when asked)
        self._answers: dict[tuple[str, str], tuple[str, float]] = {}
        #: The listing an authorizing look-up brought back: (name, listing, when), used
        #: once by the ``deployment`` call that follows it instead of a second look-up.
        self._brought: tuple[str, m.DeploymentInfo | None, float] | None = None

    def _look_up(self, name: str = "", token: str = "", wake: int = 0) -> m.DeploymentLookupReply:
        calls, times = self._calls.drain()
        lookup = m.DeploymentLookup(self.node_id, name, token, wake, calls, times)
        try:
            reply = self.link.look_up_deployment(lookup)
        except AnypuError as error:
            self._calls.restore(times)  # said with the next look-up
            raise GatewayRefusal(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"this gateway ({self.node_id}) cannot reach the scheduler: {error}; try"
                " again, or call another gateway",
            ) from None
        with self._lock:
            self._deployed = reply.deployed
        return reply

    def deployment(self, name: str) -> m.DeploymentInfo | None:
        with self._lock:
            brought, self._brought = self._brought, None
        if (
            brought is not None
            and brought[0] == name
            and time.monotonic() - brought[2] <= BROUGHT_S
        ):
            return brought[1]
        return self._look_up(name).deployment

    def deployed(self) -> list[str]:
        with self._lock:
            return list(self._deployed)

    def authorize(self, token: str, model: str) -> str:
        key = (hashlib.sha256(token.encode()).hexdigest(), model)
        now = time.monotonic()
        with self._lock:
            known = self._answers.get(key)
        if known is not None and now - known[1] <= INFO_TTL_S:
            return known[0]
        reply = self._look_up(model, token)
        refusal = reply.refusal
        with self._lock:
            self._brought = (model, reply.deployment, time.monotonic())
            if len(self._answers) > 4096:  # a guesser's tokens must not grow it
                self._answers = {k: v for k, v in self._answers.items() if not v[0]}
            self._answers[key] = (refusal, now)
        return refusal

    def wake(self, name: str, replicas: int, reason: str) -> None:
        self._look_up(name, wake=replicas)

    def answered(self, name: str, seconds: float) -> None:
        self._calls.add(name, seconds)


class AgentGateway:
    """The protocol served at an agent: ``grpc_handler`` for its direct port, and REST
    at ``http_address`` (HOST:PORT) once ``start`` is called."""

    def __init__(
        self,
        link: SchedulerLink,
        node_id: str,
        http_address: str,
        tls: tuple[str, str] | None = None,
    ) -> None:
        host, _, port = http_address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"--gateway-http {http_address!r} must be HOST:PORT (port 0 picks a free one)"
            )
        self.directory = LinkDirectory(link, node_id)
        self.gateway = InferenceGateway(self.directory, link.peer_credentials())
        self.grpc_handler = inference_handler(self.gateway)
        self._host, self._port, self._tls = host, int(port), tls
        self.http: GatewayHTTPServer | None = None

    def start(self) -> GatewayHTTPServer:
        self.http = GatewayHTTPServer(self.gateway, self._host, self._port, self._tls)
        log.info("serving the Open Inference Protocol at %s/v2", self.http.url)
        return self.http

    def stop(self) -> None:
        if self.http is not None:
            self.http.stop()
