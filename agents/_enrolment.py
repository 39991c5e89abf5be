"""The agent's side of enrolment: pin the CA, spend a token once, keep the certificate.

``NodeTLS`` holds a node's identity folder (``ca.pem``, ``node.pem``, ``node.key``
readable only by its owner). The first connection fetches the CA by its pinned hash,
makes a key and a certificate request, and spends the join token on a certificate;
later connections (restarts, reconnects) reuse the certificate and need no token, so a
single-use token is enough for the life of the node.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import grpc
from cryptography import x509

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


class NodeTLS:
    """A node's certificate for the agent port, enrolled on first use."""

    def __init__(self, address: str, ca_hash: str, token: str, identity_dir: str | Path) -> None:
        self.address = address
        self.ca_hash = parse_ca_hash(ca_hash)
        self.token = token
        self.folder = Path(identity_dir)

    def _ca(self) -> bytes:
        path = self.folder / "ca.pem"
        if path.exists() and cert_hash(path.read_bytes()) == self.ca_hash:
            return path.read_bytes()
        pem = fetch_ca(self.address, self.ca_hash)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_bytes(pem)
        return pem

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
        cert_path, key_path = self.folder / "node.pem", self.folder / "node.key"
        if cert_path.exists() and key_path.exists():
            cert = cert_path.read_bytes()
            if common_name(cert) == name and _valid_for(cert, 60.0):
                return Identity(cert, key_path.read_bytes())
        if not self.token:
            raise ConfigError(
                f"node {name} has no certificate yet: pass a join token (`anypu token create`)"
                " with --token to enrol it"
            )
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


def _valid_for(cert_pem: bytes, seconds: float) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    return left.total_seconds() > seconds
