"""A slice's worker process enforces its memory reservation and survives the failure."""

from __future__ import annotations

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
