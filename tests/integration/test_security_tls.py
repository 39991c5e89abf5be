"""Join tokens, mutual TLS and client tokens against a real gRPC server on loopback."""

from __future__ import annotations

import datetime
import os
import threading
import time
from pathlib import Path

import grpc
import pytest
import torch

from anypu import PROTOCOL_VERSION
from anypu.agents import GrpcLink, NodeTLS
from anypu.agents._agent import Agent, AgentConfig
from anypu.comm import (
    ENROL_METHOD,
    CertificateAuthority,
    FailureThrottle,
    Identity,
    channel_credentials,
    client_ca,
    decode_json,
    encode_json,
    fetch_ca,
    grpc_channel,
    new_key_and_csr,
)
from anypu.devices import Device
from anypu.errors import AuthenticationError, ConfigError
from anypu.protos import anypu_v1_pb2_grpc as rpc
from anypu.protos import convert
from anypu.protos import messages as m
from anypu.scheduler import ServerSecurity
from anypu.scheduler._servers import serve
from anypu.scheduler._service import SchedulerService
from anypu.scheduler._state import SchedulerConfig
from anypu.sdk import Client
from anypu.sdk._transport import GrpcTransport
from anypu.sdk.models import mlp

ADMIN = "admin-token"
GIB = 1 << 30
CPU = Device("cpu0", "cpu", "test", "cpu", 2 * GIB, 0.05, "cpu", slices=1)


class Secure:
    """An in-process scheduler serving TLS (clients) and mutual TLS (agents)."""

    def __init__(self, state_dir: Path) -> None:
        self.service = SchedulerService(
            state_dir, token=ADMIN, config=SchedulerConfig(unschedulable_timeout_s=0.0)
        )
        self.security = ServerSecurity(state_dir, ADMIN, hosts=["127.0.0.1"])
        self.security.watch(self.service)
        self.server, port = serve(self.service, "127.0.0.1", 0, self.security, 0)
        self.address = f"127.0.0.1:{port}"
        self.agent_address = f"127.0.0.1:{self.security.agent_port}"
        self.ca = self.security.ca

    def token(self, tiers=("edge",), ttl: float = 3600, **caps: int) -> str:
        return self.security.tokens.create(ttl, tiers, time.time(), **caps)

    def enrol_raw(self, request: dict) -> grpc.StatusCode:
        channel = grpc_channel(self.address, channel_credentials(self.ca.cert_pem))
        try:
            channel.unary_unary(ENROL_METHOD)(encode_json(request), timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            return error.code()
        finally:
            channel.close()

    def node(self, tmp: Path, name: str, token: str) -> NodeTLS:
        return NodeTLS(self.address, self.ca.hash, token, tmp / f"id-{name}")

    def close(self) -> None:
        self.server.stop(0).wait()
        self.service.close()
        self.security.close()


@pytest.fixture
def secure(tmp_path):
    s = Secure(tmp_path / "state")
    yield s
    s.close()


def enrol_request(token: str, name: str = "n1", tier: str = "edge", devices: int = 1) -> dict:
    _, csr = new_key_and_csr(name)
    return {
        "token": token,
        "name": name,
        "tier": tier,
        "devices": devices,
        "memory_bytes": GIB,
        "csr": csr.decode(),
    }


def join(name: str, tier: str = "edge", devices: tuple[Device, ...] = (CPU,)) -> m.Join:
    return m.Join(PROTOCOL_VERSION, "", name, tier, devices=devices)


def connect_status(address: str, credentials, message: m.Join) -> tuple[grpc.StatusCode, str]:
    """Open an agent stream, send ``message``; the status it ends with (OK: got a JoinAck)."""
    channel = grpc_channel(address, credentials)
    call = rpc.AgentServiceStub(channel).Connect(
        iter([convert.agent_message_to_pb(message)]), timeout=10
    )
    try:
        for reply in call:
            if reply.WhichOneof("kind") == "join_ack":
                return grpc.StatusCode.OK, ""
        return grpc.StatusCode.OK, "ended"
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    finally:
        call.cancel()
        channel.close()


def wait_ready(client: Client, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(n.state == "ready" for n in client.transport.list_nodes()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("nodes did not join")


# ------------------------------------------------------------------ tokens


def test_an_agent_spends_a_join_token_once_and_runs_jobs_over_mutual_tls(secure, tmp_path):
    token = secure.token(max_devices=1, max_memory_bytes=4 * GIB)
    tls = secure.node(tmp_path, "edge-1", token)
    agent = Agent(
        AgentConfig("edge-1", "edge", [CPU], cache_dir=str(tmp_path / "c"), isolation="thread"),
        GrpcLink(secure.address, token, tls),
    )
    threading.Thread(target=agent.run, daemon=True).start()
    client = Client(GrpcTransport(secure.address, ADMIN, client_ca(secure.address, secure.ca.hash)))
    try:
        wait_ready(client, 1)
        model, x = mlp(width=32, depth=2), torch.randn(4, 32)
        torch.testing.assert_close(client.run(model, x), model(x))
        key = tls.cert_folder / "node.key"
        assert tls.cert_folder.parent == tmp_path / "id-edge-1"  # kept per scheduler CA
        assert key.stat().st_mode & 0o077 == 0
        # The token is spent; the node reconnects on its certificate alone.
        assert secure.enrol_raw(enrol_request(token, "edge-2")) == grpc.StatusCode.UNAUTHENTICATED
        agent.link.close()
        time.sleep(0.3)
        wait_ready(client, 1)
        torch.testing.assert_close(client.run(model, x), model(x))
    finally:
        agent.stop()
        client.close()


def test_wrong_expired_and_out_of_scope_tokens_get_their_codes(secure):
    expired = secure.token(ttl=0.2)
    scoped = secure.token(tiers=("edge",), max_devices=1)
    time.sleep(0.3)
    assert secure.enrol_raw(enrol_request(expired)) == grpc.StatusCode.UNAUTHENTICATED
    assert secure.enrol_raw(enrol_request("anypu-join-guess")) == grpc.StatusCode.UNAUTHENTICATED
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert secure.enrol_raw(enrol_request(scoped, tier="cloud")) == denied
    assert secure.enrol_raw(enrol_request(scoped, devices=2)) == denied
    assert secure.enrol_raw({"token": scoped}) == grpc.StatusCode.INVALID_ARGUMENT
    assert secure.enrol_raw(enrol_request(scoped)) == grpc.StatusCode.OK


def test_guesses_are_slowed_and_the_right_token_is_never_refused(secure):
    codes = [secure.enrol_raw(enrol_request(f"guess-{i}")) for i in range(7)]
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 7  # the last two answered late
    assert secure.security.throttle.delayed == 2
    # The right credential from the same address is served at once: one typo on a
    # shared host or behind NAT locks nobody out.
    transport = GrpcTransport(secure.address, ADMIN, secure.ca.cert_pem)
    try:
        assert transport.list_nodes(timeout=5) == []
    finally:
        transport.close()
    # (A token failing again and again is refused at once: tests/unit/test_security.py.)


def test_a_live_name_cannot_be_enrolled_twice(secure, tmp_path):
    tls = secure.node(tmp_path, "n1", ADMIN)
    creds = tls.credentials("n1", "edge", 1, GIB)
    channel = grpc_channel(secure.agent_address, creds)
    hold = threading.Event()

    def messages():
        yield convert.agent_message_to_pb(join("n1"))
        hold.wait(30)  # n1 stays connected while the stream stays open

    call = rpc.AgentServiceStub(channel).Connect(messages(), timeout=30)
    next(call)  # the JoinAck
    try:
        code = secure.enrol_raw(enrol_request(ADMIN, "n1"))
        assert code == grpc.StatusCode.ALREADY_EXISTS
        assert secure.enrol_raw(enrol_request(ADMIN, "n2")) == grpc.StatusCode.OK
    finally:
        hold.set()
        call.cancel()
        channel.close()


# ------------------------------------------------------------------ mutual TLS


def test_the_agent_port_refuses_anyone_without_a_good_certificate(secure, tmp_path):
    ca_pem, address = secure.ca.cert_pem, secure.agent_address
    good = secure.node(tmp_path, "n1", ADMIN).identity("n1", "edge", 1, GIB)
    assert connect_status(address, channel_credentials(ca_pem, good), join("n1"))[0] == (
        grpc.StatusCode.OK
    )
    foreign_ca = CertificateAuthority.create()
    key, csr = new_key_and_csr("n1")
    foreign = Identity(foreign_ca.sign_node(csr, "n1", 3600), key)
    key, csr = new_key_and_csr("n1")
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)
    expired = Identity(secure.ca.sign_node(csr, "n1", 3600, not_before=past), key)
    for what, credentials in [
        ("plaintext", None),
        ("no certificate", channel_credentials(ca_pem)),
        ("foreign CA", channel_credentials(ca_pem, foreign)),
        ("expired", channel_credentials(ca_pem, expired)),
    ]:
        code, detail = connect_status(address, credentials, join("n1"))
        assert code == grpc.StatusCode.UNAVAILABLE, what  # the handshake failed
        assert "Socket closed" in detail or "handshake" in detail.lower(), (what, detail)


def test_a_node_cannot_speak_for_another_or_exceed_its_cap(secure, tmp_path):
    token = secure.token(max_devices=1)
    identity = secure.node(tmp_path, "edge-1", token).identity("edge-1", "edge", 1, GIB)
    creds = channel_credentials(secure.ca.cert_pem, identity)
    code, detail = connect_status(secure.agent_address, creds, join("cloud-1"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "cannot speak for another node" in detail
    two = (CPU, Device("cpu1", "cpu", "test", "cpu", GIB, 0.05, "cpu"))
    code, detail = connect_status(secure.agent_address, creds, join("edge-1", devices=two))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "at most 1" in detail
    code, detail = connect_status(secure.agent_address, creds, join("edge-1", tier="cloud"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "tier" in detail


def test_agents_may_not_join_over_the_client_port(secure):
    creds = channel_credentials(secure.ca.cert_pem)
    code, detail = connect_status(
        secure.address, creds, m.Join(PROTOCOL_VERSION, ADMIN, "n1", "edge", devices=(CPU,))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED and "node certificate" in detail


def test_re_enrolling_a_node_retires_its_old_certificate(secure, tmp_path):
    old = secure.node(tmp_path, "n1", ADMIN).identity("n1", "edge", 1, GIB)
    new = secure.node(tmp_path / "rebuilt", "n1", ADMIN).identity("n1", "edge", 1, GIB)
    ca = secure.ca.cert_pem
    code, detail = connect_status(secure.agent_address, channel_credentials(ca, old), join("n1"))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "no longer valid" in detail
    code, _ = connect_status(secure.agent_address, channel_credentials(ca, new), join("n1"))
    assert code == grpc.StatusCode.OK


def test_a_node_pointed_at_a_reinstalled_scheduler_enrols_there_or_says_how(secure, tmp_path):
    folder = tmp_path / "identity"
    first = NodeTLS(secure.address, secure.ca.hash, ADMIN, folder).identity("n1", "edge", 1, GIB)
    other = Secure(tmp_path / "reinstalled")  # a new state folder: a new CA
    try:
        # Without a token: it says what happened and what to do, instead of failing
        # handshakes for ever.
        bare = NodeTLS(other.address, other.ca.hash, "", folder)
        with pytest.raises(ConfigError, match="certificate from another scheduler's CA"):
            bare.identity("n1", "edge", 1, GIB)
        # With one: it enrols with the new CA; both identities are kept, per CA.
        tls = NodeTLS(other.address, other.ca.hash, ADMIN, folder)
        second = tls.identity("n1", "edge", 1, GIB)
        assert second.cert_pem != first.cert_pem
        creds = channel_credentials(other.ca.cert_pem, second)
        assert connect_status(other.agent_address, creds, join("n1"))[0] == grpc.StatusCode.OK
        again = NodeTLS(secure.address, secure.ca.hash, "", folder).identity("n1", "edge", 1, GIB)
        assert again.cert_pem == first.cert_pem  # pointed back: its first identity, no token
    finally:
        other.close()


# ------------------------------------------------------------------ clients


def test_the_sdk_pins_the_ca_and_refuses_an_impostor(secure):
    assert fetch_ca(secure.address, secure.ca.hash) == secure.ca.cert_pem
    other = CertificateAuthority.create()
    with pytest.raises(AuthenticationError, match="none of them the pinned CA"):
        client_ca(secure.address, other.hash)
    plain = GrpcTransport(secure.address, ADMIN)  # plaintext against a TLS scheduler
    try:
        with pytest.raises(ConfigError, match="speaks TLS and this client spoke plaintext"):
            plain.check(timeout=3)
    finally:
        plain.close()
    tls = GrpcTransport(secure.address, ADMIN, client_ca(secure.address, secure.ca.hash))
    try:
        assert tls.list_nodes() == []
    finally:
        tls.close()


def test_a_ca_file_must_match_the_hash(secure, tmp_path):
    path = tmp_path / "ca.pem"
    path.write_bytes(secure.ca.cert_pem)
    assert client_ca(secure.address, secure.ca.hash, str(path)) == secure.ca.cert_pem
    with pytest.raises(ConfigError, match="does not match"):
        client_ca(secure.address, CertificateAuthority.create().hash, str(path))


def _all_client_methods():
    pool = convert.pb.DESCRIPTOR
    for service in ("JobService", "BlobService"):
        for method in pool.services_by_name[service].methods:
            yield service, method


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "insecure"])
def test_every_client_method_requires_the_token(tmp_path, tls):
    service = SchedulerService(tmp_path, token=ADMIN)
    security = ServerSecurity(tmp_path, ADMIN) if tls else None
    lenient = FailureThrottle(free_failures=1000, repeat_limit=1000)  # fails on purpose, often
    server, port = serve(service, "127.0.0.1", 0, security, throttle=lenient)
    creds = channel_credentials(security.ca.cert_pem) if security else None
    channel = grpc_channel(f"127.0.0.1:{port}", creds)
    try:
        for name, method in _all_client_methods():
            path = f"/{method.full_name.rsplit('.', 1)[0]}/{method.name}"
            request = b""  # every request type has only optional fields
            kind = (method.client_streaming, method.server_streaming)
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                try:
                    if kind == (False, False):
                        channel.unary_unary(path)(request, metadata=metadata, timeout=5)
                    elif kind == (True, False):
                        channel.stream_unary(path)(iter([request]), metadata=metadata, timeout=5)
                    else:
                        list(channel.unary_stream(path)(request, metadata=metadata, timeout=5))
                    raise AssertionError(f"{name}.{method.name} answered without the token")
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (name, method.name)
    finally:
        channel.close()
        server.stop(0).wait()
        service.close()
        if security:
            security.close()


def test_state_files_hold_no_token_in_clear(secure):
    token = secure.token()
    secure.service.flush()
    for root, _, files in os.walk(secure.service.store.path.parent):
        for name in files:
            assert token.encode() not in (Path(root) / name).read_bytes(), name
    assert decode_json(b'{"a": 1}') == {"a": 1}
