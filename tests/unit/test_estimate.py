"""Profiles estimated without real compute: exact FLOPs, plausible memory, model untouched."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from anypu.errors import InputError
from anypu.sdk._estimate import estimate_profile
from anypu.sdk.models import mlp, small_cnn, transformer_block


def test_linear_flops_and_bytes_are_exact() -> None:
    profile = estimate_profile(torch.nn.Linear(256, 256), (torch.randn(32, 256),))
    assert profile.flops == 2 * 32 * 256 * 256
    assert profile.param_bytes == (256 * 256 + 256) * 4
    assert profile.input_bytes == profile.output_bytes == 32 * 256 * 4
    assert profile.memory_bytes == profile.param_bytes + profile.input_bytes + 32 * 256 * 4


def test_peak_activation_is_the_max_live_set_not_the_sum_of_outputs() -> None:
    model = torch.nn.Sequential(
        torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256), torch.nn.ReLU()
    )
    profile = estimate_profile(model, (torch.randn(32, 256),))
    # Peak is at the first ReLU: its input (32x512) and output (32x512) are both alive;
    # the sum of all op outputs would be 2 * 64 KiB + 2 * 32 KiB.
    assert profile.activation_bytes == 2 * 32 * 512 * 4


def test_inplace_and_view_ops_add_no_activation_memory() -> None:
    class InPlace(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x * 2
            y.relu_()
            return y.view(-1).t()

    profile = estimate_profile(InPlace(), (torch.randn(64, 64),))
    assert profile.activation_bytes == 64 * 64 * 4


def test_transformer_layer_flops_match_the_hand_count() -> None:
    model = transformer_block(d_model=64, nhead=4)
    (x,) = model.example_inputs(batch=4, tokens=16)
    profile = estimate_profile(model, (x,))
    tokens, d, ff, seq, heads = 4 * 16, 64, 256, 16, 4
    projections = 2 * tokens * d * (3 * d) + 2 * tokens * d * d
    attention = 2 * (2 * 4 * heads * seq * seq * (d // heads))
    feed_forward = 2 * tokens * d * ff * 2
    assert profile.flops == projections + attention + feed_forward
    assert torch.backends.mha.get_fastpath_enabled()


@pytest.mark.parametrize("build", [mlp, small_cnn, transformer_block], ids=lambda f: f.__name__)
def test_fake_estimate_equals_counting_a_real_run(build: Callable[[], torch.nn.Module]) -> None:
    model = build()
    inputs = model.example_inputs()  # type: ignore[operator]
    counter = FlopCounterMode(display=False)
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), counter:
            outputs = model(*inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    profile = estimate_profile(model, inputs)
    if build is not transformer_block:  # the stock counter misses CPU flash attention
        assert profile.flops == counter.get_total_flops()
    assert profile.flops >= counter.get_total_flops() > 0
    assert profile.output_bytes == outputs.numel() * outputs.element_size()
    assert profile.memory_bytes >= profile.param_bytes + profile.input_bytes + profile.output_bytes


def test_estimate_does_not_touch_the_model_even_in_training_mode() -> None:
    model = small_cnn().train()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    params_before = {name: p for name, p in model.named_parameters()}
    profile = estimate_profile(model, model.example_inputs())
    assert profile.buffer_bytes > 0
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    for name, param in model.named_parameters():
        assert param is params_before[name] and type(param) is torch.nn.Parameter
        assert param.requires_grad
    assert model.training


def test_tied_weights_are_counted_once() -> None:
    embed = torch.nn.Embedding(100, 16)
    head = torch.nn.Linear(16, 100, bias=False)
    head.weight = embed.weight
    model = torch.nn.Sequential(embed, head)
    profile = estimate_profile(model, (torch.zeros(2, 5, dtype=torch.long),))
    assert profile.param_bytes == 100 * 16 * 4
    assert profile.flops == 2 * 10 * 16 * 100


class ValueDependent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) if x.sum() > 0 else x


def test_control_flow_and_torchscript_are_measured_not_refused(
    capfd: pytest.CaptureFixture[str],
) -> None:
    x = torch.ones(8, 64)
    model = ValueDependent().eval()
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(model, (x,))
    capfd.readouterr()
    for candidate in (model, torch.jit.script(model), traced):
        profile = estimate_profile(candidate, (x,))
        assert profile.flops == 2 * 8 * 64 * 64  # the branch that ran, measured
        assert profile.param_bytes == (64 * 64 + 64) * 4
        assert profile.output_bytes == 8 * 64 * 4
    assert capfd.readouterr().err == ""  # no fake-tensor traceback reaches stderr


def test_a_model_that_raises_on_its_inputs_is_the_users_error() -> None:
    with pytest.raises(InputError, match=r"Linear raised RuntimeError on its inputs \(\(4, 9\)"):
        estimate_profile(torch.nn.Linear(8, 8), (torch.ones(4, 9),))


def test_bad_arguments_are_explained() -> None:
    with pytest.raises(InputError, match=r"pass \(x,\)"):
        estimate_profile(torch.nn.Linear(2, 2), 3)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"inputs\[0\]"):
        estimate_profile(torch.nn.Linear(2, 2), ([0.5, 1.0],))
