"""The scheduler's side of security: its CA and certificate, join tokens, enrolment.

Two ports. The client port speaks TLS (server-authenticated) and serves the SDK (bearer
token) and the enrolment call; the agent port speaks mutual TLS and refuses, at the
handshake, anyone without a certificate signed by the cluster CA. gRPC in Python cannot
ask for a client certificate without also requiring it, hence the split.

Enrolment is one unary call, ``/anypu.v1.Enrolment/Enrol``: an ``EnrolRequest`` answered
by an ``EnrolAnswer`` (the messages both sides share, in ``anypu.comm``).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from anypu.comm import (
    AgentPortInfo,
    CertificateAuthority,
    EnrolAnswer,
    EnrolRequest,
    FailureThrottle,
    Identity,
    cert_hash,
    common_name,
)
from anypu.errors import AuthenticationError, ConfigError
from anypu.placement import TIERS
from anypu.protos.messages import node_name_problem
from anypu.scheduler._tokens import UNLIMITED, Enrolment, NameTakenError, TokenStore

__all__ = ["DEFAULT_NODE_CERT_S", "ServerSecurity"]

log = logging.getLogger("anypu.scheduler")

DEFAULT_NODE_CERT_S = 365 * 86400.0


class ServerSecurity:
    """CA, server certificate, token store and throttle of one secure scheduler."""

    def __init__(
        self,
        state_dir: str | Path,
        admin_token: str | None,
        ca: CertificateAuthority | None = None,
        hosts: Sequence[str] = (),
        node_cert_valid_s: float = DEFAULT_NODE_CERT_S,
        throttle: FailureThrottle | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.admin_token = admin_token
        self.ca = ca or CertificateAuthority.load_or_create(state_dir)
        self.server: Identity = self.ca.issue_server(hosts)
        self.tokens = TokenStore(state_dir)
        self.node_cert_valid_s = node_cert_valid_s
        self.throttle = throttle or FailureThrottle()
        self.clock = clock
        self.agent_port = 0
        #: Whether a node of that name is connected now; set by whoever knows (the service).
        self.is_live: Callable[[str], bool] = lambda name: False

    def close(self) -> None:
        self.tokens.close()

    def watch(self, service: Any) -> None:
        """Refuse enrolling a name a connected, ready node of ``service`` already holds."""

        self.is_live = lambda name: bool(service.inspect(lambda st, now: _live(st, name)))

    def info(self) -> AgentPortInfo:
        return AgentPortInfo(self.agent_port, self.ca.hash)

    def enrol(self, request: EnrolRequest) -> EnrolAnswer:
        """Spend a token on a certificate for node ``name``; the answer to send back.

        Raises ``AuthenticationError`` (bad token), ``AccessDeniedError`` (outside the
        token's scope), ``NameTakenError`` (a live node has that name) or ``ConfigError``.
        """
        token, name, tier = request.token, request.name, request.tier
        devices, memory, csr = request.devices, request.memory_bytes, request.csr.encode()
        problem = node_name_problem(name)
        if problem:
            raise ConfigError(problem)
        if tier not in TIERS:
            raise ConfigError(f"tier {tier!r} is invalid: choose one of {list(TIERS)}")
        if not (0 <= devices <= 1 << 16 and 0 <= memory < 1 << 60):
            raise ConfigError("enrolment request's device count or memory is not plausible")
        if self.is_live(name):
            raise NameTakenError(
                f"a live node is already called {name!r}: give this agent another --name"
                " (or stop the other one first)"
            )
        now = self.clock()
        cert = self.ca.sign_node(csr, name, self.node_cert_valid_s)
        fingerprint = cert_hash(cert)
        if self.admin_token is not None and _same(token, self.admin_token):
            self.tokens.enrol(Enrolment(name, fingerprint, UNLIMITED, now))
        else:
            self.tokens.redeem(token, name, tier, devices, memory, fingerprint, now)
        log.info(
            "enrolled node %s (tier %s, %d device(s)) with %s; certificate valid %.0f days",
            name,
            tier,
            devices,
            "the admin token"
            if self.admin_token is not None and _same(token, self.admin_token)
            else "a join token",
            self.node_cert_valid_s / 86400,
        )
        return EnrolAnswer(
            cert.decode(), self.ca.cert_pem.decode(), self.agent_port, now + self.node_cert_valid_s
        )

    def node_enrolment(self, auth_context: Mapping[str, Sequence[bytes]]) -> Enrolment | None:
        """The enrolment behind a verified client certificate; None if none was presented.

        gRPC has already checked the chain and expiry at the handshake. Here a
        certificate must also be the *latest* one issued to its name, so re-enrolling a
        node (a rebuilt machine) retires the certificate it had before.
        """
        pems = auth_context.get("x509_pem_cert")
        if not pems:
            return None
        pem = pems[0]
        name = common_name(pem)
        enrolment = self.tokens.enrolment(name)
        if enrolment is None or enrolment.fingerprint != cert_hash(pem):
            raise AuthenticationError(
                f"the certificate for node {name!r} is no longer valid (the node was enrolled"
                " again since): delete the agent's identity folder and enrol it anew"
            )
        return enrolment


def _live(state: Any, name: str) -> bool:
    node = state.nodes.get(name)
    return node is not None and node.state == "ready" and node.connected


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
