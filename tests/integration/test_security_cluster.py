"""The deployed shape, in real processes: `anypu token create`, an agent enrolling with
`--ca-hash` and a join token, the SDK over TLS, and the agent restarting on its
certificate after its token is spent."""

from __future__ import annotations

import pytest
import torch

from anypu._cli import main
from anypu.errors import AuthenticationError
from anypu.sdk import connect, disconnect
from anypu.sdk.models import mlp
from tests.cluster import Cluster

EDGE = "devices:\n  - {kind: npu, vendor: huawei, model: Ascend-310P, memory: 8GiB, tflops: 22}\n"
EDGE += "include_host: false\n"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run the ``anypu`` command line in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("secure"), tls=True)
    try:
        yield c
    finally:
        c.close()


def test_join_token_enrolment_and_tls_clients_end_to_end(cluster, capsys):
    log = cluster.log("scheduler")
    assert cluster.ca_hash in log and "mutual-TLS port" in log and "WARNING" not in log
    status, out, err = cli(capsys, "token", "create", "--state-dir", str(cluster.state_dir),
                           "--ttl", "10m", "--tier", "edge", "--max-devices", "1",
                           "--max-memory", "16GiB")  # fmt: skip
    assert status == 0, err
    token = out.strip()
    assert "single-use" in err
    cluster.add_agent("edge-1", "edge", EDGE, token=token)
    client = connect(cluster.address, cluster.token, ca_hash=cluster.ca_hash)
    try:
        cluster.wait_nodes(client, 1)
        model, x = mlp(width=64, depth=2), torch.randn(8, 64)
        torch.testing.assert_close(client.run(model, x), model(x))
        # The spent token is refused to anyone else ...
        _, listed, _ = cli(capsys, "token", "list", "--state-dir", str(cluster.state_dir))
        assert "state=used" in listed and "used_by=edge-1" in listed
        assert token not in listed
        # ... while the agent restarts on its certificate, with no token at all.
        cluster.kill("edge-1")
        cluster.add_agent("edge-1", "edge", EDGE, token="")
        cluster.wait_nodes(client, 1)
        torch.testing.assert_close(client.run(model, x), model(x))
    finally:
        disconnect()


def test_a_client_without_the_token_is_refused(cluster):
    with pytest.raises(AuthenticationError, match="refused the token"):
        connect(cluster.address, "not-the-token", ca_hash=cluster.ca_hash)
    disconnect()


def test_an_agent_with_a_spent_or_wrong_token_stops_with_a_clear_error(cluster, tmp_path):
    proc = cluster.add_agent("edge-9", "edge", EDGE, token="anypu-join-wrong")
    assert proc.wait(60) == 2
    assert "does not know this join token" in cluster.log("edge-9")


def test_insecure_is_loopback_only_and_says_so(tmp_path, capsys):
    status, _, err = cli(
        capsys, "scheduler", "--insecure", "--host", "0.0.0.0", "--state-dir", str(tmp_path)
    )
    assert status == 2
    assert "--insecure serves plaintext" in err and "loopback" in err
    (tmp_path / "plain").mkdir()
    plain = Cluster(tmp_path / "plain")
    try:
        assert "WARNING: --insecure: plaintext" in plain.log("scheduler")
    finally:
        plain.close()


def test_token_create_names_bad_flags(tmp_path, capsys):
    status, _, err = cli(capsys, "token", "create", "--state-dir", str(tmp_path), "--ttl", "x")
    assert status == 2 and "--ttl 'x' is not a duration" in err
    status, _, err = cli(
        capsys, "token", "create", "--state-dir", str(tmp_path), "--max-memory", "lots"
    )
    assert status == 2 and "--max-memory" in err


def test_an_admin_mints_and_lists_join_tokens_from_another_machine(cluster, capsys, tmp_path):
    remote = ("--scheduler", cluster.address, "--token", cluster.token)
    remote += ("--ca-hash", cluster.ca_hash)
    status, out, err = cli(capsys, "token", "create", *remote, "--ttl", "5m", "--tier", "device")
    assert status == 0, err
    token = out.strip()
    assert token.startswith("anypu-join-") and "single-use" in err
    status, listed, err = cli(capsys, "token", "list", *remote)
    assert status == 0, err
    assert "tiers=device" in listed and "state=valid" in listed and token not in listed
    assert "minted a join token for tier device" in cluster.log("scheduler")
    wrong = ("--scheduler", cluster.address, "--token", "wrong", "--ca-hash", cluster.ca_hash)
    status, _, err = cli(capsys, "token", "create", *wrong)
    assert status == 2 and "refused the token" in err
    status, _, err = cli(capsys, "token", "list", "--state-dir", str(tmp_path / "nowhere"))
    assert status == 2 and "no scheduler state in" in err and "--scheduler HOST:PORT" in err
