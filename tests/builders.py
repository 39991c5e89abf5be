"""Builders the tests share: results, runs and devices in one line each."""

from __future__ import annotations

from anypu.devices import Device
from anypu.protos import messages as m

__all__ = ["GIB", "cpu_device", "done", "failed", "gpu_device", "ran"]

GIB = 1 << 30


def ran(load_seconds: float = 0.0, run_seconds: float = 0.0) -> m.Outcome:
    """The outcome of a run that went well, with its timings."""
    return m.Outcome(load_seconds=load_seconds, run_seconds=run_seconds)


def failed(
    code: m.FailureCode = m.FailureCode.MODEL_RAISED,
    message: str = "bad",
    error_type: str = "",
    traceback: str = "",
) -> m.Outcome:
    """A failed outcome; ``error_type`` defaults to ``ValueError`` for the model's own."""
    if not error_type and code is m.FailureCode.MODEL_RAISED:
        error_type = "ValueError"
    return m.Outcome.failed(code, message, error_type=error_type, traceback=traceback)


def done(job_id: str, attempt: int = 1, outputs: bytes = b"out", **timings: float) -> m.JobResult:
    """A job's successful result."""
    return m.JobResult(job_id, attempt, ran(**timings), outputs)


def cpu_device(device_id: str = "cpu0", memory: int = 2 * GIB, slices: int = 1) -> Device:
    return Device(device_id, "cpu", "test", "cpu", memory, 0.05, "cpu", slices=slices)


def gpu_device(device_id: str = "gpu0", memory: int = 40 * GIB, slices: int = 1) -> Device:
    return Device(device_id, "gpu", "nvidia", "A100", memory, 156.0, "cpu", True, slices)
