"""Heartbeats carry what the probes measure, not bookkeeping: a real agent process on
this machine's CPU reports the CPU's utilisation and memory in use, and a running job's
own memory (its worker process's resident set), which the scheduler lists and exports."""

from __future__ import annotations

import time
import urllib.request

import torch

from tests.cluster import Cluster
from tests.integration.test_network_run import Slow


def test_a_running_job_s_memory_and_the_cpu_s_readings_reach_the_scheduler(tmp_path):
    cluster = Cluster(tmp_path, **{"http-port": 0})
    try:
        cluster.add_agent("cpu-1", "edge")
        with cluster.connected_client(1) as client:
            model, x = Slow(steps=4000), torch.randn(256, 512)  # many seconds of work
            handle = client.submit(model, x)
            series = (
                f'anypu_job_memory_used_bytes{{device="cpu0",job="{handle.job_id}",node="cpu-1"}}'
            )
            deadline = time.monotonic() + 60
            seen, metrics = None, ""
            while time.monotonic() < deadline and (seen is None or series not in metrics):
                (node,) = client.transport.list_nodes()
                seen = next((j for j in node.job_usage if j.job_id == handle.job_id), None)
                metrics = _metrics(cluster)
                time.sleep(0.2)
            assert seen is not None, "the running job's memory never reached the scheduler"
            assert series in metrics
            assert seen.device_id == "cpu0" and seen.memory_used_bytes > 50 << 20  # torch alone
            (usage,) = node.usage
            assert usage.measured and 0.0 <= usage.utilisation <= 1.0
            assert usage.memory_used_bytes > 0
            assert 'anypu_device_utilisation{device="cpu0",measured="true",node="cpu-1"}' in metrics
            handle.cancel()
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
