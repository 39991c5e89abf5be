"""Export and estimation run under the call's deadline and are stopped when it passes."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from anypu.errors import JobTimeoutError
from anypu.sdk import Embedded, InProcessTransport, RunOptions
from anypu.sdk._client import Client
from anypu.sdk._deadline import within


def test_work_within_its_time_returns_its_value_or_raises_its_error():
    assert within(5, "adding", lambda phase: 1 + 1, "timeout_s") == 2
    with pytest.raises(KeyError, match="k"):
        within(5, "looking up", lambda phase: {}["k"], "timeout_s")


def test_a_python_loop_is_stopped_at_the_deadline_and_the_phase_named():
    def spin(phase):
        phase.now = "spinning"
        while True:
            pass

    before = threading.active_count()
    started = time.monotonic()
    with pytest.raises(JobTimeoutError, match=r"spinning within 0\.3 s and was stopped.*raise t"):
        within(0.3, "turning", spin, "timeout_s")
    assert time.monotonic() - started < 2.0
    deadline = time.monotonic() + 2
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before  # the helper ended


class Forever(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while True:
            x = x + 1


def test_a_forward_that_never_ends_times_out_in_export_and_the_client_goes_on():
    embedded = Embedded()
    try:
        client = Client(InProcessTransport(embedded.service))
        started = time.monotonic()
        with pytest.raises(
            JobTimeoutError, match=r"preparing Forever did not finish exporting it with torch"
        ):
            client.run(Forever().eval(), torch.ones(2), RunOptions(timeout_s=1.0))
        assert time.monotonic() - started < 10.0
        model = torch.nn.Linear(2, 2).eval()
        x = torch.ones(1, 2)
        torch.testing.assert_close(client.run(model, x, RunOptions(timeout_s=30)), model(x))
    finally:
        embedded.close()
