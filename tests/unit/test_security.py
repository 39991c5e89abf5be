"""Join tokens, the failure throttle, certificates and the quarantine rule, without a network."""

from __future__ import annotations

import datetime
import sqlite3

import pytest
from cryptography import x509

from anypu.comm import (
    CertificateAuthority,
    FailureThrottle,
    Identity,
    ThrottledError,
    cert_hash,
    common_name,
    http_peer,
    new_key_and_csr,
    parse_ca_hash,
    peer_host,
    serves_tls,
)
from anypu.errors import AuthenticationError, ConfigError
from anypu.scheduler._quarantine import NodeQuarantine
from anypu.scheduler._tokens import (
    AccessDeniedError,
    Enrolment,
    Scope,
    TokenStore,
    parse_ttl,
    token_hash,
)

GIB = 1 << 30


@pytest.fixture
def store(tmp_path):
    s = TokenStore(tmp_path)
    yield s
    s.close()


def redeem(store, token, name="n1", tier="edge", devices=1, memory=GIB, now=100.0):
    return store.redeem(token, name, tier, devices, memory, "sha256:ab", now)


def test_a_token_is_stored_only_as_its_hash(store, tmp_path):
    token = store.create(3600, ["edge"], now=0.0)
    assert token.startswith("anypu-join-") and len(token) > 40
    raw = (tmp_path / "anypu.db").read_bytes()
    db = sqlite3.connect(tmp_path / "anypu.db")
    hashes = [row[0] for row in db.execute("SELECT token_hash FROM join_tokens")]
    db.close()
    assert hashes == [token_hash(token)]
    assert token.encode() not in raw


def test_a_token_is_single_use(store):
    token = store.create(3600, ["edge"], now=0.0)
    enrolment = redeem(store, token)
    assert enrolment.scope.tiers == ("edge",)
    assert store.enrolment("n1") == enrolment
    with pytest.raises(AuthenticationError, match="already used .*n1"):
        redeem(store, token, name="n2")


def test_expired_and_unknown_tokens_are_refused(store):
    token = store.create(60, ["edge"], now=0.0)
    with pytest.raises(AuthenticationError, match="expired"):
        redeem(store, token, now=61.0)
    with pytest.raises(AuthenticationError, match="does not know"):
        redeem(store, token + "x")


def test_scope_is_checked_and_leaves_the_token_unspent(store):
    token = store.create(3600, ["edge"], now=0.0, max_devices=2, max_memory_bytes=8 * GIB)
    with pytest.raises(AccessDeniedError, match="tier edge only, not 'cloud'"):
        redeem(store, token, tier="cloud")
    with pytest.raises(AccessDeniedError, match="3 devices .* at most 2"):
        redeem(store, token, devices=3)
    with pytest.raises(AccessDeniedError, match="16.0 GiB .* at most 8.0 GiB"):
        redeem(store, token, memory=16 * GIB)
    assert isinstance(AccessDeniedError("x"), AuthenticationError)
    redeem(store, token, devices=2, memory=8 * GIB)  # still spendable after the refusals


def test_tokens_survive_a_restart_and_list_without_the_secret(tmp_path):
    first = TokenStore(tmp_path)
    token = first.create(3600, ["edge", "device"], now=0.0)
    first.close()
    second = TokenStore(tmp_path)
    try:
        (item,) = second.tokens(now=10.0)
        assert item["state"] == "valid" and item["tiers"] == "edge,device"
        assert token not in str(item)
        redeem(second, token, tier="device")
        assert second.tokens(now=10.0)[0]["state"] == "used"
    finally:
        second.close()


def test_bad_token_parameters_are_named(store):
    with pytest.raises(ConfigError, match="tiers"):
        store.create(3600, ["fog"], now=0.0)
    with pytest.raises(ConfigError, match="ttl"):
        store.create(0, ["edge"], now=0.0)
    assert parse_ttl("1h") == 3600 and parse_ttl("15m") == 900 and parse_ttl("90") == 90
    for bad in ("soon", "-1h", "0s", "400d"):
        with pytest.raises(ConfigError, match="--ttl"):
            parse_ttl(bad)


def test_an_enrolment_admits_only_its_own_name_within_scope():
    enrolment = Enrolment("edge-1", "sha256:00", Scope(("edge",), 1, 4 * GIB), 0.0)
    enrolment.admit("edge-1", "edge", 1, 4 * GIB)
    with pytest.raises(AccessDeniedError, match="cannot speak for another node"):
        enrolment.admit("edge-2", "edge", 1, GIB)
    with pytest.raises(AccessDeniedError, match="at most 1"):
        enrolment.admit("edge-1", "edge", 2, GIB)


def _throttle(**rules: float) -> tuple[FailureThrottle, list[float], list[float]]:
    """A throttle on a fake clock that records its waits instead of sleeping."""
    now, waits = [0.0], []
    throttle = FailureThrottle(clock=lambda: now[0], sleep=waits.append, **rules)  # type: ignore[arg-type]
    return throttle, now, waits


def test_throttle_delays_an_address_exponentially_after_its_free_failures():
    throttle, _, waits = _throttle(free_failures=3, base_delay_s=0.1, max_delay_s=1.0)
    for i in range(8):
        throttle.failed(f"ipv4:10.0.0.7:{5000 + i}", f"guess-{i}")  # a new port each time
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0]
    throttle.failed("ipv4:10.0.0.8:1", "typo")  # other addresses are unaffected
    assert len(waits) == 5
    assert (throttle.delayed, throttle.refused) == (5, 0)


def test_throttle_refuses_a_credential_that_keeps_failing_but_no_address_is_locked():
    throttle, _, _ = _throttle(free_failures=100, repeat_limit=3)
    peer = "ipv4:10.0.0.7:1"
    throttle.failed(peer, "stale")
    throttle.failed(peer, "stale")
    with pytest.raises(ThrottledError, match="this token failed repeatedly"):
        throttle.failed(peer, "stale")
    throttle.failed(peer, "another")  # a different token is not refused
    assert throttle.refused == 1
    assert not hasattr(throttle, "check")  # there is no lock-out to check before authenticating


def test_throttle_refuses_rather_than_queue_too_many_waits():
    throttle, _, _ = _throttle(free_failures=0, max_waiting=0)
    with pytest.raises(ThrottledError, match="too many failed authentication attempts"):
        throttle.failed("ipv4:10.0.0.7:1", "guess")


def test_throttle_forgets_old_failures_and_bounds_memory():
    throttle, now, waits = _throttle(free_failures=2, window_s=10, max_peers=100)
    for _ in range(2):
        throttle.failed("ipv4:1.1.1.1:1", "x")
    now[0] = 11.0
    throttle.failed("ipv4:1.1.1.1:1", "y")
    assert waits == []  # the first two are out of the window
    for i in range(1000):
        throttle.failed(f"ipv4:10.{i // 256}.{i % 256}.1:1", f"t{i}")
    assert throttle.tracked() <= 200
    assert peer_host("ipv6:[::1]:4242") == "ipv6:[::1]"
    # An HTTP client's (host, port) is keyed as gRPC keys the same address.
    assert peer_host(http_peer("::1", 4242)) == "ipv6:[::1]"
    assert peer_host(http_peer("10.0.0.7", 80)) == peer_host("ipv4:10.0.0.7:51234")


def test_node_certificates_carry_the_name_the_ca_chose():
    ca = CertificateAuthority.create()
    key, csr = new_key_and_csr("i-want-to-be-cloud-1")
    cert = ca.sign_node(csr, "edge-7", valid_s=3600)
    assert common_name(cert) == "edge-7"
    parsed = x509.load_pem_x509_certificate(cert)
    parsed.verify_directly_issued_by(ca.cert)
    assert cert_hash(cert) != ca.hash and ca.hash.startswith("sha256:")
    assert parse_ca_hash(ca.hash.upper().replace("SHA256:", "")) == ca.hash
    # It authenticates the node to the scheduler and, for direct calls, to clients.
    assert serves_tls(cert) and not serves_tls(ca.cert_pem)


def test_a_node_certificate_from_before_direct_tls_is_refused_with_what_to_do(tmp_path):
    import datetime
    from types import SimpleNamespace

    from cryptography.x509.oid import ExtendedKeyUsageOID

    from anypu.agents import direct_tls_files as _direct_tls
    from anypu.errors import AnypuError

    ca = CertificateAuthority.create()
    key, csr = new_key_and_csr("edge-1")
    now = datetime.datetime.now(datetime.timezone.utc)
    client_only = ca._sign(
        x509.load_pem_x509_csr(csr).public_key(), "edge-1",
        [ExtendedKeyUsageOID.CLIENT_AUTH], now, now + datetime.timedelta(days=1), [],
    )  # fmt: skip
    for cert, ok in ((client_only, False), (ca.sign_node(csr, "edge-1", 3600), True)):
        identity = Identity(cert, key)
        tls = SimpleNamespace(
            folder=tmp_path, cert_folder=tmp_path, identity=lambda *_, i=identity: i
        )
        if ok:
            assert _direct_tls(tls, "edge-1", "edge", []) == (
                str(tmp_path / "node.pem"), str(tmp_path / "node.key"),
            )  # fmt: skip
        else:
            with pytest.raises(AnypuError, match="predates direct calls over TLS"):
                _direct_tls(tls, "edge-1", "edge", [])


def test_a_ca_is_generated_once_and_reloaded(tmp_path):
    first = CertificateAuthority.load_or_create(tmp_path)
    second = CertificateAuthority.load_or_create(tmp_path)
    assert first.hash == second.hash
    assert (tmp_path / "tls" / "ca.key").stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError, match="both --ca-cert and --ca-key"):
        CertificateAuthority.load_or_create(tmp_path, cert_file=str(tmp_path / "tls/ca.pem"))
    other = CertificateAuthority.create()
    with pytest.raises(ConfigError, match="does not belong"):
        CertificateAuthority(first.cert_pem, other.key_pem)
    leaf = first.issue_server(["127.0.0.1"]).cert_pem.split(b"-----END CERTIFICATE-----")[0]
    with pytest.raises(ConfigError, match="not a CA"):
        CertificateAuthority(leaf + b"-----END CERTIFICATE-----\n", first.key_pem)


def test_bad_ca_hashes_say_what_to_copy():
    for bad in ("", "sha256:xyz", "md5:" + "0" * 32):
        with pytest.raises(ConfigError, match="CA hash: sha256"):
            parse_ca_hash(bad)


def test_expiry_is_what_the_ca_wrote():
    ca = CertificateAuthority.create()
    _, csr = new_key_and_csr("n")
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    cert = x509.load_pem_x509_certificate(ca.sign_node(csr, "n", 60, not_before=start))
    assert cert.not_valid_after_utc == start + datetime.timedelta(seconds=60)


# ------------------------------------------------------------------ quarantine


def test_a_node_failing_distinct_jobs_is_quarantined():
    q = NodeQuarantine(threshold=3, window_s=60, quarantine_s=120)
    assert not q.failed("liar", "j1", 0.0, user_error=False)
    assert not q.failed("liar", "j1", 1.0, user_error=False)  # the same job again: its problem
    assert not q.failed("liar", "j2", 2.0, user_error=False)
    assert q.failed("liar", "j3", 3.0, user_error=False)
    assert q.quarantined("liar", 50.0)
    assert "quarantined for 73 s more" in q.reason("liar", 50.0)
    assert not q.quarantined("liar", 123.1) and q.reason("liar", 200.0) == ""
    assert not q.quarantined("honest", 50.0)


def test_user_errors_successes_and_old_failures_do_not_count():
    q = NodeQuarantine(threshold=3, window_s=60)
    for i in range(10):
        assert not q.failed("n", f"u{i}", float(i), user_error=True)
    q.failed("n", "a", 0.0, user_error=False)
    q.failed("n", "b", 1.0, user_error=False)
    q.succeeded("n")
    assert not q.failed("n", "c", 2.0, user_error=False)
    q.failed("m", "a", 0.0, user_error=False)
    q.failed("m", "b", 1.0, user_error=False)
    assert not q.failed("m", "c", 61.5, user_error=False)  # "a" and "b" left the window
    q.release("m")
    assert not q.quarantined("m", 62.0)
    with pytest.raises(ValueError):
        NodeQuarantine(threshold=0)
