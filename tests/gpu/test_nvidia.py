"""The NVIDIA paths on a real GPU: detection and readings, two jobs sharing one GPU at
once, and the cap stopping a job over its reservation while its neighbour finishes.
Real scheduler and agent processes; the agent offers the machine's own devices."""

from __future__ import annotations

import shutil
import subprocess
import time

import torch

from anypu.devices import NvidiaProbe, collect_readings
from anypu.protos.messages import FailureCode
from anypu.sdk import RunOptions
from tests.cluster import Cluster, submit_estimated

GIB = 1 << 30
ON_GPU = RunOptions(device_kinds=("gpu",))


class Hold(torch.nn.Module):
    """Allocates ``mib`` MiB on its device and works on it for ``steps`` passes."""

    def __init__(self, mib: int, steps: int) -> None:
        super().__init__()
        self.mib, self.steps = mib, steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.repeat(self.mib, 1)  # x is 1 MiB of float32
        for _ in range(self.steps):
            y = torch.tanh(y)
        return y[:1]


def test_the_gpu_is_found_and_read():
    probe = NvidiaProbe()
    assert probe.available(), probe.unavailable_reason
    devices = probe.probe()
    assert devices and all(d.memory_bytes > 0 and d.tflops > 0 for d in devices)
    probe.found = devices
    readings = collect_readings([probe])
    assert set(readings) == {d.device_id for d in devices}
    assert all(r.memory_used_bytes is not None for r in readings.values())


def test_two_jobs_share_one_gpu_and_the_cap_stops_the_one_over_its_share(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.add_agent("gpu-1", "cloud")  # the machine's own GPU(s), shared (4 seats)
        with cluster.connected_client(1) as client:
            slow = Hold(mib=256, steps=20000)
            x = torch.randn(256, 1024)  # 1 MiB of float32
            a = submit_estimated(client, slow, x, GIB, ON_GPU)
            b = submit_estimated(client, slow, x, GIB, ON_GPU)
            deadline, together = time.monotonic() + 120, 0
            while time.monotonic() < deadline and together < 2:
                (node,) = client.transport.list_nodes()
                running = {j: client.transport.job(j).state for j in (a, b)}
                held = [r for r in node.reservations if r.device_id == "gpu0"]
                if list(running.values()) == ["running", "running"]:
                    together = len(held)
                time.sleep(0.1)
            assert together == 2, "the two jobs never ran on gpu0 at once"
            # The hog's estimate says 64 MiB; it takes 4 GiB: the allocator's cap or the
            # NVML watchdog stops it, and its neighbour on another seat finishes.
            hog = submit_estimated(client, Hold(mib=4096, steps=200), x, 64 << 20, ON_GPU)
            for job_id in (a, b):
                info, _, timed_out = client.transport.wait(job_id, 300)
                assert not timed_out and info.state == "succeeded", info.outcome.message
                assert not info.placement.simulated and info.placement.device_id == "gpu0"
            info, _, timed_out = client.transport.wait(hog, 120)
            assert not timed_out and info.state == "failed"
            # Its reservation (64 MiB estimate + the runtime's) is far below what the GPU
            # has free, so an out-of-memory here is the cap's, not the GPU running out.
            assert info.outcome.code in (FailureCode.OUT_OF_MEMORY, FailureCode.MEMORY_EXCEEDED)
            assert "its reservation is" in info.outcome.message or "share on" in (
                info.outcome.message
            )
            print(f"the hog was stopped: {info.outcome.code.value}: {info.outcome.message}")
    finally:
        cluster.close()


def test_mps_and_mig_as_the_machine_has_them():
    """Says what this GPU offers; fixed slices then carry MPS's thread percentage."""
    smi = shutil.which("nvidia-smi")
    assert smi, "nvidia-smi is not on PATH"
    mig = subprocess.run(
        [smi, "--query-gpu=mig.mode.current", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    mps = subprocess.run(["pgrep", "-f", "nvidia-cuda-mps-control"], capture_output=True).returncode
    print(f"MIG mode: {mig or 'unknown'}; MPS control daemon running: {mps == 0}")
    from anypu.devices import slice_environment, with_slices

    (gpu, *_) = NvidiaProbe().probe()
    env = slice_environment(with_slices(gpu, 2), 1)
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
