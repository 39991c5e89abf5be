"""sdk.run with nothing configured: an embedded scheduler and a local agent in-process."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from anypu import sdk
from anypu.errors import ExportError, InputError
from anypu.sdk.models import mlp, small_cnn


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(8, 3)
        self.b = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": self.a(x) * scale, "b": (self.b(x), x.sum(dim=1))}


class DataDependent(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on a value: torch.export cannot keep it
            return x[: int(x.sum().item()) % 3 + 1]
        return x


@pytest.fixture(autouse=True, scope="module")
def embedded(monkeypatch_module):
    monkeypatch_module.delenv("ANYPU_ADDRESS", raising=False)
    sdk.disconnect()
    yield
    sdk.disconnect()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_run_with_nothing_started_returns_the_models_outputs():
    model = small_cnn()
    (x,) = model.example_inputs(batch=2)
    torch.testing.assert_close(sdk.run(model, x), model(x))
    (node,) = sdk.nodes()
    assert node.state == "ready" and node.devices[0].kind == "cpu"


def test_outputs_keep_the_models_structure():
    model = TwoHeads()
    x, scale = torch.randn(4, 8), torch.tensor(2.0)
    out = sdk.run(model, (x, scale))
    expected = model(x, scale)
    assert set(out) == {"a", "b"} and isinstance(out["b"], tuple)
    torch.testing.assert_close(out, expected)


def test_future_form():
    model = mlp(width=32, depth=2)
    x = torch.randn(4, 32)
    assert torch.allclose(sdk.submit(model, x).result(timeout=60), model(x), atol=1e-6)


@pytest.mark.parametrize(
    "inputs, message",
    [
        ([1.0, 2.0], "torch.Tensor"),
        ((torch.randn(2, 32), "x"), "inputs[1]"),
        (None, "torch.Tensor"),
    ],
)
def test_inputs_that_are_not_tensors_are_refused(inputs, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        sdk.run(mlp(width=32, depth=2), inputs)


def test_inputs_that_do_not_fit_the_model_say_so():
    with pytest.raises((InputError, ExportError)) as caught:
        sdk.run(mlp(width=32, depth=2), torch.randn(4, 7))
    text = str(caught.value)
    assert "7" in text and "32" in text


def test_a_model_with_control_flow_on_values_runs_and_is_measured():
    # Export keeps it (TorchScript); the estimate, which fake tensors cannot follow, is
    # one measured run instead of a refusal.
    x = torch.ones(4, 2)
    torch.testing.assert_close(sdk.run(DataDependent(), x), DataDependent()(x))


def test_not_a_module():
    with pytest.raises(InputError, match="torch.nn.Module"):
        sdk.run(lambda x: x, torch.ones(1))


def test_an_unknown_option_is_named():
    with pytest.raises(InputError, match="devcie"):
        sdk.run(mlp(width=32, depth=2), torch.randn(2, 32), devcie="cuda")


def test_run_executes_on_the_calling_thread_and_submit_on_the_slice_thread(monkeypatch):
    from anypu.agents import _workers

    threads: list[int] = []
    execute = _workers.ThreadSliceWorker._execute

    def recording(self, job):
        threads.append(threading.get_ident())
        return execute(self, job)

    monkeypatch.setattr(_workers.ThreadSliceWorker, "_execute", recording)
    model = mlp()
    x = torch.randn(4, 256)
    sdk.run(model, x)  # the first run fetches the artifact in a thread of the agent's
    threads.clear()
    torch.testing.assert_close(sdk.run(model, x), model(x))
    torch.testing.assert_close(sdk.submit(model, x).result(timeout=60), model(x))
    assert threads[0] == threading.get_ident()
    assert threads[1] != threading.get_ident()


def test_runs_from_many_threads_each_get_their_own_outputs():
    """Callers that find the slice busy queue behind the one running inline."""
    model = mlp()
    inputs = [torch.randn(4, 256) for _ in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = list(pool.map(lambda x: sdk.run(model, x), inputs))
    for x, y in zip(inputs, outputs, strict=True):
        torch.testing.assert_close(y, model(x))
