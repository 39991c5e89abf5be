"""A slice's worker process enforces its memory reservation and survives the failure."""

from __future__ import annotations

import dataclasses
import queue

import torch

from anypu import _codec
from anypu.agents._workers import SliceJob, SliceWorker
from anypu.devices import Device
from anypu.protos import messages as m
from anypu.sdk._export import export_model


class Balloon(torch.nn.Module):
    """Tiny weights, about 1 GiB of activations: more than the slice may hold."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(-1) * torch.ones(65536)).sum(-1)


class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


def _job(tmp_path, name: str, model: torch.nn.Module, x: torch.Tensor) -> SliceJob:
    artifact = export_model(model, (x,))
    path = tmp_path / name
    path.write_bytes(artifact.data)
    return SliceJob(name, 1, artifact.digest, str(path), _codec.encode((x,)), timeout_s=60)


def test_a_job_over_its_memory_reservation_fails_naming_it(tmp_path):
    device = Device("gpu0", "gpu", "nvidia", "T4", 256 << 20, 8.0, "cpu", simulated=True)
    answers: queue.SimpleQueue = queue.SimpleQueue()
    worker = SliceWorker(device, 0, answers.put)
    try:
        assert worker.wait_ready(60)
        worker.submit(_job(tmp_path, "balloon", Balloon(), torch.ones(64, 64)))
        failed = answers.get(timeout=60)
        assert not failed.ok and failed.outcome.code is m.FailureCode.OUT_OF_MEMORY
        assert failed.outcome.user_error
        assert "reservation is 256 MiB" in failed.outcome.message
        assert "gpu0 slice 0" in failed.outcome.message
        x = torch.arange(4.0)
        worker.submit(_job(tmp_path, "double", Double(), x))
        ok = answers.get(timeout=60)
        assert ok.ok
        torch.testing.assert_close(_codec.decode(ok.outputs), x * 2)
    finally:
        worker.close()


class Grind(torch.nn.Module):
    """A second or so of matrix products: still running when the kernel steps in."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(40):
            x = torch.tanh(x @ x)
        return x


def test_a_worker_killed_at_its_cgroup_cap_fails_its_job_as_memory_exceeded(tmp_path):
    import os
    import signal
    import time

    from anypu.agents._cgroups import WorkerCgroup

    cgroup_dir = tmp_path / "anypu-cpu0-0"  # as the agent's delegated hierarchy lays out
    cgroup_dir.mkdir()
    (cgroup_dir / "memory.events").write_text("oom 0\noom_kill 0\n")
    device = Device("cpu0", "cpu", "intel", "Xeon", 2 << 30, 1.0, "cpu", threads=2)
    answers: queue.SimpleQueue = queue.SimpleQueue()
    worker = SliceWorker(device, 0, answers.put, cgroup=WorkerCgroup(cgroup_dir))
    try:
        assert worker.wait_ready(60)
        assert (cgroup_dir / "cgroup.procs").read_text() == str(worker.pid)
        assert (cgroup_dir / "cpu.max").read_text() == "200000 100000"
        assert (cgroup_dir / "memory.max").read_text() == str(2 << 30)  # the slice's memory
        worker.submit(_job(tmp_path, "grind", Grind(), torch.rand(1024, 1024)))
        deadline = time.monotonic() + 30
        while worker.running is None and time.monotonic() < deadline:
            time.sleep(0.01)
        # The kernel's OOM killer, as the cgroup's files and the process see it.
        (cgroup_dir / "memory.events").write_text("oom 1\noom_kill 1\n")
        os.kill(worker.pid, signal.SIGKILL)
        failed = answers.get(timeout=60)
        assert failed.outcome.code is m.FailureCode.MEMORY_EXCEEDED
        assert "went over its 2.0 GiB share on cpu0 (slice 0)" in failed.outcome.message
        assert "cgroup's memory.max" in failed.outcome.message
        assert failed.outcome.memory_used_bytes == 2 << 30
        # Its successor joins the cgroup and serves the next job.
        assert worker.wait_ready(60)
        x = torch.arange(4.0)
        worker.submit(_job(tmp_path, "double", Double(), x))
        assert answers.get(timeout=60).ok
        assert (cgroup_dir / "cgroup.procs").read_text() == str(worker.pid)
    finally:
        worker.close()


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.decode().partition("=") for item in f.read().split(b"\0") if item]
    return {key: value for key, _, value in pairs}


def test_a_seat_of_an_mps_gpu_runs_each_job_at_its_compute_share(tmp_path):
    from anypu.devices import with_shares

    gpu = Device("gpu0", "gpu", "nvidia", "A100", 40 << 30, 19.5, "cuda:0")
    gpu = with_shares(dataclasses.replace(gpu, extra={"index": "0", "mps": "running"}), 2)
    answers: queue.SimpleQueue = queue.SimpleQueue()
    worker = SliceWorker(gpu, 0, answers.put)
    try:
        assert worker.wait_ready(60)
        first = worker.pid
        assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in _environ(first)
        pids = []
        for name, milli, percent in (("a", 250, "25"), ("b", 250, "25"), ("c", 501, "51")):
            job = dataclasses.replace(
                _job(tmp_path, name, Double(), torch.arange(4.0)), compute_milli=milli
            )
            worker.submit(job)
            answers.get(timeout=60)  # no CUDA here: it fails, but in the right process
            pids.append(worker.pid)
            assert _environ(worker.pid)["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == percent
        assert pids[0] != first and pids[1] == pids[0] and pids[2] != pids[1]
    finally:
        worker.close()
