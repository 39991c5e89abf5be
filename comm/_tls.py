"""Certificates for mutual TLS: a cluster CA, the scheduler's certificate, node certificates.

The scheduler keeps a CA (generated into its state directory, or given with
``--ca-cert/--ca-key``) and prints its hash, ``sha256:<hex of the certificate's DER>``.
An agent or client that knows only that hash fetches the CA over one unverified TLS
handshake and accepts it only if the hash matches (as ``kubeadm join
--discovery-token-ca-cert-hash`` does); from then on gRPC verifies everything against
that CA. Every scheduler certificate names ``anypu-scheduler``, and clients check that
name rather than the address they dialled, so an edge node behind NAT may reach the
scheduler by any address: the pinned CA is what makes the server authentic.

Keys are ECDSA P-256 (fast to generate; accepted by BoringSSL inside gRPC).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from anypu.errors import AuthenticationError, ConfigError, SchedulerUnavailableError

__all__ = [
    "SERVER_NAME",
    "CertificateAuthority",
    "Identity",
    "cert_hash",
    "channel_credentials",
    "client_ca",
    "common_name",
    "fetch_ca",
    "new_key_and_csr",
    "parse_ca_hash",
    "server_credentials",
    "serves_tls",
    "speaks_tls",
]

#: Clients check the scheduler's certificate against this name, not the dialled address.
SERVER_NAME = "anypu-scheduler"
_HASH_PREFIX = "sha256:"


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as error:
        raise ConfigError(f"{what} is not a PEM certificate: {error}") from None


def cert_hash(cert_pem: bytes) -> str:
    """``sha256:<hex>`` of a certificate's DER: the CA pin and a node's fingerprint."""
    der = _load_cert(cert_pem, "certificate").public_bytes(serialization.Encoding.DER)
    return _HASH_PREFIX + hashlib.sha256(der).hexdigest()


def parse_ca_hash(text: str) -> str:
    """Normalise a ``--ca-hash``; raise ``ConfigError`` saying what it should look like."""
    value = text.strip().lower()
    digest = value[len(_HASH_PREFIX) :] if value.startswith(_HASH_PREFIX) else value
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(
            f"CA hash {text!r} is not of the form sha256:<64 hex digits>: copy it from the"
            " line `CA hash: sha256:…` the scheduler printed at start"
        )
    return _HASH_PREFIX + digest


def common_name(cert_pem: bytes) -> str:
    cert = _load_cert(cert_pem, "certificate")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


class CertificateAuthority:
    """The cluster's CA: signs the scheduler's certificate and every node's."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.cert = _load_cert(cert_pem, "CA certificate")
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"CA key is not an unencrypted PEM private key: {error}") from None
        try:
            is_ca = self.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ConfigError("the CA certificate is not a CA (basicConstraints CA:TRUE missing)")
        if key.public_key().public_numbers() != self.cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise ConfigError("the CA key does not belong to the CA certificate")
        self.key = key
        self.cert_pem = _pem(self.cert)
        self.key_pem = key_pem
        self.hash = cert_hash(self.cert_pem)

    @classmethod
    def create(cls, name: str = "anypu cluster CA", days: int = 3650) -> CertificateAuthority:
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(_pem(cert), _key_pem(key))

    @classmethod
    def load_or_create(
        cls, state_dir: str | Path, cert_file: str = "", key_file: str = ""
    ) -> CertificateAuthority:
        """The CA from ``cert_file``/``key_file``, else ``<state_dir>/tls/ca.*`` (made once)."""
        if bool(cert_file) != bool(key_file):
            raise ConfigError("pass both --ca-cert and --ca-key, or neither")
        if cert_file:
            return cls(_read(cert_file, "--ca-cert"), _read(key_file, "--ca-key"))
        folder = Path(state_dir) / "tls"
        cert_path, key_path = folder / "ca.pem", folder / "ca.key"
        if cert_path.exists() and key_path.exists():
            return cls(cert_path.read_bytes(), key_path.read_bytes())
        ca = cls.create()
        folder.mkdir(parents=True, exist_ok=True)
        _write_private(key_path, ca.key_pem)
        cert_path.write_bytes(ca.cert_pem)
        return ca

    def _sign(
        self,
        public_key: object,
        name: str,
        usages: list[x509.ObjectIdentifier],
        not_before: datetime.datetime,
        not_after: datetime.datetime,
        sans: list[x509.GeneralName],
    ) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return _pem(builder.sign(self.key, hashes.SHA256()))  # type: ignore[arg-type]

    def issue_server(self, hosts: Iterable[str] = (), days: int = 825) -> Identity:
        """A certificate for the scheduler, naming ``SERVER_NAME`` and ``hosts``."""
        key = _new_key()
        sans: list[x509.GeneralName] = [x509.DNSName(SERVER_NAME)]
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                if host:
                    sans.append(x509.DNSName(host))
        now = _now()
        cert = self._sign(
            key.public_key(),
            SERVER_NAME,
            [ExtendedKeyUsageOID.SERVER_AUTH],
            now - datetime.timedelta(minutes=5),
            now + datetime.timedelta(days=days),
            sans,
        )
        # The chain carries the CA so that ``fetch_ca`` can find it in one handshake.
        return Identity(cert + self.cert_pem, _key_pem(key))

    def sign_node(
        self,
        csr_pem: bytes,
        name: str,
        valid_s: float,
        not_before: datetime.datetime | None = None,
    ) -> bytes:
        """Sign a node's CSR as ``CN=name``, whatever name the CSR itself asks for. The
        certificate authenticates the node to the scheduler (client auth) and to clients
        making direct calls under a lease (server auth, checked against ``name``)."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as error:
            raise ConfigError(f"the certificate request is not a PEM CSR: {error}") from None
        if not csr.is_signature_valid:
            raise ConfigError("the certificate request's signature does not verify")
        start = not_before or (_now() - datetime.timedelta(minutes=5))
        return self._sign(
            csr.public_key(),
            name,
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            start,
            start + datetime.timedelta(seconds=valid_s),
            [x509.DNSName(name)],
        )


def new_key_and_csr(name: str) -> tuple[bytes, bytes]:
    """A fresh node key (PEM) and a CSR for it; the key never leaves the node."""
    key = _new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def server_credentials(
    identity: Identity, ca_pem: bytes, require_client_auth: bool
) -> grpc.ServerCredentials:
    """TLS for the client port (``False``) or mutual TLS for the agent port (``True``)."""
    return grpc.ssl_server_credentials(
        [(identity.key_pem, identity.cert_pem)],
        root_certificates=ca_pem if require_client_auth else None,
        require_client_auth=require_client_auth,
    )


def serves_tls(cert_pem: bytes) -> bool:
    """Whether a node certificate may serve direct calls (it names server auth)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in usage


def channel_credentials(ca_pem: bytes, identity: Identity | None = None) -> grpc.ChannelCredentials:
    if identity is None:
        return grpc.ssl_channel_credentials(root_certificates=ca_pem)
    return grpc.ssl_channel_credentials(ca_pem, identity.key_pem, identity.cert_pem)


@contextmanager
def _unverified_tls(host: str, port: int, timeout: float) -> Iterator[ssl.SSLSocket]:
    """A TLS connection that checks nothing: to see what a server is or presents."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host.strip("[]"), port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=SERVER_NAME) as tls,
    ):
        yield tls


def speaks_tls(address: str, timeout: float = 2.0) -> bool:
    """Whether ``address`` completes a TLS handshake (unverified: only to say what it is)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return False
    try:
        with _unverified_tls(host, int(port), timeout):
            return True
    except (OSError, ssl.SSLError):
        return False


def fetch_ca(address: str, expected_hash: str, timeout: float = 10.0) -> bytes:
    """The scheduler's CA certificate (PEM), accepted only if it hashes to ``expected_hash``.

    The handshake is deliberately unverified (we have nothing to verify with yet); what
    makes the result trustworthy is the pinned hash, and that the scheduler's own
    certificate must be signed by the CA found.
    """
    expected = parse_ca_hash(expected_hash)
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"scheduler address {address!r} must look like HOST:PORT")
    try:
        with _unverified_tls(host, int(port), timeout) as tls:
            # Python < 3.13 has no public API for the peer's whole chain.
            chain = tls._sslobj.get_unverified_chain() or []  # type: ignore[attr-defined]
            pems = [c.public_bytes(ssl._ssl.ENCODING_PEM).encode() for c in chain]  # type: ignore[attr-defined]
    except ssl.SSLError as error:
        raise ConfigError(
            f"the scheduler at {address} does not speak TLS ({error.reason or error}): if it"
            " runs with --insecure, connect without a CA hash"
        ) from None
    except OSError as error:
        raise SchedulerUnavailableError(
            f"no anypu scheduler answers at {address} ({error}): check the address"
        ) from None
    if not pems:
        raise ConfigError(f"the scheduler at {address} presented no certificate")
    for pem in pems:
        if cert_hash(pem) == expected:
            ca = _load_cert(pem, "CA certificate")
            try:
                _load_cert(pems[0], "server certificate").verify_directly_issued_by(ca)
            except (ValueError, TypeError, Exception) as error:
                raise AuthenticationError(
                    f"the scheduler's certificate is not signed by the pinned CA ({error})"
                ) from None
            return pem
    found = ", ".join(cert_hash(p) for p in pems)
    raise AuthenticationError(
        f"the scheduler at {address} presented certificates {found}, none of them the pinned"
        f" CA {expected}: check --ca-hash (someone may be intercepting the connection)"
    )


def client_ca(address: str, ca_hash: str = "", ca_file: str = "") -> bytes | None:
    """The CA a client trusts: from ``ca_file``, else fetched from ``address`` by ``ca_hash``.

    None when neither is given (a plaintext scheduler started with ``--insecure``).
    """
    if ca_file:
        try:
            pem = Path(ca_file).read_bytes()
        except OSError as error:
            raise ConfigError(f"cannot read CA file {ca_file}: {error.strerror}") from None
        if ca_hash and cert_hash(pem) != parse_ca_hash(ca_hash):
            raise ConfigError(f"CA file {ca_file} does not match the CA hash {ca_hash}")
        return pem
    if ca_hash:
        return fetch_ca(address, ca_hash)
    return None


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {flag} {path}: {error.strerror}") from None


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
