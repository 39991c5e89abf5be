"""A shared device, live: jobs reserve the memory their model needs and run on it side by
side, each in its own worker process (seat), while their reservations fit; the next one
waits for a reservation to end; a job over its reservation is stopped while its
neighbours finish. Real scheduler and agent processes; the GPU is simulated (it runs on
this machine's CPU), so its memory is host memory, capped in the worker (RLIMIT_DATA)."""

from __future__ import annotations

import subprocess
import sys
import time

import torch

from anypu.protos.messages import FailureCode
from anypu.sdk.models import mlp
from tests.cluster import Cluster, submit_estimated
from tests.integration.test_readings import ONE_MIB, Hog

MIB = 1 << 20
SHARED_GPU = """devices:
  - {kind: gpu, vendor: nvidia, model: A10, memory: 1GiB, tflops: 31, seats: 3}
include_host: false
"""


def test_jobs_share_a_device_at_once_and_the_next_waits_for_room(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.add_agent("gpu-1", "edge", SHARED_GPU)
        with cluster.connected_client(1) as client:
            slow, x = Hog(copies=8, steps=400), torch.randn(*ONE_MIB)
            # 250 MiB each (314 MiB with the allocator's slack) of 1 GiB: three fit, one
            # per seat; a fourth does not yet.
            jobs = [submit_estimated(client, slow, x, 250 * MIB) for _ in range(3)]
            last = submit_estimated(client, slow, x, 250 * MIB)
            deadline, full, most_running = time.monotonic() + 90, None, 0
            while time.monotonic() < deadline and (full is None or most_running < 2):
                (node,) = client.transport.list_nodes()
                if len([r for r in node.reservations if r.device_id == "gpu0"]) == 3:
                    full = full or node
                    if client.transport.job(last).state != "pending":
                        raise AssertionError("a fourth job was placed beside three")
                states = [client.transport.job(j).state for j in jobs]
                most_running = max(most_running, states.count("running"))
                if all(state == "succeeded" for state in states):
                    break
                time.sleep(0.1)
            assert full is not None, "three jobs never held the device at once"
            assert {r.slice_index for r in full.reservations} == {0, 1, 2}
            assert {r.job_id for r in full.reservations} == set(jobs)
            assert all((r.memory_bytes, r.milli) == (314 * MIB, 307) for r in full.reservations)
            assert most_running >= 2, "the jobs never ran side by side"
            assert "gpu nvidia A10 1.0 GiB 31 TFLOPS shared (3 seats)" in _status(cluster)
            for job_id in [*jobs, last]:
                info, _, timed_out = client.transport.wait(job_id, 120)
                assert not timed_out and info.state == "succeeded", info.outcome.message
            # The fourth ran once a reservation ended, on the seat that freed.
            assert client.transport.job(last).placement.milli == 307
    finally:
        cluster.close()


def test_a_job_over_its_reservation_is_stopped_and_its_neighbour_finishes(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.add_agent("gpu-1", "edge", SHARED_GPU)
        with cluster.connected_client(1) as client:
            # An estimate that was wrong (64 MiB, 128 MiB with the slack) is what the cap is
            # for: the hog then holds over 1 GiB.
            hog = submit_estimated(
                client, Hog(copies=1100, steps=60), torch.randn(*ONE_MIB), 64 * MIB
            )
            neighbour, y = mlp(width=32, depth=2), torch.randn(2, 32)
            small = client.submit(neighbour, y)
            torch.testing.assert_close(small.result(timeout=120), neighbour(y))
            info, _, timed_out = client.transport.wait(hog, 120)
            # The estimate was ours: it is placed again once, reserving half as much again
            # as it was found needing (128 MiB: 192 MiB + the slack); past that it is the
            # job's own doing, and not retried.
            assert not timed_out and info.state == "failed" and info.attempt == 2
            assert info.outcome.code is FailureCode.OUT_OF_MEMORY
            assert "its reservation is 256 MiB" in info.outcome.message
            assert info.placement.memory_bytes == 256 * MIB
            assert "placed again reserving 192 MiB" in cluster.log("scheduler")
            assert small.info().placement.slice_index != info.placement.slice_index
    finally:
        cluster.close()


def _status(cluster: Cluster) -> str:
    command = [sys.executable, "-m", "anypu", "status", "--scheduler", cluster.address]
    command += ["--token", cluster.token]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout
