"""Builders the tests share: results, runs and devices in one line each."""

from __future__ import annotations

from typing import Any

from anypu import PROTOCOL_VERSION
from anypu.devices import Device
from anypu.protos import messages as m

__all__ = [
    "DIGEST",
    "GIB",
    "XEON",
    "cpu_device",
    "done",
    "failed",
    "gpu_device",
    "join",
    "messages_sent",
    "ran",
    "submit_request",
]

GIB = 1 << 30
DIGEST = "a" * 64
#: A CPU node's one device, as the scheduler-side tests have it.
XEON = Device("cpu0", "cpu", "intel", "Xeon", 8 << 30, 0.5, "cpu")


def join(
    name: str, tier: str = "edge", devices: tuple[Device, ...] = (XEON,), **fields: Any
) -> m.Join:
    """An agent's Join with no token (the state machines do not check it)."""
    return m.Join(PROTOCOL_VERSION, "", name, tier, devices=devices, **fields)


def submit_request(**changes: Any) -> m.SubmitRequest:
    """A small job: 1 MFLOP, 1 MiB, inputs inline."""
    fields: dict[str, Any] = {
        "artifact_digest": DIGEST,
        "inputs": b"x",
        "flops": 1e6,
        "memory_bytes": 1 << 20,
    }
    return m.SubmitRequest(**{**fields, **changes})


def messages_sent(actions: list[Any], kind: type) -> list[Any]:
    """The messages of ``kind`` among Send actions or instructions (either side's)."""
    return [a.message for a in actions if hasattr(a, "message") and isinstance(a.message, kind)]


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
