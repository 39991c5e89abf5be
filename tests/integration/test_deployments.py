"""Models as services over real processes: a deployment's replicas placed on agents that
take direct calls, called by name, re-placed when a node goes, kept across a scheduler
restart, scaled and deleted.

A scheduler and two agents started with ``--direct-address`` on loopback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import torch

from anypu.errors import AnypuError, ConfigError, JobFailedError
from anypu.sdk import RunOptions
from anypu.sdk._services import REFRESH_S
from anypu.sdk.models import mlp
from tests.cluster import Cluster


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path, **{"heartbeat-interval": 0.5, "lost-after": 3.0})
    cluster.add_agent("direct-1", "edge", direct=True)
    cluster.add_agent("direct-2", "edge", direct=True)
    yield cluster
    cluster.close()


def _ready(client, name: str, count: int, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        (info,) = [d for d in client.deployments() if d.name == name]
        if len(info.ready) >= count:
            return info
        assert time.monotonic() < deadline, f"{name}: {info}"
        time.sleep(0.1)


def test_a_deployment_is_called_by_name_and_survives_a_node_and_a_restart(cluster):
    model, x = mlp(width=64, depth=2).eval(), torch.randn(4, 64)
    with cluster.connected_client(2) as client:
        info = client.deploy(model, "mlp", example_inputs=x, replicas=2)
        assert len(info.ready) == 2 and info.model_name == "MLP"
        service = client.service("mlp")
        for _ in range(10):
            torch.testing.assert_close(service(x), model(x))
        # The model was exported for the example's shapes: another batch is the model's
        # error, said as such, and the replica keeps serving.
        with pytest.raises(JobFailedError, match="shape"):
            service(torch.randn(16, 64))
        torch.testing.assert_close(service(x), model(x))
        # The calls went to the replicas, not through placement: recorded as leased (the
        # agents report them in batches).
        deadline = time.monotonic() + 15
        while not [j for j in client.transport.list_jobs(30) if j.placement.solver == "lease"]:
            assert time.monotonic() < deadline, "no call recorded as leased"
            time.sleep(0.2)
        # The Service tells the scheduler its calls' times end to end with its next
        # listing (every REFRESH_S while it calls): the dashboard's callers' p50/p99.
        time.sleep(REFRESH_S + 0.1)
        torch.testing.assert_close(service(x), model(x))
        (listed,) = [d for d in client.deployments() if d.name == "mlp"]
        assert sum(listed.caller_buckets) >= 11 and 0 < listed.caller_p50_s <= listed.caller_p99_s

        # A node goes: its replica is placed again on what is left, and calls go on.
        gone = info.ready[0].node_id
        cluster.stop(gone)
        torch.testing.assert_close(service(x), model(x))
        after = _ready(client, "mlp", 2)
        assert {r.node_id for r in after.ready} == {"direct-1", "direct-2"} - {gone}

    # The scheduler restarts: the deployment is in its store and its replicas come back.
    cluster.restart_scheduler()
    with cluster.connected_client(1) as client:
        back = _ready(client, "mlp", 2)
        assert back.replicas_wanted == 2
        torch.testing.assert_close(client.service("mlp")(x), model(x))

        assert len(client.scale("mlp", 1).ready) <= 2
        assert len(_ready(client, "mlp", 1).ready) == 1
        client.undeploy("mlp")
        assert client.deployments() == []
        with pytest.raises(AnypuError, match="no deployment 'mlp'"):
            client.service("mlp")(x)


def test_bad_deployments_say_what_to_change(cluster):
    model, x = mlp(width=64, depth=2).eval(), torch.randn(4, 64)
    with cluster.connected_client(2) as client:
        with pytest.raises(ConfigError, match="deployment name 'My Model'"):
            client.deploy(model, "My Model", example_inputs=x)
        with pytest.raises(ConfigError, match="replicas must be a whole number from 0 to 256"):
            client.deploy(model, "mlp", example_inputs=x, replicas=1000)
        with pytest.raises(AnypuError, match="no deployment 'nope'"):
            client.scale("nope", 2)
        # No device answers a call in 1 µs: the deployment waits, saying so (no replica
        # is placed over and over meanwhile).
        late = RunOptions(deadline_ms=0.001)
        info = client.deploy(model, "late", example_inputs=x, options=late, wait_s=5)
        assert not info.ready
        assert "no device is predicted to answer its calls within deadline_ms 0.001" in (
            info.message
        )
        client.undeploy("late")
        # 2 s once warm holds, though fetching and loading the model may take longer.
        info = client.deploy(
            model, "timely", example_inputs=x, options=RunOptions(deadline_ms=2000)
        )
        assert len(info.ready) == 1, info
        client.undeploy("timely")


def _anypu(cluster, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--scheduler", cluster.address, "--token", cluster.token]
    return subprocess.run(
        [sys.executable, "-m", "anypu", *args, *flags],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_command_line_deploys_lists_scales_and_deletes(cluster):
    with cluster.connected_client(2):
        pass
    made = _anypu(
        cluster,
        *("deploy", "mlp", "--model", "anypu.sdk.models:mlp", "--example", "4x256"),
        *("--deadline-ms", "5000", "--tiers", "edge"),
    )
    assert made.returncode == 0, made.stderr
    assert "mlp: MLP version 1, 1/1 replica(s) ready" in made.stdout
    listed = _anypu(cluster, "deployments", "--json")
    (document,) = json.loads(listed.stdout)
    assert document["name"] == "mlp" and document["inputs"][0]["shape"] == [4, 256]
    assert all("lease" not in r for r in document["replicas"])  # its id is a capability
    refused = _anypu(cluster, "rollback", "mlp")
    assert refused.returncode == 2 and "no version before 1" in refused.stderr
    canary = _anypu(
        cluster,
        *("deploy", "mlp", "--model", "anypu.sdk.models:mlp", "--example", "4x256"),
        *("--canary", "50", "--new-caller-token"),
    )
    assert canary.returncode == 0, canary.stderr
    assert "canary: 50 % of calls to it, the rest to version 1" in canary.stdout
    assert re.search(r"caller token \(shown once; it may call mlp only\): \S{20,}", canary.stdout)
    promoted = _anypu(cluster, "promote", "mlp")
    assert promoted.returncode == 0 and "version 2" in promoted.stdout, promoted.stderr
    scaled = _anypu(cluster, "scale", "mlp", "0")
    assert scaled.returncode == 0 and "0/0 replica(s) ready" in scaled.stdout
    gone = _anypu(cluster, "undeploy", "mlp")
    assert gone.returncode == 0 and "deleted deployment mlp" in gone.stdout
    missing = _anypu(cluster, "scale", "mlp", "1")
    assert missing.returncode == 2 and "no deployment 'mlp'" in missing.stderr
    bad = _anypu(cluster, "deploy", "x", "--model", "nowhere", "--example", "4x256")
    assert bad.returncode == 2 and "MODULE:FACTORY" in bad.stderr


def test_an_idle_deployment_sleeps_at_zero_and_a_call_wakes_it(tmp_path):
    flags = {"heartbeat-interval": 0.5, "http-port": 0, "scale-to-zero-after": 2.0}
    cluster = Cluster(tmp_path, **flags)
    try:
        cluster.add_agent("direct-1", "edge", direct=True)
        model, x = mlp(width=64, depth=2).eval(), torch.randn(4, 64)
        with cluster.connected_client(1) as client:
            info = client.deploy(
                model, "mlp", example_inputs=x, replicas=1, min_replicas=0, max_replicas=2
            )
            assert (info.min_replicas, info.max_replicas, len(info.ready)) == (0, 2, 1)
            service = client.service("mlp")
            torch.testing.assert_close(service(x), model(x))
            asleep = _until(client, "mlp", lambda d: d.replicas_wanted == 0)
            assert asleep.ready == () and "no call for" in asleep.events[-1]
            # The next call waits for a cold start instead of failing.
            torch.testing.assert_close(service(x), model(x))
            woken = _until(client, "mlp", lambda d: any("cold start" in e for e in d.events))
            assert any("a call woke it from zero" in e for e in woken.events)
            assert woken.cold_starts == 1 and 0 < woken.last_cold_start_s < 60

            # Asleep again, and woken by a client of the inference protocol this time.
            _until(client, "mlp", lambda d: d.replicas_wanted == 0)
            port = int(
                re.findall(r"dashboard on http://127\.0\.0\.1:(\d+)", cluster.log("scheduler"))[-1]
            )
            body = {
                "inputs": [{"name": "x", "shape": [4, 64], "datatype": "FP32", "data": x.tolist()}]
            }
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v2/models/mlp/infer",
                data=json.dumps(body).encode(),
                headers={
                    "Authorization": f"Bearer {cluster.token}",
                    "Content-Type": "application/json",
                },
            )
            with urllib.request.urlopen(request, timeout=120) as response:
                (output,) = json.loads(response.read())["outputs"]
            assert output["shape"] == [4, 64]
            torch.testing.assert_close(torch.tensor(output["data"]).reshape(4, 64), model(x))
    finally:
        cluster.close()


def _until(client, name: str, condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        (info,) = [d for d in client.deployments() if d.name == name]
        if condition(info):
            return info
        assert time.monotonic() < deadline, f"{name}: {info}"
        time.sleep(0.1)


class _Caller:
    """Calls ``service(x)`` in a loop on threads of its own, keeping every answer and
    every error."""

    def __init__(self, service, x: torch.Tensor, threads: int = 2) -> None:
        self.service, self.x = service, x
        self.answers: list[torch.Tensor] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(self.service(self.x))
            except BaseException as error:  # noqa: BLE001 - every failure is the finding
                self.errors.append(error)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_a_rolling_update_under_load_fails_no_call(cluster):
    x = torch.randn(4, 64)
    old, new = mlp(width=64, depth=2).eval(), mlp(width=64, depth=2).eval()
    with torch.no_grad():
        for parameter in new.parameters():
            parameter.add_(0.5)  # another version: other weights, the same signature
    with cluster.connected_client(2) as client:
        client.deploy(old, "mlp", example_inputs=x, replicas=2)
        caller = _Caller(client.service("mlp"), x)
        time.sleep(1.0)
        info = client.deploy(new, "mlp", example_inputs=x, replicas=2, wait_s=None)
        assert info.version == 2
        _until(client, "mlp", lambda d: [r.version for r in d.ready] == [2, 2], timeout=60)
        time.sleep(1.0)
        caller.stop()
        assert caller.errors == []
        assert any(torch.allclose(a, old(x)) for a in caller.answers)
        torch.testing.assert_close(caller.answers[-1], new(x))
        torch.testing.assert_close(client.service("mlp")(x), new(x))


def test_a_node_killed_under_load_loses_no_call(cluster):
    model, x = mlp(width=64, depth=2).eval(), torch.randn(4, 64)
    with cluster.connected_client(2) as client:
        info = client.deploy(model, "mlp", example_inputs=x, replicas=2)
        assert {r.node_id for r in info.ready} == {"direct-1", "direct-2"}
        caller = _Caller(client.service("mlp"), x)
        time.sleep(1.0)
        cluster.kill("direct-1")  # SIGKILL: calls in flight there break
        _until(client, "mlp", lambda d: {r.node_id for r in d.ready} == {"direct-2"}, timeout=30)
        _until(client, "mlp", lambda d: len(d.ready) == 2, timeout=30)
        time.sleep(1.0)
        caller.stop()
        assert caller.errors == []  # each broken call was sent again to the other replica
        assert len(caller.answers) > 20
        assert all(torch.allclose(a, model(x)) for a in caller.answers)


def test_a_canary_takes_its_share_and_a_rollback_under_load_fails_no_call(cluster):
    x = torch.randn(4, 64)
    stable, canary = mlp(width=64, depth=2).eval(), mlp(width=64, depth=2).eval()
    with torch.no_grad():
        for parameter in canary.parameters():
            parameter.add_(0.5)
        want_stable, want_canary = stable(x), canary(x)
    with cluster.connected_client(2) as client:
        client.deploy(stable, "mlp", example_inputs=x, replicas=2)
        info = client.deploy(canary, "mlp", example_inputs=x, replicas=2, canary_percent=50)
        assert (info.version, info.stable_version, info.canary_percent) == (2, 1, 50)
        _until(client, "mlp", lambda d: sorted(r.version for r in d.ready) == [1, 2], 60)
        caller = _Caller(client.service("mlp"), x)
        time.sleep(4.0)  # the SDK's Service sees the canary within its refresh (2 s)
        seen = len(caller.answers)
        from_canary = sum(torch.allclose(a, want_canary) for a in caller.answers[:seen])
        from_stable = sum(torch.allclose(a, want_stable) for a in caller.answers[:seen])
        assert from_canary + from_stable == seen and seen > 40
        assert 0.15 < from_canary / seen < 0.85, (from_canary, from_stable)
        back = client.rollback("mlp")
        assert back.version == 1 and back.canary_percent == 0
        _until(client, "mlp", lambda d: [r.version for r in d.ready] == [1, 1], timeout=60)
        time.sleep(3.0)
        caller.stop()
        assert caller.errors == []
        assert all(torch.allclose(a, want_stable) for a in caller.answers[-10:])
        with pytest.raises(AnypuError, match="runs no canary"):
            client.promote("mlp")
