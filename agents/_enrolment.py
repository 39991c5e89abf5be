"""The agent's side of enrolment: pin the CA, spend a token once, keep the certificate.

``NodeTLS`` holds a node's identity folder: ``ca.pem``, and per scheduler CA a folder
``<CA hash>/`` with ``node.pem`` and ``node.key`` (readable only by its owner). The first
connection fetches the CA by its pinned hash, makes a key and a certificate request, and
spends the join token on a certificate; later connections (restarts, reconnects) reuse
the certificate and need no token, so a single-use token is enough for the life of the
node. An agent pointed at another (or a reinstalled) scheduler has another CA hash, so it
never presents a certificate that CA did not issue: it enrols with the token it was
given, or says exactly what to do.
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from anypu.comm import (
    ENROL_METHOD,
    INFO_METHOD,
    AgentPortInfo,
    EnrolAnswer,
    EnrolRequest,
    Identity,
    cert_hash,
    channel_credentials,
    common_name,
    fetch_ca,
    grpc_channel,
    new_key_and_csr,
    parse_ca_hash,
    raise_for_rpc,
)
from anypu.errors import ConfigError

__all__ = ["NodeTLS"]

log = logging.getLogger("anypu.agent")


class NodeTLS:
    """A node's certificate for the agent port, enrolled on first use."""

    def __init__(self, address: str, ca_hash: str, token: str, identity_dir: str | Path) -> None:
        self.address = address
        self.ca_hash = parse_ca_hash(ca_hash)
        self.token = token
        self.folder = Path(identity_dir)
        #: Where ``identity()`` found or wrote this node's node.pem and node.key.
        self.cert_folder = self.folder

    def _ca(self) -> bytes:
        path = self.folder / "ca.pem"
        if path.exists() and cert_hash(path.read_bytes()) == self.ca_hash:
            return path.read_bytes()
        pem = fetch_ca(self.address, self.ca_hash)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_bytes(pem)
        return pem

    def ca_pem(self) -> bytes:
        """The scheduler's CA (pinned by hash): what other nodes' certificates chain to."""
        return self._ca()

    def _call(self, ca: bytes, method: str, request: bytes) -> bytes:
        channel = grpc_channel(self.address, channel_credentials(ca))
        try:
            # Raw bytes both ways: the enrolment messages are JSON (see anypu.comm).
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
            return call(request, timeout=30)
        except grpc.RpcError as error:
            raise_for_rpc(error, self.address)
        finally:
            channel.close()

    def agent_address(self) -> str:
        """``HOST:PORT`` of the mutual-TLS agent port (asked each time: it may change)."""
        info = AgentPortInfo.decode(self._call(self._ca(), INFO_METHOD, b"{}"))
        host = self.address.rpartition(":")[0]
        return f"{host}:{info.agent_port}"

    def identity(self, name: str, tier: str, devices: int, memory_bytes: int) -> Identity:
        """This node's certificate and key; enrols (spending the token) when there is none."""
        ca = self._ca()
        mine = self.folder / self.ca_hash.removeprefix("sha256:")[:32]
        # Folders written before identities were kept per CA hold node.pem at the top.
        for folder in (mine, self.folder):
            cert_path, key_path = folder / "node.pem", folder / "node.key"
            if cert_path.exists() and key_path.exists():
                cert = cert_path.read_bytes()
                if common_name(cert) == name and _issued_by(cert, ca) and _valid_for(cert, 60.0):
                    self.cert_folder = folder
                    return Identity(cert, key_path.read_bytes())
        others = [p.parent for p in self.folder.glob("*/node.pem") if p.parent != mine] + (
            [self.folder] if (self.folder / "node.pem").exists() else []
        )
        if not self.token:
            if others:
                raise ConfigError(
                    f"node {name} holds a certificate from another scheduler's CA (in"
                    f" {others[0]}), not from {self.ca_hash[:19]}… at {self.address}: a"
                    " reinstalled scheduler, or another one. Pass a join token from this"
                    " scheduler (`anypu token create`) with --token to enrol the node here"
                )
            raise ConfigError(
                f"node {name} has no certificate yet: pass a join token (`anypu token create`)"
                " with --token to enrol it"
            )
        if others:
            log.warning(
                "node %s: the certificate in %s is from another scheduler's CA; enrolling"
                " with %s (CA %s…) using the token given",
                name,
                others[0],
                self.address,
                self.ca_hash[:19],
            )
        mine.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cert_folder = mine
        cert_path, key_path = mine / "node.pem", mine / "node.key"
        key, csr = new_key_and_csr(name)
        request = EnrolRequest(self.token, name, tier, devices, memory_bytes, csr.decode())
        answer = EnrolAnswer.decode(self._call(ca, ENROL_METHOD, request.encode()))
        cert = answer.cert.encode()
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        cert_path.write_bytes(cert)
        return Identity(cert, key)

    def credentials(
        self, name: str, tier: str, devices: int, memory_bytes: int
    ) -> grpc.ChannelCredentials:
        return channel_credentials(self._ca(), self.identity(name, tier, devices, memory_bytes))


def _issued_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether the CA ``ca_pem`` signed ``cert_pem``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _valid_for(cert_pem: bytes, seconds: float) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    return left.total_seconds() > seconds
