"""The agent's memory watchdog: a job over its slice's share is stopped and its caller
told, in the words the SDK raises (``MemoryExceededError``); within the share, nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from anypu.agents._agent import Agent
from anypu.errors import MemoryExceededError
from anypu.protos import messages as m
from anypu.sdk._client import Client
from tests.builders import gpu_device

GIB = 1 << 30


class _Slice:
    """A worker as the watchdog sees it: its device, and the one way to stop its job."""

    def __init__(self) -> None:
        self.device = gpu_device("gpu0", memory=8 * GIB, slices=2)  # 4 GiB shares
        self.slice_index = 1
        self.stopped: list[tuple[str, int, str]] = []

    def stop_over_memory(self, job_id: str, attempt: int, message: str) -> m.JobResult:
        self.stopped.append((job_id, attempt, message))
        outcome = m.Outcome.failed(m.FailureCode.MEMORY_EXCEEDED, message)
        return m.JobResult(job_id, attempt, outcome, device_id="gpu0")


def _agent() -> tuple[SimpleNamespace, list[m.JobResult]]:
    answers: list[m.JobResult] = []
    shell = SimpleNamespace(node_id="cloud-1", config=SimpleNamespace(name="cloud-1"))
    shell._on_answer = answers.append
    return shell, answers


def test_a_job_over_its_share_is_stopped_and_named() -> None:
    shell, answers = _agent()
    worker = _Slice()
    Agent._watch_memory(shell, worker, "job-1", 1, int(6.1 * GIB))  # type: ignore[arg-type]
    ((job_id, attempt, message),) = worker.stopped
    assert (job_id, attempt) == ("job-1", 1)
    assert "used 6.1 GiB of a 4.0 GiB share on cloud-1/gpu0" in message
    (answer,) = answers
    assert answer.outcome.code is m.FailureCode.MEMORY_EXCEEDED
    assert answer.outcome.code.user_error and not answer.outcome.code.retryable
    info = m.JobInfo("job-1", "failed", outcome=answer.outcome)
    with pytest.raises(MemoryExceededError, match=r"MemoryExceeded: used 6\.1 GiB of a 4\.0 GiB"):
        Client._outcome(Client, info, b"")  # type: ignore[arg-type]


def test_a_job_within_its_share_runs_on() -> None:
    shell, answers = _agent()
    worker = _Slice()
    Agent._watch_memory(shell, worker, "job-1", 1, 4 * GIB)  # type: ignore[arg-type]
    assert worker.stopped == [] and answers == []
