"""sdk.run over real processes: a scheduler and agents talking gRPC on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import torch

from anypu.errors import (
    AuthenticationError,
    DeadlineUnreachableError,
    InputError,
    JobFailedError,
    SchedulerUnavailableError,
    UnschedulableError,
)
from anypu.sdk import Client, RunOptions
from anypu.sdk._transport import GrpcTransport
from anypu.sdk.models import mlp
from tests.cluster import Cluster

GPU_NODE = (
    "devices:\n"
    "  - {kind: gpu, vendor: nvidia, model: A100-SXM4-40GB, memory: 40GiB, tflops: 156}\n"
    "include_host: false\n"
)
SMALL_NPU = (
    "devices:\n"
    "  - {kind: npu, vendor: huawei, model: Ascend-310P, memory: 64MiB, tflops: 22}\n"
    "include_host: false\n"
)


class Gather(torch.nn.Module):
    """Raises inside the model when an index is out of range: a user error at run time."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(10, 4))

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return torch.index_select(self.table, 0, index)


class Slow(torch.nn.Module):
    """About a second of CPU work (13 GFLOP): long enough to kill its agent mid-job."""

    def __init__(self, steps: int = 100) -> None:
        super().__init__()
        self.steps = steps
        self.weight = torch.nn.Parameter(torch.randn(512, 512) / 23)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.steps):
            x = torch.tanh(x @ self.weight)
        return x


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cluster")
    c = Cluster(workdir)
    c.add_agent("cloud-1", "cloud", GPU_NODE)
    c.add_agent("edge-1", "edge", SMALL_NPU)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def client(cluster):
    with cluster.connected_client(nodes=2) as client:
        yield client


def test_run_places_on_the_network_and_returns_outputs(client):
    model = mlp()
    x = torch.randn(32, 256)
    y = client.run(model, x)
    torch.testing.assert_close(y, model(x))
    info = client.transport.list_jobs(1)[0]
    assert info.state == "succeeded"
    assert info.placement.node_id in ("cloud-1", "edge-1")
    assert info.placement.simulated  # both nodes declare simulated devices
    assert info.outcome.run_seconds > 0
    assert set(info.placement.terms) >= {"compute", "transfer", "queue"}


def test_a_warm_call_uploads_nothing(client, monkeypatch):
    model = mlp()
    x = torch.randn(32, 256)
    client.run(model, x)

    def no_upload(*args, **kwargs):
        raise AssertionError("a warm call must not upload the artifact again")

    monkeypatch.setattr(client.transport, "put_blob", no_upload)
    monkeypatch.setattr(client.transport, "missing_blobs", no_upload)
    torch.testing.assert_close(client.run(model, x), model(x))


class Widen(torch.nn.Module):
    """Small inputs, large outputs: ``x`` repeated ``times`` over."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.times = times

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat(self.times, 1) * 2


@pytest.mark.parametrize("times", [8, 72], ids=["8 MiB", "288 MiB"])
def test_outputs_of_any_size_come_back_once(client, times):
    # 288 MiB is over the 256 MiB message limit: the outputs travel as a blob in chunks
    # both from the agent and to the client (it once broke the stream and read "Poison").
    x = torch.randn(1024, 1024)  # 4 MiB
    future = client.submit(Widen(times), x)
    y = future.result(timeout=120)
    assert y.shape == (times * 1024, 1024)
    torch.testing.assert_close(y[-1024:], x * 2)
    info = future.info()
    assert (info.state, info.attempt) == ("succeeded", 1)
    assert info.outputs_digest  # over the inline limit: a blob, not a message
    del y


def test_submit_is_asynchronous(client):
    model = mlp(width=64, depth=2)
    futures = [client.submit(model, torch.randn(8, 64)) for _ in range(5)]
    for future in futures:
        assert future.result(timeout=60).shape == (8, 64)
    assert futures[0].info().state == "succeeded"


def test_a_job_no_device_can_hold_lists_each_nodes_reason(client):
    big = torch.nn.Linear(8192, 8192)  # 256 MiB of weights: more than 64 MiB, kind cpu only
    with pytest.raises(UnschedulableError) as caught:
        client.run(big, torch.randn(2, 8192), RunOptions(device_kinds=("npu",)))
    reasons = caught.value.reasons
    assert set(reasons) == {"cloud-1", "edge-1"}
    assert "gpu" in reasons["cloud-1"] and "npu" in reasons["cloud-1"]
    assert "MiB" in reasons["edge-1"] or "GiB" in reasons["edge-1"]


def test_a_deadline_is_met_where_it_can_be_and_fails_fast_where_it_cannot(client):
    model = mlp(width=64, depth=2)
    x = torch.randn(8, 64)
    future = client.submit(model, x, RunOptions(deadline_ms=60_000))
    torch.testing.assert_close(future.result(timeout=60), model(x))
    info = future.info()
    assert info.deadline_ms == 60_000 and info.deadline_met is True
    started = time.monotonic()
    with pytest.raises(DeadlineUnreachableError) as caught:
        client.run(model, x, RunOptions(deadline_ms=0.001))
    assert time.monotonic() - started < 5  # at once, not after waiting
    message = str(caught.value)
    assert message.startswith("DeadlineUnreachable: no device is predicted to finish it")
    assert re.search(r"best is (cloud-1|edge-1)/\w+ \((cloud|edge)\) at [\d.]+ ms: ", message)
    assert "compute" in message and "best_effort=True" in message
    assert len(caught.value.reasons) == 1
    late = client.submit(model, x, RunOptions(deadline_ms=0.001, best_effort=True))
    torch.testing.assert_close(late.result(timeout=60), model(x))
    assert late.info().deadline_met is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (RunOptions(deadline_ms=0), "more than 0 milliseconds"),
        (RunOptions(deadline_ms=-5), "more than 0 milliseconds"),
        (RunOptions(deadline_ms="soon"), "number of milliseconds"),  # type: ignore[arg-type]
        (RunOptions(best_effort=True), "only means something with a deadline"),
    ],
)
def test_a_deadline_a_user_got_wrong_says_what_to_give(client, options, message):
    with pytest.raises(InputError, match=message):
        client.run(mlp(width=64, depth=2), torch.randn(8, 64), options)


def test_a_model_that_raises_reports_its_error_and_the_agent_keeps_serving(client):
    model = Gather()
    ok = client.run(model, torch.tensor([1, 2]))
    assert ok.shape == (2, 4)
    with pytest.raises(JobFailedError) as caught:
        client.run(model, torch.tensor([1, 99]))
    assert "index out of range" in str(caught.value)
    assert caught.value.remote_type
    info = client.transport.list_jobs(1)[0]
    assert info.attempt == 1, "a model's own exception is not retried"
    torch.testing.assert_close(client.run(model, torch.tensor([3])), model(torch.tensor([3])))


def test_wrong_token_for_client_and_agent(cluster):
    with pytest.raises(AuthenticationError, match="token"):
        GrpcTransport(cluster.address, "not-the-token").check()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "anypu",
            "agent",
            "--scheduler",
            cluster.address,
            "--token",
            "wrong",
            "--tier",
            "edge",
            "--name",
            "intruder",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "refused the token" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_scheduler_names_the_address():
    with pytest.raises(SchedulerUnavailableError) as caught:
        GrpcTransport("127.0.0.1:9", "t").check(timeout=2)
    assert "127.0.0.1:9" in str(caught.value)
    assert "anypu scheduler" in str(caught.value)


def test_status_command_shows_nodes_by_tier(cluster, client):
    command = [sys.executable, "-m", "anypu", "status", "--scheduler", cluster.address]
    command += ["--token", cluster.token]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "cloud (1)" in result.stdout and "edge (1)" in result.stdout
    assert "simulated on cpu" in result.stdout
    # The usage summary is the scheduler's own (its Usage call), not recomputed here.
    result = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60)
    usage = {(row["tier"], row["kind"]): row for row in json.loads(result.stdout)["usage"]}
    assert usage["cloud", "gpu"]["devices"] == 1 and usage["edge", "npu"]["slices"] >= 1


def test_the_logs_say_what_happened(cluster, client):
    model, x = mlp(width=32, depth=2), torch.randn(4, 32)
    job_id = client.submit(model, x).job_id
    client.transport.wait(job_id, 30)
    scheduler, agent = cluster.log("scheduler"), cluster.log("cloud-1") + cluster.log("edge-1")
    assert re.search(r"INFO anypu\.scheduler\S*: node cloud-1 joined \(tier cloud", scheduler)
    placed = re.search(
        rf"job {job_id} placed on (\S+) .* predicted .*\[submit-{job_id}\]", scheduler
    )
    assert placed, scheduler[-2000:]
    assert re.search(r"joined as (cloud|edge)-1 \(epoch \d+\)", agent)
    assert re.search(rf"job {job_id} attempt 1 on \S+ ran in", agent)
    assert "BAD_SIGNATURE" not in scheduler and "handshaker" not in scheduler


def test_a_stopped_agent_leaves_is_listed_as_left_and_can_be_removed(tmp_path):
    cluster = Cluster(tmp_path, **{"lost-after": 30})  # "lost" would take 30 s
    try:
        cluster.add_agent("a1", "edge", GPU_NODE)
        client = Client(GrpcTransport(cluster.address, cluster.token))
        cluster.wait_nodes(client, 1)
        cluster.stop("a1")  # SIGTERM: the agent says goodbye before it exits
        assert {n.node_id: n.state for n in client.transport.list_nodes()} == {"a1": "left"}
        assert "node a1 left: its agent stopped" in cluster.log("scheduler")
        # Gone for good: the operator removes it, and it leaves the listing.
        command = [sys.executable, "-m", "anypu", "node", "remove", "a1"]
        command += ["--scheduler", cluster.address, "--token", cluster.token]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "removed node a1 (edge, was left)" in result.stdout
        assert client.transport.list_nodes() == []
        again = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2 and "no node 'a1'" in again.stderr
        client.close()
    finally:
        cluster.close()


def test_agent_dying_mid_job_the_job_finishes_elsewhere_exactly_once(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.add_agent("a1", "edge", GPU_NODE)
        cluster.add_agent("a2", "edge", GPU_NODE)
        client = Client(GrpcTransport(cluster.address, cluster.token))
        cluster.wait_nodes(client, 2)
        # 100 steps can end in 0.1 s on a fast CPU, before the kill: 400 outlast it.
        model = Slow(steps=400)
        x = torch.randn(256, 512)
        client.run(model, x)  # warm both the export and one node
        future = client.submit(model, x)
        deadline = time.monotonic() + 30
        while future.info().state != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        victim = future.info().placement.node_id
        cluster.kill(victim)
        torch.testing.assert_close(future.result(timeout=60), model(x))
        info = future.info()
        assert info.placement.node_id != victim
        assert info.attempt == 2
        nodes = {n.node_id: n.state for n in client.transport.list_nodes()}
        assert nodes[victim] == "lost"
        client.close()
    finally:
        cluster.close()
    from anypu.scheduler._store import StateStore

    store = StateStore(tmp_path / "state")
    states = [state for _, state, _, _ in store.transitions(info.job_id)]
    assert states.count("succeeded") == 1
    assert states == ["pending", "placed", "running", "pending", "placed", "running", "succeeded"]
