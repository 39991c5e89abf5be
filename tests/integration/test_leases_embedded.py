"""Leases in the embedded mode: later calls of a model go straight to its leased slice."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from anypu._codec import decode, encode
from anypu.errors import JobFailedError
from anypu.protos import messages as m
from anypu.sdk import Client, InProcessTransport
from anypu.sdk._client import RunOptions
from anypu.sdk._embedded import Embedded
from anypu.sdk.models import mlp


class FailsOnNegative(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._check(x.shape[0] > 0)
        y = self.linear(x)
        # A data-dependent failure the exported graph keeps: an assertion on the values.
        torch._assert_async(x.min() >= 0, "inputs must not be negative")
        return y


@pytest.fixture
def embedded():
    local = Embedded()
    client = Client(InProcessTransport(local.service))
    yield local, client
    local.close()


def recorded(local: Embedded, count: int, timeout: float = 5.0) -> list:
    """The newest ``count`` jobs once the agent's batched reports have arrived."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = local.service.list_jobs(count)
        if len(jobs) >= count or time.monotonic() > deadline:
            return jobs
        time.sleep(0.02)


def test_later_calls_run_under_the_lease_and_are_recorded_as_jobs(embedded):
    local, client = embedded
    model, x = mlp(), torch.randn(8, 256)
    expected = model(x)
    for _ in range(5):
        torch.testing.assert_close(client.run(model, x), expected)
    jobs = recorded(local, 5)
    solvers = [j.placement.solver for j in sorted(jobs, key=lambda j: j.submitted_at)]
    assert solvers[0] != "lease" and solvers[1:] == ["lease"] * 4
    assert all(j.state == "succeeded" and j.name == "MLP" for j in jobs)
    assert len({j.job_id for j in jobs}) == 5
    assert local.service.inspect(lambda state, now: state.decisions["leased"]) == 4


def test_outputs_of_a_leased_call_are_ordinary_tensors_of_their_own(embedded):
    _, client = embedded
    model, x = torch.nn.Identity(), torch.randn(3, 4)
    client.run(model, x)
    y = client.run(model, x)  # leased
    y.add_(1)  # an inference tensor would refuse this
    torch.testing.assert_close(y, x + 1)  # and x itself is untouched


def test_a_model_raising_under_a_lease_reports_its_error_and_the_lease_keeps_serving(embedded):
    local, client = embedded
    model = FailsOnNegative()
    good, bad = torch.ones(2, 4), -torch.ones(2, 4)
    client.run(model, good)
    with pytest.raises(JobFailedError, match="inputs must not be negative"):
        client.run(model, bad)
    torch.testing.assert_close(client.run(model, good), model(good))
    jobs = sorted(recorded(local, 3), key=lambda j: j.submitted_at)
    assert [j.state for j in jobs] == ["succeeded", "failed", "succeeded"]
    assert jobs[1].placement.solver == jobs[2].placement.solver == "lease"
    assert jobs[1].outcome.user_error and "negative" in jobs[1].outcome.message


def test_a_submitted_job_revokes_the_lease_and_the_next_call_is_placed_afresh(embedded):
    local, client = embedded
    model, x = mlp(), torch.randn(4, 256)
    client.run(model, x)
    client.run(model, x)  # leased
    client.submit(model, x).result(timeout=30)  # waits for placement: the lease goes
    assert not local.service.inspect(lambda state, now: dict(state.leases.active))
    torch.testing.assert_close(client.run(model, x), model(x))  # placed, and leased again
    torch.testing.assert_close(client.run(model, x), model(x))
    solvers = [j.placement.solver for j in sorted(recorded(local, 5), key=lambda j: j.submitted_at)]
    assert solvers[1] == solvers[4] == "lease"
    assert solvers[2] != "lease" and solvers[3] != "lease"


def test_calls_with_a_timeout_are_always_placed(embedded):
    local, client = embedded
    model, x = mlp(), torch.randn(4, 256)
    for _ in range(3):
        client.run(model, x, RunOptions(timeout_s=30))
    assert all(j.placement.solver != "lease" for j in recorded(local, 3))


def test_concurrent_calls_share_one_lease_or_are_placed_and_all_answer_right(embedded):
    local, client = embedded
    model = mlp()
    inputs = [torch.randn(4, 256) for _ in range(32)]
    client.run(model, inputs[0])
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda x: client.run(model, x), inputs))
    for x, y in zip(inputs, outputs, strict=True):
        torch.testing.assert_close(y, model(x))
    jobs = recorded(local, 33)
    assert len(jobs) == 33 and all(j.state == "succeeded" for j in jobs)


def test_a_call_that_beats_its_grant_to_the_agent_waits_for_it_and_an_ended_lease_does_not(
    embedded,
):
    # The client hears of a lease on its own connection; the agent on the scheduler's
    # stream. A call arriving first waits for the grant instead of falling back.
    local, client = embedded
    model, x = mlp(), torch.randn(8, 256)
    client.run(model, x)
    client.run(model, x)
    known = next(iter(local.agent.state.leases.values()))
    early = dataclasses.replace(known, lease_id="lease-" + "ab" * 16)
    inputs = encode((x,), "inputs")
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(local.agent.run_leased, early.lease_id, inputs)
        time.sleep(0.2)
        assert not answer.done()
        local.agent.handle(m.LeaseGranted(early))
        result = answer.result(timeout=10)
    assert result is not None and result.ok
    torch.testing.assert_close(decode(result.outputs), model(x))
    local.agent.handle(m.LeaseRevoked(early.lease_id, "test"))
    assert local.agent.state.lease_settled(early.lease_id)  # ended: a call need not wait
    assert local.agent.run_leased(early.lease_id, inputs) is None  # placed anew
