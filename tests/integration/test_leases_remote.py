"""Leases over the network: later calls go client → agent, skipping the scheduler.

Real processes on loopback: a scheduler and agents started with ``--direct-address``.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from anypu.errors import JobFailedError
from anypu.sdk.models import mlp
from tests.cluster import Cluster
from tests.integration.test_network_run import Gather


def jobs_by_age(client, count: int, timeout: float = 10.0) -> list:
    """The newest ``count`` jobs, oldest first, once the agents' reports have arrived."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = client.transport.list_jobs(count)
        if len(jobs) >= count or time.monotonic() > deadline:
            return sorted(jobs, key=lambda j: j.submitted_at)
        time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, **{"heartbeat-interval": 0.5, "lost-after": 3.0})
    cluster.add_agent("direct-1", "edge", direct=True)
    cluster.add_agent("direct-2", "edge", direct=True)
    yield cluster
    cluster.close()


def test_calls_after_the_first_go_to_the_leased_agent_and_are_recorded(cluster):
    with cluster.connected_client(2) as client:
        model, x = mlp(), torch.randn(8, 256)
        for _ in range(4):
            torch.testing.assert_close(client.run(model, x), model(x))
        # The agent named the slice's worker process, which served the last calls itself
        # and reported them: all four are recorded.
        assert list(client.transport._workers.values()) != []
        jobs = jobs_by_age(client, 4)
        assert [j.placement.solver for j in jobs][1:] == ["lease"] * 3
        assert jobs[0].placement.solver != "lease"
        assert len({j.placement.node_id for j in jobs}) == 1  # the leased slice's node
        assert all(j.state == "succeeded" for j in jobs)

        # The model raising under the lease: its error, and the lease keeps serving. (Same
        # input shape throughout: a call of another shape is another kind, placed anew.)
        gather = Gather()
        client.run(gather, torch.tensor([1]))
        with pytest.raises(JobFailedError, match="index out of range|out of bounds|index"):
            client.run(gather, torch.tensor([42]))
        torch.testing.assert_close(client.run(gather, torch.tensor([3])), gather.table[[3]])
        failed = [j for j in jobs_by_age(client, 7) if j.state == "failed"]
        assert len(failed) == 1 and failed[0].placement.solver == "lease"
        assert failed[0].outcome.user_error


def test_a_leased_agent_killed_the_call_is_placed_elsewhere_and_answers_once(cluster):
    with cluster.connected_client(2) as client:
        model, x = mlp(), torch.randn(8, 256)
        client.run(model, x)
        client.run(model, x)
        leased = jobs_by_age(client, 2)[-1]
        assert leased.placement.solver == "lease"
        cluster.kill(leased.placement.node_id)
        torch.testing.assert_close(client.run(model, x), model(x))
        newest = client.transport.list_jobs(1)[0]
        assert newest.state == "succeeded" and newest.placement.solver != "lease"
        assert newest.placement.node_id != leased.placement.node_id


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # With TLS the node enrols before serving direct calls: a scheduler that is not
        # there is said so at once.
        (["--ca-hash", "sha256:" + "0" * 64], "no anypu scheduler answers at 127.0.0.1:9"),
        (["--direct-address", "0.0.0.0:7080"], "the address clients reach this machine at"),
        (["--direct-advertise", "gateway:0"], "--direct-advertise 'gateway:0' must be HOST:PORT"),
    ],
)
def test_a_direct_address_that_cannot_work_is_refused_clearly(flags, message):
    result = subprocess.run(
        [sys.executable, "-m", "anypu", "agent", "--scheduler", "127.0.0.1:9"]
        + ["--tier", "edge", "--direct-address", "127.0.0.1:0", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_over_tls_the_leased_node_must_show_its_own_certificate(tmp_path):
    # A TLS scheduler: the agent and its worker serve direct calls with the node's
    # certificate, and a client accepts it only from the node its lease names.
    import dataclasses

    from anypu.comm import client_ca
    from anypu.sdk._transport import GrpcTransport

    cluster = Cluster(tmp_path, tls=True)
    try:
        cluster.add_agent("direct-tls", "edge", direct=True)
        with cluster.connected_client(1) as client:
            model, x = mlp(), torch.randn(8, 256)
            for _ in range(4):
                torch.testing.assert_close(client.run(model, x), model(x))
            jobs = jobs_by_age(client, 4)
            assert [j.placement.solver for j in jobs][1:] == ["lease"] * 3
            assert list(client.transport._workers.values()) != []  # the worker, over TLS
            lease = next(iter(client._leases.values())).lease
            assert lease.node_id == "direct-tls" and lease.address
            ca = client_ca(cluster.address, cluster.ca_hash)
            for node_id, answered in (("direct-tls", True), ("someone-else", False)):
                fresh = GrpcTransport(cluster.address, cluster.token, ca)
                try:
                    result = fresh.run_leased(dataclasses.replace(lease, node_id=node_id), (x,))
                finally:
                    fresh.close()
                assert (result is not None and result.ok) is answered, node_id
    finally:
        cluster.close()
