"""Heartbeats carry what the probes measure, not bookkeeping: a real agent process on
this machine's CPU reports the CPU's utilisation and memory in use, and a running job's
own memory (its worker's resident set above what the idle worker holds), which the
scheduler lists and exports; a job going over its slice's memory is stopped and its
caller told, while the job on the other slice finishes. Each heartbeat's echo gives the
round trip on the agent's stream."""

from __future__ import annotations

import time
import urllib.request

import torch

from anypu.protos.messages import FailureCode
from anypu.sdk.models import mlp
from tests.cluster import Cluster, submit_estimated


class Hog(torch.nn.Module):
    """Holds ``copies`` MiB (its input is 1 MiB) for ``steps`` passes of tanh."""

    def __init__(self, copies: int, steps: int) -> None:
        super().__init__()
        self.copies, self.steps = copies, steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.repeat(self.copies, 1)
        for _ in range(self.steps):
            y = torch.tanh(y)
        return y[:1]


ONE_MIB = (256, 1024)  # float32


def test_a_running_job_s_memory_and_the_cpu_s_readings_reach_the_scheduler(tmp_path):
    cluster = Cluster(tmp_path, **{"http-port": 0})
    try:
        cluster.add_agent("cpu-1", "edge")
        with cluster.connected_client(1) as client:
            model, x = Hog(copies=96, steps=3000), torch.randn(*ONE_MIB)  # 96 MiB for seconds
            handle = client.submit(model, x)
            series = (
                f'anypu_job_memory_used_bytes{{device="cpu0",job="{handle.job_id}",node="cpu-1"}}'
            )
            deadline = time.monotonic() + 60
            seen, metrics = None, ""
            while time.monotonic() < deadline and (
                seen is None or seen.memory_used_bytes < 90 << 20 or series not in metrics
            ):
                (node,) = client.transport.list_nodes()
                seen = next((j for j in node.job_usage if j.job_id == handle.job_id), None)
                metrics = _metrics(cluster)
                time.sleep(0.2)
            assert seen is not None, "the running job's memory never reached the scheduler"
            assert series in metrics
            assert seen.device_id == "cpu0" and 90 << 20 < seen.memory_used_bytes < 400 << 20
            (usage,) = node.usage
            assert usage.measured and 0.0 <= usage.utilisation <= 1.0
            assert usage.memory_used_bytes > 0
            assert 'anypu_device_utilisation{device="cpu0",measured="true",node="cpu-1"}' in metrics
            handle.cancel()
            # Each heartbeat is echoed, and the agent reports what the round trip took.
            while time.monotonic() < deadline and node.rtt_age_s < 0:
                (node,) = client.transport.list_nodes()
                time.sleep(0.2)
            assert 0 < node.rtt_p50_s <= node.rtt_p95_s < 1.0, node  # loopback
            assert 'anypu_node_rtt_seconds{node="cpu-1",quantile="0.5",tier="edge"}' in _metrics(
                cluster
            )
    finally:
        cluster.close()


def _metrics(cluster: Cluster) -> str:
    url = _dashboard_url(cluster)
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return response.read().decode()


def _dashboard_url(cluster: Cluster) -> str:
    for line in cluster.log("scheduler").splitlines():
        if line.startswith("dashboard on "):
            return line.split()[2]
    raise AssertionError("the scheduler printed no dashboard address")


SMALL_GPU = """devices:
  - {kind: gpu, vendor: nvidia, model: T4, memory: 1GiB, tflops: 8, slices: 2}
include_host: false
"""


def test_a_job_over_its_share_is_stopped_and_its_neighbour_finishes(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.add_agent("mem-1", "edge", SMALL_GPU)
        with cluster.connected_client(1) as client:
            # An estimate that was wrong (64 MiB) is what the watchdog exists for: the
            # hog is placed on a 512 MiB slice and then holds 1-2 GiB.
            model, x = Hog(copies=1024, steps=60), torch.randn(*ONE_MIB)
            hog = submit_estimated(client, model, x, 64 << 20)
            neighbour, y = mlp(width=32, depth=2), torch.randn(2, 32)
            small = client.submit(neighbour, y)
            torch.testing.assert_close(small.result(timeout=120), neighbour(y))
            info, _, timed_out = client.transport.wait(hog, 120)
            assert not timed_out and info.state == "failed"  # not retried: its own doing
            # Host memory is capped in the worker (RLIMIT_DATA: the allocation is refused at
            # once); the agent's watchdog is the guard behind it, and the only one for an
            # accelerator's memory (tests/unit/test_memory_watchdog.py).
            assert info.outcome.code is FailureCode.OUT_OF_MEMORY
            assert "ran out of memory on gpu0 slice 0" in info.outcome.message
            assert "its reservation is 512 MiB" in info.outcome.message
            assert small.info().placement.slice_index != info.placement.slice_index
    finally:
        cluster.close()
