"""Faults injected into real processes on loopback: restarts, partitions, runaway jobs.

The same rules run in-process and deterministically in ``tests/unit/test_reliability.py``
(fake agents with fault-injecting subclasses); these keep the cases only real processes
show: a SIGKILLed scheduler, a TCP partition, a CPU-starved heartbeat, a process group.

Intervals are short (heartbeat 0.2 s, lost after 1.5 s) but keep Kubernetes' ratio
between them, so the same rules are exercised as with production defaults.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from anypu.errors import JobTimeoutError
from anypu.scheduler._store import StateStore
from anypu.sdk import Client, RunOptions
from anypu.sdk._transport import GrpcTransport
from anypu.sdk.models import mlp
from tests.cluster import Cluster
from tests.integration.test_network_run import GPU_NODE, Slow
from tests.proxy import Proxy


def _wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _node_states(client: Client) -> dict[str, str]:
    return {n.node_id: n.state for n in client.transport.list_nodes()}


def _children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def test_scheduler_killed_with_200_jobs_in_flight_loses_none_and_runs_none_twice(cluster):
    cluster.add_agent("a1", "edge", GPU_NODE)
    cluster.add_agent("a2", "cloud", GPU_NODE)
    client = Client(GrpcTransport(cluster.address, cluster.token))
    cluster.wait_nodes(client, 2)
    model = mlp(width=512, depth=4)
    x = torch.randn(64, 512)
    expected = model(x)
    futures = [client.submit(model, x) for _ in range(200)]  # each acknowledged = durable
    _wait_until(lambda: sum(f.done() for f in futures) >= 20, 60, "20 jobs to finish")
    cluster.restart_scheduler()  # SIGKILL, then start again on the same port and state
    cluster.wait_nodes(client, 2, timeout=30)
    for future in futures:
        torch.testing.assert_close(future.result(timeout=120), expected)
    client.close()
    cluster.close()
    store = StateStore(cluster.state_dir)
    assert store.integrity_check() == "ok"
    for future in futures:
        states = [state for _, state, _, _ in store.transitions(future.job_id)]
        assert states.count("succeeded") == 1, (future.job_id, states)
        assert states[0] == "pending"


def test_healthy_agents_under_load_are_never_declared_lost(cluster):
    for name in ("b1", "b2"):
        cluster.add_agent(name, "edge", GPU_NODE)
    client = Client(GrpcTransport(cluster.address, cluster.token))
    cluster.wait_nodes(client, 2)
    model, x = Slow(steps=30), torch.randn(256, 512)
    futures = [client.submit(model, x) for _ in range(8)]  # seconds of CPU-bound work
    seen: set[str] = set()
    while not all(f.done() for f in futures):
        seen |= set(_node_states(client).values())
        time.sleep(0.1)
    assert seen == {"ready"}
    assert all(f.info().attempt == 1 for f in futures)
    client.close()


def test_a_short_partition_changes_nothing_and_a_long_one_moves_the_job(cluster):
    proxy = Proxy(cluster.port)
    try:
        cluster.add_agent("far", "edge", GPU_NODE, address=proxy.address)
        cluster.add_agent("near", "edge", GPU_NODE)
        client = Client(GrpcTransport(cluster.address, cluster.token))
        cluster.wait_nodes(client, 2)

        proxy.partition()
        time.sleep(0.6)  # well inside the 1.5 s grace
        proxy.heal()
        time.sleep(0.5)
        assert _node_states(client) == {"far": "ready", "near": "ready"}

        model, x = Slow(), torch.randn(256, 512)
        client.run(model, x, RunOptions(nodes=("far",)))  # warm: the next one prefers far
        future = client.submit(model, x)
        _wait_until(lambda: future.info().placement is not None, 10, "placement")
        assert future.info().placement.node_id == "far"
        proxy.partition()
        _wait_until(lambda: _node_states(client)["far"] == "lost", 10, "far to be lost")
        _wait_until(lambda: future.info().attempt == 2, 10, "the job to be placed again")
        proxy.heal()  # far's attempt 1 may still be running, or finished behind the cut
        torch.testing.assert_close(future.result(timeout=60), model(x))
        info = future.info()
        assert info.placement.node_id == "near" and info.attempt == 2
        # After healing, far is fenced: it must re-join, and then it is ready again.
        _wait_until(lambda: _node_states(client)["far"] == "ready", 20, "far to re-join")
        client.close()
    finally:
        proxy.close()
    store = StateStore(cluster.state_dir)
    states = [s for _, s, _, _ in store.transitions(info.job_id)]
    assert states.count("succeeded") == 1


def test_a_hung_job_times_out_and_its_process_group_is_gone(cluster):
    agent = cluster.add_agent("c1", "edge", GPU_NODE)
    client = Client(GrpcTransport(cluster.address, cluster.token))
    cluster.wait_nodes(client, 1)
    model, x = Slow(steps=400), torch.randn(256, 512)  # seconds of work
    _wait_until(lambda: _children(agent.pid), 30, "the agent's worker")
    workers_before = _children(agent.pid)
    # timeout_s bounds preparing the call too: export it first, so the run is what times out.
    client._describe(model, x, RunOptions(timeout_s=60))
    with pytest.raises(JobTimeoutError, match="timeout of 0.5s"):
        client.run(model, x, RunOptions(timeout_s=0.5, max_retries=0))
    for pid in workers_before:
        _wait_until(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 5, f"worker {pid}")
    # The slice has a fresh worker and keeps serving.
    small = mlp(width=32, depth=2)
    y = torch.randn(2, 32)
    torch.testing.assert_close(client.run(small, y), small(y))
    client.close()
