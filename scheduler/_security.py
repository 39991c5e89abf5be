"""The scheduler's side of security: its CA and certificate, join tokens, enrolment.

Two ports. The client port speaks TLS (server-authenticated) and serves the SDK (bearer
token) and the enrolment call; the agent port speaks mutual TLS and refuses, at the
handshake, anyone without a certificate signed by the cluster CA. gRPC in Python cannot
ask for a client certificate without also requiring it, hence the split.

Enrolment is one unary call, ``/anypu.v1.Enrolment/Enrol``, with a small JSON body
(request: token, name, tier, devices, memory_bytes, csr; answer: cert, ca, agent_port,
expires_at). It is JSON over a generic gRPC handler rather than protobuf because it is
a bootstrap side-channel of a few fields, and keeping it out of the versioned protocol
lets the agent stream stay exactly as it was.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from anypu.errors import AuthenticationError, ConfigError
from anypu.placement import TIERS
from anypu.scheduler._throttle import FailureThrottle
from anypu.scheduler._tls import CertificateAuthority, Identity, cert_hash, common_name
from anypu.scheduler._tokens import UNLIMITED, Enrolment, NameTakenError, TokenStore

__all__ = [
    "ENROL_METHOD",
    "INFO_METHOD",
    "ServerSecurity",
    "decode_json",
    "encode_json",
]

ENROL_METHOD = "/anypu.v1.Enrolment/Enrol"
INFO_METHOD = "/anypu.v1.Enrolment/Info"
MAX_JSON_BYTES = 64 << 10
DEFAULT_NODE_CERT_S = 365 * 86400.0


def encode_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value).encode()


def decode_json(data: bytes) -> dict[str, Any]:
    """Parse an enrolment message; ``ConfigError`` for anything but a small JSON object."""
    if len(data) > MAX_JSON_BYTES:
        raise ConfigError(f"enrolment message of {len(data)} bytes; at most {MAX_JSON_BYTES}")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"enrolment message is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise ConfigError("enrolment message must be a JSON object")
    return value


def _field(request: Mapping[str, Any], name: str, kind: type) -> Any:
    value = request.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"enrolment request needs {name!r} as {kind.__name__}")
    return value


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

    def info(self) -> dict[str, Any]:
        return {"agent_port": self.agent_port, "ca_hash": self.ca.hash}

    def enrol(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Spend a token on a certificate for node ``name``; the answer to send back.

        Raises ``AuthenticationError`` (bad token), ``AccessDeniedError`` (outside the
        token's scope), ``NameTakenError`` (a live node has that name) or ``ConfigError``.
        """
        from anypu.scheduler._service import _NAME  # the one rule for node names

        token = _field(request, "token", str)
        name = _field(request, "name", str)
        tier = _field(request, "tier", str)
        devices = _field(request, "devices", int)
        memory = _field(request, "memory_bytes", int)
        csr = _field(request, "csr", str).encode()
        if not _NAME.match(name):
            raise ConfigError(
                f"node name {name[:80]!r} is invalid: use 1–63 letters, digits, '.', '_' or '-'"
            )
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
        return {
            "cert": cert.decode(),
            "ca": self.ca.cert_pem.decode(),
            "agent_port": self.agent_port,
            "expires_at": now + self.node_cert_valid_s,
        }

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
